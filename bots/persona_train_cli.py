"""`tomo persona` commands: train, export and merge.

Folders under the data dir (TOMO_DATA_DIR), each overridable by an option:
  persona/data/{sft,dpo}.jsonl   what `tomo persona dataset` writes
  persona/base/                  the base GGUF as a transformers checkpoint (made once)
  persona/runs/<name>-<stage>/   checkpoints, adapter/, loss.jsonl, loss.png, summary.json
  adapters/persona.gguf          the exported persona adapter (set TOMO_LLM__LORA_PATH)
  adapters/people/<id>.gguf      per-person adapters, chosen per message when present
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from bots.persona_cli import persona_app
from brain.errors import ConfigError

__all__ = ["persona_app"]

Stage = Literal["sft", "dpo"]


def _paths() -> tuple[Path, Path]:
    """The data dir and the base GGUF (checked), from one read of the settings."""
    from bots.cli import load_settings
    from brain.llm.llamacpp import bundled_model_path, check_gguf

    settings = load_settings()
    base = settings.llm.model_path or bundled_model_path()
    check_gguf(base)
    return settings.data_dir, base


def _run_name(person: int | None) -> str:
    return "persona" if person is None else f"person-{person}"


def _echo_table(rows: dict[str, object]) -> None:
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        typer.echo(f"  {key.ljust(width)}  {value}")


@persona_app.command("train")
def train_command(
    stage: Annotated[str, typer.Option(help="sft (examples) or dpo (judged pairs).")] = "sft",
    data: Annotated[
        Path | None,
        typer.Option(help="The JSONL to train on (default: persona/data/<stage>.jsonl)."),
    ] = None,
    person: Annotated[
        int | None, typer.Option(help="Train a per-person adapter (tomo's person id).")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run folder (default: persona/runs/<name>-<stage>).")
    ] = None,
    init_adapter: Annotated[
        Path | None,
        typer.Option(help="DPO: the SFT adapter to start from (default: that run's adapter)."),
    ] = None,
    epochs: Annotated[float, typer.Option(min=0.01, help="Passes over the data.")] = 3.0,
    max_steps: Annotated[
        int, typer.Option(help="Stop after this many optimizer steps (-1: by epochs).")
    ] = -1,
    learning_rate: Annotated[
        float | None, typer.Option(help="Default: 2e-4 for SFT, 5e-5 for DPO.")
    ] = None,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = 8,
    alpha: Annotated[int, typer.Option(min=1, help="LoRA alpha (scale = alpha / rank).")] = 16,
    batch_size: Annotated[int, typer.Option(min=1)] = 2,
    max_length: Annotated[int, typer.Option(min=32, help="Tokens per example.")] = 512,
    beta: Annotated[float, typer.Option(help="DPO: how far from the reference.")] = 0.1,
    save_steps: Annotated[int, typer.Option(min=1, help="Checkpoint every N steps.")] = 25,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch.")] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start over instead of resuming the run folder.")
    ] = False,
) -> None:
    """Train the persona LoRA (or a person's) with a progress bar; resumes when rerun.

    Writes the adapter, loss.jsonl, a loss-curve PNG and summary.json (seconds a step,
    peak memory) in the run folder. QLoRA (4-bit) on CUDA with bitsandbytes, fp32 LoRA
    on the CPU.
    """
    import shutil

    from brain.persona.dataset import dataset_files
    from brain.persona.train import TrainConfig, base_checkpoint, require_training_stack, train

    if stage not in ("sft", "dpo"):
        raise ConfigError(f"Unknown stage {stage!r}: use --stage sft or --stage dpo.")
    chosen: Stage = "sft" if stage == "sft" else "dpo"
    require_training_stack()
    data_dir, base_gguf = _paths()
    root = data_dir / "persona"
    name = _run_name(person)
    data = data or root / "data" / dataset_files(person)[0 if chosen == "sft" else 1]
    if not data.is_file():
        raise ConfigError(f"No training data at {data}: run `tomo persona dataset` first.")
    run = run_dir or root / "runs" / f"{name}-{chosen}"
    if fresh and run.exists():
        shutil.rmtree(run)
    if chosen == "dpo" and init_adapter is None:
        sft_adapter = root / "runs" / f"{name}-sft" / "adapter"
        init_adapter = sft_adapter if (sft_adapter / "adapter_config.json").is_file() else None
    if init_adapter is not None and not (init_adapter / "adapter_config.json").is_file():
        raise ConfigError(f"{init_adapter} is not a peft adapter folder.")
    base_dir = base_checkpoint(base_gguf, root / "base", log=typer.echo)
    typer.echo(f"training {name} ({chosen}) on {data} -> {run}")
    result = train(
        TrainConfig(
            stage=chosen,
            data=data,
            run_dir=run,
            base_dir=base_dir,
            init_adapter=init_adapter,
            rank=rank,
            alpha=alpha,
            epochs=epochs,
            max_steps=max_steps,
            learning_rate=learning_rate,
            batch_size=batch_size,
            max_length=max_length,
            beta=beta,
            save_steps=save_steps,
            threads=threads,
        ),
        log=typer.echo,
    )
    from bots.federation.runs import record_training

    record_training(run, base_gguf=base_gguf, data=data)  # for `tomo federation push`
    typer.echo("done:")
    _echo_table(
        {
            "adapter": result.adapter_dir,
            "steps": result.steps,
            "resumed from": result.resumed_from or "-",
            "device": result.device,
            "seconds a step (median)": result.seconds_per_step,
            "wall seconds": result.seconds,
            "peak memory (MB)": result.peak_rss_mb,
            "final loss": "-" if result.final_loss is None else f"{result.final_loss:.4f}",
            "loss curve": result.loss_png or "-",
        }
    )
    typer.echo(f"next: tomo persona export --adapter {result.adapter_dir}")


@persona_app.command("export")
def export_command(
    adapter: Annotated[
        Path | None,
        typer.Option(help="The peft adapter folder (default: the newest run's adapter)."),
    ] = None,
    person: Annotated[int | None, typer.Option(help="Export to adapters/people/<id>.gguf.")] = None,
    out: Annotated[Path | None, typer.Option(help="The GGUF LoRA to write.")] = None,
) -> None:
    """Convert a peft adapter to a GGUF LoRA that llama.cpp applies to the quantized base."""
    from brain.persona.gguf_lora import export_gguf_lora

    data_dir, base_gguf = _paths()
    name = _run_name(person)
    if adapter is None:
        runs = data_dir / "persona" / "runs"
        for stage in ("dpo", "sft"):
            candidate = runs / f"{name}-{stage}" / "adapter"
            if (candidate / "adapter_config.json").is_file():
                adapter = candidate
                break
        else:
            raise ConfigError(f"No trained adapter for {name}: run `tomo persona train` first.")
    if out is None:
        adapters = data_dir / "adapters"
        out = (
            adapters / "persona.gguf" if person is None else adapters / "people" / f"{person}.gguf"
        )
    started = time.perf_counter()
    lora = export_gguf_lora(adapter, out, base_gguf=base_gguf)
    seconds = time.perf_counter() - started
    typer.echo(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(lora.pairs)} tensor pairs, "
        f"rank {lora.rank}, alpha {lora.alpha:g}) in {seconds:.1f} s"
    )
    if person is None:
        typer.echo(f"serve it: TOMO_LLM__LORA_PATH={out}")


@persona_app.command("merge")
def merge_command(
    lora: Annotated[Path, typer.Option(help="The GGUF LoRA (from `tomo persona export`).")],
    out: Annotated[Path, typer.Option(help="The merged GGUF model to write.")],
    type_: Annotated[
        str,
        typer.Option(
            "--type",
            help=(
                "Tensor type of the merged weights: Q8_0 (default), F16, F32, Q4_0, Q4_1. "
                "4-bit types can round a small adapter's change away."
            ),
        ),
    ] = "Q8_0",
) -> None:
    """Merge a GGUF LoRA into the base model and quantize: one file, no adapter at run time."""
    from rich.progress import Progress

    from brain.persona.gguf_lora import merge_into_gguf

    if not lora.is_file():
        raise ConfigError(f"No LoRA file at {lora}.")
    started = time.perf_counter()
    with Progress(transient=True) as bar:
        task = bar.add_task("writing tensors", total=None)
        changed = merge_into_gguf(
            _paths()[1],
            lora,
            out,
            qtype=type_,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    seconds = time.perf_counter() - started
    typer.echo(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {changed} tensors merged, "
        f"{type_.upper()}) in {seconds:.1f} s; serve it: TOMO_LLM__MODEL_PATH={out}"
    )
