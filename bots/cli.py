"""The `tomo` command: run, chat, migrate, config, bench, sticker, persona."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

# Before anything can load llama.cpp: spinning OpenMP threads collapse on a busy box.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import typer
from pydantic import ValidationError

from bots.federation.cli import federation_app
from bots.logs import setup_logging
from bots.persona_cli import persona_app
from bots.settings import Settings, masked
from brain.errors import ConfigError, TomoError

T = TypeVar("T")

app = typer.Typer(
    name="tomo",
    help=(
        "tomo: a self-hosted companion with long-term memory. Configure it with TOMO_* "
        "environment variables or a tomo.toml file (see `tomo config`)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print figures (medians of repeated runs).")
app.add_typer(bench_app, name="bench")
sticker_app = typer.Typer(
    help="The avatar's sticker renders: a contact sheet of every face, or one sticker.",
    no_args_is_help=True,
)
app.add_typer(sticker_app, name="sticker")
app.add_typer(persona_app, name="persona")
app.add_typer(federation_app, name="federation")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TOMO_{'__'.join(str(p).upper() for p in err['loc'])}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"Bad configuration: {problems}") from None


def start(settings: Settings) -> None:
    """Logging (TOMO_LOG_*), and errors to Sentry when TOMO_SENTRY__DSN is set."""
    from bots.sentry import start_sentry

    setup_logging(settings.log_level, fmt=settings.log_format, content=settings.log_content)
    start_sentry(settings)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@app.command()
def chat(
    name: Annotated[
        str | None, typer.Option(help="Your name in the chat (default: your login name).")
    ] = None,
) -> None:
    """Chat with tomo in the terminal (the embedded defaults: local model, SQLite)."""
    from bots.runner import run_console

    settings = load_settings()
    start(settings)
    _run(run_console(settings, user_name=name or _login_name()))


@app.command()
def run() -> None:
    """Start every configured platform; the terminal chat when none is configured."""
    from bots.runner import run_console, run_platforms

    settings = load_settings()
    start(settings)
    if settings.configured_platforms():
        _run(run_platforms(settings))
    else:
        _run(run_console(settings, user_name=_login_name()))


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Messages handled at once (default TOMO_SCALE__CONCURRENCY)."),
    ] = None,
) -> None:
    """Answer the messages of `tomo gateway` processes (needs TOMO_REDIS_URL)."""
    from bots.worker import run_worker

    settings = load_settings()
    start(settings)
    _run(run_worker(settings, concurrency=concurrency))


@app.command()
def gateway() -> None:
    """Run the configured platforms with the brain in `tomo worker` processes (needs
    TOMO_REDIS_URL)."""
    from bots.gateway import run_gateway

    settings = load_settings()
    start(settings)
    _run(run_gateway(settings))


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (SQLite or Postgres)."""
    from bots.app import migrate as do_migrate
    from storage.db import safe_url

    settings = load_settings()
    setup_logging(settings.log_level, fmt=settings.log_format, content=settings.log_content)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    revision = _run(do_migrate(settings))
    typer.echo(f"database {safe_url(settings.effective_database_url)} is at revision {revision}")


@app.command()
def config() -> None:
    """Print the effective configuration (secrets masked) as JSON, and which model and
    LoRA adapters answer ("answering")."""
    from bots.app import build_model, build_model_router, describe_models

    settings = load_settings()
    shown = masked(settings)
    model = build_model(settings)
    shown["answering"] = describe_models(model, build_model_router(settings, model))
    typer.echo(json.dumps(shown, indent=2))


@app.command()
def doctor() -> None:
    """Check the configuration, model files, database, Redis, speech models, platform
    credentials (their shape; no platform is contacted) and ports; print what is wrong
    and how to fix it. Exit code 1 when anything is."""
    from bots.doctor import diagnose, render

    findings = diagnose()
    render(findings)
    if not all(f.ok for f in findings):
        raise typer.Exit(1)


