"""`tomo persona` commands: dataset and eval.

`dataset` builds the persona LoRA's training data from the configured persona card and
database (brain/persona/dataset.py) and writes it as JSONL; `eval` scores persona
consistency of the base model and of each adapter given (brain/persona/evaluate.py).
Heavy imports stay inside the commands so that `tomo --help` stays quick.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bots.persona_cli import persona_app
from brain.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from bots.settings import Settings
    from brain.persona.dataset import BuildReport, Dataset, DatasetConfig
    from brain.persona.evaluate import EvalReport
    from brain.ports import LanguageModel


def prepare_out_dir(out: Path) -> Path:
    """The output folder, created if missing; a clear error when it cannot be written."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder: pick a folder for the data.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"Cannot create the folder {out} ({exc.strerror}): pick another --out."
        ) from None
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ConfigError(
            f"Cannot write to the folder {out} ({exc.strerror}): pick another --out."
        ) from None
    return out


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counter.items()))


def report_lines(report: BuildReport, written: dict[str, Path], *, dpo: bool) -> list[str]:
    """The counts `tomo persona dataset` prints."""
    lines = [
        f"SFT examples: {report.sft_card} from the card, {report.sft_conversation} from "
        f"conversations -> {written['sft']}"
    ]
    if report.sft_skipped:
        lines.append(f"  stored replies left out: {_counts(report.sft_skipped)}")
    if not dpo:
        lines.append("DPO pairs: not built (--no-dpo)")
        return lines
    where = written.get("dpo")
    lines.append(
        f"DPO pairs: {report.dpo_pairs} from {report.dpo_prompts} prompts"
        + (f" -> {where}" if where else "")
    )
    if report.dpo_skipped:
        lines.append(f"  pairs skipped: {_counts(report.dpo_skipped)}")
    return lines


@persona_app.command("dataset")
def dataset(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for sft.jsonl and dpo.jsonl, created if missing (default: "
            "persona/data in the data dir, where `tomo persona train` looks)."
        ),
    ] = None,
    person: Annotated[
        int | None,
        typer.Option(
            help="A per-person data set (tomo's person id): only replies to that person, "
            "written as person-<id>-sft.jsonl / -dpo.jsonl."
        ),
    ] = None,
    candidates: Annotated[
        int, typer.Option(min=2, help="Candidate replies generated per DPO prompt.")
    ] = 4,
    max_conversations: Annotated[
        int | None,
        typer.Option(min=0, help="At most N stored replies, newest first (0: the card only)."),
    ] = None,
    dpo: Annotated[
        bool, typer.Option("--dpo/--no-dpo", help="Also synthesize judged DPO pairs.")
    ] = True,
    judge_base_url: Annotated[
        str | None,
        typer.Option(
            help="An OpenAI-compatible server for the judge, e.g. http://127.0.0.1:8000/v1 "
            "(default: the configured model judges its own candidates)."
        ),
    ] = None,
    judge_model: Annotated[
        str | None, typer.Option(help="The judge's model name on that server.")
    ] = None,
    judge_api_key: Annotated[
        str | None,
        typer.Option(envvar="TOMO_JUDGE_API_KEY", help="The judge server's API key, if any."),
    ] = None,
) -> None:
    """SFT examples (persona card, stored conversations) and judged DPO pairs as JSONL."""
    from datetime import timedelta

    from bots.cli import load_settings
    from bots.logs import setup_logging
    from brain.persona.dataset import DatasetConfig

    if (judge_base_url is None) != (judge_model is None):
        raise ConfigError("--judge-base-url and --judge-model go together: give both or neither.")
    settings = load_settings()
    setup_logging(settings.log_level, fmt=settings.log_format, content=settings.log_content)
    folder = prepare_out_dir(out or settings.data_dir / "persona" / "data")
    config = DatasetConfig(
        person_id=person,
        candidates=candidates,
        max_conversations=max_conversations,
        dpo=dpo,
        context_messages=settings.memory.window_messages,
        conversation_gap=timedelta(hours=settings.memory.conversation_gap_hours),
        max_message_chars=settings.memory.max_message_chars,
        max_reply_tokens=settings.llm.max_reply_tokens,
    )
    built = asyncio.run(
        _build(
            settings,
            config,
            judge_base_url=judge_base_url,
            judge_model=judge_model,
            judge_api_key=judge_api_key,
        )
    )
    from brain.persona.dataset import write_dataset

    written = write_dataset(folder, built, person_id=person)
    for line in report_lines(built.report, written, dpo=dpo):
        typer.echo(line)


async def _build(
    settings: Settings,
    config: DatasetConfig,
    *,
    judge_base_url: str | None,
    judge_model: str | None,
    judge_api_key: str | None,
) -> Dataset:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    from bots.app import build_encryption, build_model, load_persona, migrate
    from brain.persona.dataset import build_dataset
    from storage.database import Database
    from storage.longterm import SqlLongTermStore
    from storage.sql import SqlMemoryStore

    persona = load_persona(settings.persona)
    await migrate(settings)
    url = settings.effective_database_url
    database = Database(url, encryption=build_encryption(settings))
    store = SqlMemoryStore(url, database=database)
    model: LanguageModel | None = None
    judge: LanguageModel | None = None
    labels = {
        "card": "persona card",
        "conversations": "stored replies",
        "dpo": "DPO candidates + judge",
    }
    try:
        if config.dpo:
            model = build_model(settings)
            if judge_base_url is not None and judge_model is not None:
                from brain.llm.openai_compat import OpenAICompatModel

                judge = OpenAICompatModel(
                    base_url=judge_base_url, model=judge_model, api_key=judge_api_key
                )
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, transient=False) as bar:
            tasks: dict[str, TaskID] = {}

            def progress(stage: str, done: int, total: int | None) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(labels.get(stage, stage), total=total)
                bar.update(tasks[stage], completed=done, total=total)

            return await build_dataset(
                card=persona,
                store=store,
                longterm=SqlLongTermStore(database),
                model=model,
                judge=judge,
                config=config,
                progress=progress,
            )
    finally:
        for each in (judge, model):
            if each is not None:
                await each.aclose()
        await store.aclose()