@bench_app.command("pipeline")
def bench_pipeline(
    stub_llm: Annotated[
        bool, typer.Option("--stub-llm/--real-llm", help="Use an instant stub model.")
    ] = True,
    messages: Annotated[int, typer.Option(min=1, help="Messages per run.")] = 200,
    repeats: Annotated[int, typer.Option(min=1, help="Runs; the median is reported.")] = 5,
    workers: Annotated[
        str | None,
        typer.Option(
            help="Worker counts, e.g. 1,2,4: end to end through `tomo worker` processes on "
            "TOMO_REDIS_URL and TOMO_DATABASE_URL (Postgres), messages/s and latency."
        ),
    ] = None,
    chats: Annotated[int, typer.Option(min=1, help="With --workers: chats to spread over.")] = 50,
    in_flight: Annotated[
        int, typer.Option(min=1, help="With --workers: messages awaiting an answer at once.")
    ] = 16,
) -> None:
    """The brain's own overhead per message (SQLite in a temporary folder); with
    --workers, throughput and latency through Redis and worker processes."""
    if workers is None:
        from bots.bench import pipeline_overhead

        _run(pipeline_overhead(stub_llm=stub_llm, messages=messages, repeats=repeats))
        return
    from bots.bench_workers import workers_bench
    from bots.scale import require_redis

    try:
        counts = [int(w) for w in workers.split(",") if w.strip()]
    except ValueError:
        raise ConfigError(f"--workers takes counts like 1,2,4, not {workers!r}.") from None
    if not counts or min(counts) < 1:
        raise ConfigError("--workers takes counts of at least 1, like 1,2,4.")
    settings = load_settings()
    require_redis(settings.redis_url, "bench pipeline --workers")
    assert settings.redis_url is not None
    _run(
        workers_bench(
            redis_url=settings.redis_url.get_secret_value(),
            database_url=settings.effective_database_url,
            workers=counts,
            messages=messages,
            chats=chats,
            in_flight=in_flight,
        )
    )


@bench_app.command("model")
def bench_model(
    tokens: Annotated[int, typer.Option(min=8, help="Tokens to generate per run.")] = 128,
    repeats: Annotated[int, typer.Option(min=1, help="Runs of each; medians reported.")] = 5,
    threads: Annotated[int, typer.Option(min=1, help="llama.cpp threads.")] = 1,
) -> None:
    """Tokens/s of the bundled model through tomo versus llama-cpp-python directly."""
    from bots.bench import model_throughput

    _run(model_throughput(tokens=tokens, repeats=repeats, threads=threads))


@bench_app.command("locomo")
def bench_locomo(
    data: Annotated[Path, typer.Option(help="A LoCoMo JSON file (e.g. locomo_dev.json).")],
    out: Annotated[Path, typer.Option(help="Folder for retrievals.jsonl and summary.json.")],
    consolidate: Annotated[
        bool, typer.Option(help="Also run LLM consolidation at every session end.")
    ] = False,
    samples: Annotated[
        int | None, typer.Option(min=1, help="Only the first N conversations.")
    ] = None,
) -> None:
    """LoCoMo through the real memory pipeline; score with shared/bench/locomo_score.py."""
    from bots.bench_locomo import load_locomo, run_locomo, write_results

    conversations = load_locomo(data)[:samples]
    model = None
    if consolidate:
        from bots.app import build_model

        model = build_model(load_settings())
    rows, summary = _run(run_locomo(conversations, consolidate=consolidate, model=model))
    write_results(out, rows, summary)
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"wrote {out / 'retrievals.jsonl'}; score it with shared/bench/locomo_score.py")