def _settings_with_lora(settings: Settings, lora: Path | None) -> Settings:
    return settings.model_copy(update={"llm": settings.llm.model_copy(update={"lora_path": lora})})


def check_adapters(settings: Settings, adapters: list[Path]) -> None:
    """Every adapter file exists, and the backend can load adapters."""
    if adapters and settings.llm.backend == "openai":
        raise ConfigError(
            "--adapter loads a GGUF LoRA into llama.cpp: set TOMO_LLM__BACKEND=llamacpp "
            "(an OpenAI-compatible server serves its adapters by model name instead)."
        )
    for path in adapters:
        if not path.exists():
            raise ConfigError(f"The adapter file {path} does not exist: check --adapter.")
        if not path.is_file():
            raise ConfigError(f"The adapter {path} is not a file: give a .gguf LoRA file.")


def _labels(adapters: list[Path]) -> list[str]:
    names = [p.name for p in adapters]
    return [p.name if names.count(p.name) == 1 else str(p) for p in adapters]


@persona_app.command("eval")
def eval_command(
    adapter: Annotated[
        list[Path] | None,
        typer.Option(
            "--adapter",
            help="A GGUF LoRA adapter to score beside the base model; repeat for several.",
        ),
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=8, help="Tokens per reply (greedy).")] = 96,
    replies: Annotated[bool, typer.Option(help="Also print every reply.")] = False,
) -> None:
    """Persona consistency on a fixed prompt set: the base model and each adapter."""
    from bots.cli import load_settings
    from bots.logs import setup_logging

    settings = load_settings()
    setup_logging(settings.log_level, fmt=settings.log_format, content=settings.log_content)
    adapters = list(adapter or [])
    check_adapters(settings, adapters)
    report = asyncio.run(_evaluate(settings, adapters, max_tokens=max_tokens))
    _print_report(report, replies=replies)


async def _models(settings: Settings, adapters: list[Path]) -> list[tuple[str, LanguageModel]]:
    """The base model and the base with each adapter, built with the app's builder.
    Nothing is loaded yet (llama.cpp loads on the first reply), but every adapter is
    checked now: one the builder would drop (running the bare base instead) is an error
    here, or the table would credit the base model's replies to it."""
    from bots.app import build_model

    built: list[tuple[str, LanguageModel]] = []
    runs: list[tuple[str, Path | None]] = [("base", None)]
    runs += list(zip(_labels(adapters), adapters, strict=True))
    try:
        for label, lora in runs:
            model = build_model(_settings_with_lora(settings, lora))
            built.append((label, model))
            problem = getattr(model, "lora_problem", None)
            if lora is not None and problem:
                raise ModelError(f"The adapter {lora} cannot be used: {problem}")
    except BaseException:
        for _, model in built:
            await model.aclose()
        raise
    return built


async def _evaluate(settings: Settings, adapters: list[Path], *, max_tokens: int) -> EvalReport:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    from bots.app import load_persona
    from brain.persona.evaluate import EVAL_PROMPTS, EvalReport, evaluate_model

    persona = load_persona(settings.persona)
    report = EvalReport(prompts=EVAL_PROMPTS)
    waiting = await _models(settings, adapters)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()) as bar:
            while waiting:
                label, model = waiting[0]
                task = bar.add_task(label, total=len(EVAL_PROMPTS))

                def progress(done: int, total: int, task: TaskID = task) -> None:
                    bar.update(task, completed=done, total=total)

                report.models.append(
                    await evaluate_model(
                        persona, label, model, max_tokens=max_tokens, progress=progress
                    )
                )
                # One model in memory at a time: closed once it has answered.
                waiting.pop(0)
                await model.aclose()
    finally:
        for _, model in waiting:
            await model.aclose()
    return report


def _print_report(report: EvalReport, *, replies: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if replies:
        for model in report.models:
            console.rule(model.label)
            for result in model.results:
                console.print(f"[bold]{result.prompt}[/bold]", highlight=False)
                console.print(f"  {result.reply}", markup=False, highlight=False)
                marks = ", ".join(f"{k} {v:.2f}" for k, v in result.markers.items())
                console.print(f"  [dim]{marks}[/dim]", highlight=False)
    table = Table(title="Persona consistency (style markers from the card, 0-1)")
    table.add_column("prompt")
    for model in report.models:
        table.add_column(model.label, justify="right")
    for prompt, scores in report.rows():
        table.add_row(prompt, *(f"{s:.2f}" for s in scores), end_section=False)
    table.add_section()
    table.add_row("mean", *(f"{m.mean:.2f}" for m in report.models))
    console.print(table)


__all__ = ["check_adapters", "persona_app", "prepare_out_dir", "report_lines"]