@bench_app.command("recall")
def bench_recall(
    totals: Annotated[
        str, typer.Option(help="Comma-separated numbers of memories, e.g. 10000,100000.")
    ] = "10000,100000",
    database_url: Annotated[
        str | None,
        typer.Option(help="A Postgres URL to fill (emptied after); default a temporary SQLite."),
    ] = None,
    queries: Annotated[int, typer.Option(min=10, help="Queries per size.")] = 300,
) -> None:
    """Recall latency with 10k-1M memories in scopes of 1k-10k (synthetic, no model)."""
    from bots.bench_recall import recall_latency

    try:
        sizes = [int(t) for t in totals.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--totals wants numbers separated by commas, not {totals!r}") from None
    _run(recall_latency(url=database_url, totals=sizes, queries=queries))


@bench_app.command("speech")
def bench_speech(
    runs: Annotated[int, typer.Option(min=1, help="Runs of each; medians reported.")] = 5,
    stt_model: Annotated[
        Path | None,
        typer.Option(help="A CTranslate2 Whisper model folder; default the bundled tiny.en."),
    ] = None,
    tts_voice: Annotated[
        Path | None,
        typer.Option(help="A piper .onnx voice (.onnx.json beside it); default the bundled one."),
    ] = None,
) -> None:
    """Speech to text real-time factor, text to speech seconds for 20 words, codec times."""
    from bots.bench_speech import run_speech_bench

    run_speech_bench(runs=runs, stt_model=stt_model, tts_voice=tts_voice)


@bench_app.command("startup")
def bench_startup(
    repeats: Annotated[int, typer.Option(min=1, help="Runs; the median is reported.")] = 5,
) -> None:
    """Seconds from starting `tomo chat` to its first prompt."""
    from bots.bench import startup_time

    startup_time(repeats=repeats)


@bench_app.command("sticker")
def bench_sticker(
    repeats: Annotated[int, typer.Option(min=1, help="Cold renders of each emotion.")] = 5,
) -> None:
    """Sticker render times: cold per emotion (median, p95), warm, with a caption; sizes."""
    from bots.bench_sticker import sticker_bench

    _run(sticker_bench(repeats=repeats))


@bench_app.command("persona")
def bench_persona(
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps for SFT and for DPO.")] = 8,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for torch.")] = 2,
) -> None:
    """Persona LoRA costs: seconds a SFT and a DPO step, export and merge time, memory."""
    from bots.app import load_persona
    from bots.bench_persona import persona_bench
    from brain.persona.train import require_training_stack

    require_training_stack()
    settings = load_settings()
    persona_bench(card=load_persona(settings.persona), steps=steps, threads=threads)


@sticker_app.command("sheet")
def sticker_sheet(
    out: Annotated[Path, typer.Option(help="Where to write the PNG.")] = Path("sticker-sheet.png"),
    cell: Annotated[
        int, typer.Option(min=32, max=512, help="Pixels per sticker (chats preview at 128).")
    ] = 128,
) -> None:
    """A PNG of every emotion (rows) with every accessory (columns), to check the art."""
    from brain.avatar import AvatarRenderer
    from brain.avatar.sheet import contact_sheet

    data = _run(contact_sheet(AvatarRenderer(), cell=cell))
    out.write_bytes(data)
    typer.echo(f"wrote {out} ({len(data) / 1024:.0f} KB)")


@sticker_app.command("render")
def sticker_render(
    emotion: Annotated[str, typer.Argument(help="neutral, happy, excited, sad, angry, ...")],
    out: Annotated[Path, typer.Option(help="Where to write the WEBP.")] = Path("sticker.webp"),
    accessory: Annotated[
        list[str] | None,
        typer.Option(help="turtle, ribbon, flower or none; repeat to wear several."),
    ] = None,
    caption: Annotated[str | None, typer.Option(help="Short text along the bottom.")] = None,
    size: Annotated[int, typer.Option(min=32, max=2048, help="Width and height in pixels.")] = 512,
) -> None:
    """One sticker of the avatar as a transparent WEBP (Telegram's format at 512 px)."""
    from brain.avatar import AvatarRenderer

    renderer = AvatarRenderer()
    data = _run(renderer.render(emotion, accessories=accessory or (), caption=caption, size=size))
    out.write_bytes(data)
    typer.echo(f"wrote {out} ({len(data) / 1024:.1f} KB)")


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "you"


def main() -> None:
    try:
        app()
    except TomoError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        typer.echo("", err=True)
        raise SystemExit(130) from None
