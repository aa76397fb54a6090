"""LoRA training of the persona: SFT, then DPO on judged pairs (transformers + peft + trl).

The base model is the GGUF tomo chats with. transformers reads a GGUF (`gguf_file=`) by
dequantizing it, which takes a while, so the first run saves it once as a normal
checkpoint (`base_checkpoint`) and later runs load that. On CUDA with bitsandbytes the
base is loaded in 4 bits (QLoRA); on the CPU the LoRA trains in full precision.

A run folder holds `checkpoints/` (resumed from when the run is started again),
`adapter/` (the peft adapter at the end), `loss.jsonl` (one line a logged step),
`loss.png` (the curve) and `summary.json` (steps, seconds a step, peak memory).

Everything here imports torch and friends lazily: they are the `train` extra, not part
of the runtime install.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from brain.errors import ConfigError, ModelError

Stage = Literal["sft", "dpo"]
LogSink = Callable[[str], None]

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_BASE_MARK = "tomo-base.json"


def require_training_stack() -> None:
    """A clear error when the `train` extra is not installed."""
    missing = []
    for module in ("torch", "transformers", "peft", "trl", "datasets"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ConfigError(
            f"Training needs {', '.join(missing)}: install the train extra with "
            "`.venv/bin/pip install torch==2.13.0 -e '.[train]'` (add `qlora` on CUDA)."
        )


def _source_stamp(gguf_path: Path) -> dict[str, Any]:
    stat = gguf_path.stat()
    return {"gguf": str(gguf_path.resolve()), "size": stat.st_size, "mtime": int(stat.st_mtime)}


def base_checkpoint(gguf_path: Path, cache_dir: Path, *, log: LogSink | None = None) -> Path:
    """The base model as a transformers checkpoint, converted from the GGUF once."""
    require_training_stack()
    target = cache_dir / gguf_path.stem
    stamp = _source_stamp(gguf_path)
    mark = target / _BASE_MARK
    if mark.is_file():
        try:
            if json.loads(mark.read_text("utf-8")) == stamp:
                return target
        except ValueError:
            pass
    if log:
        log(f"converting {gguf_path.name} to a transformers checkpoint (once) in {target}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"transformers cannot read the base model {gguf_path}: {exc}") from None
    # The weights are dequantized to plain float tensors; only the GGUF marker remains,
    # and it makes save_pretrained refuse.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / _BASE_MARK).write_text(json.dumps(stamp), "utf-8")
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    return target


@dataclass
class TrainConfig:
    """One training run. Defaults suit a small model on a CPU."""

    stage: Stage
    data: Path
    run_dir: Path
    base_dir: Path
    init_adapter: Path | None = None  # DPO starts from the SFT adapter
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: Sequence[str] = TARGET_MODULES
    epochs: float = 3.0
    max_steps: int = -1
    learning_rate: float | None = None  # stage default: SFT 2e-4, DPO 5e-5
    batch_size: int = 2
    grad_accum: int = 1
    max_length: int = 512
    beta: float = 0.1
    seed: int = 42
    save_steps: int = 25
    threads: int | None = None
    progress_bar: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path
    steps: int
    resumed_from: str | None
    seconds: float
    seconds_per_step: float
    peak_rss_mb: float
    final_loss: float | None
    loss_png: Path | None
    device: str


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rows(stage: Stage, data: Path) -> list[dict[str, Any]]:
    from brain.persona.dataset import load_dpo, load_sft

    if stage == "sft":
        rows = []
        for example in load_sft(data):
            messages = example["messages"]
            # Loss on the persona's last reply only: prompt/completion form.
            rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
        return rows
    return [
        {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
        for r in load_dpo(data)
    ]


def _latest_checkpoint(checkpoints: Path) -> Path | None:
    found = [p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def _load_model(config: TrainConfig, *, cuda: bool) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    if cuda:
        try:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.bfloat16,
                bnb_4bit_use_double_quant=True,
            )
            kwargs["device_map"] = {"": 0}
        except ImportError:
            pass
    else:
        kwargs["dtype"] = torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(config.base_dir), **kwargs)
    if "quantization_config" in kwargs:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return model


def _checkpointing_arg() -> str:
    """transformers 5 renamed gradient_checkpointing (the old name warns)."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    return (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )


def train(config: TrainConfig, *, log: LogSink | None = None) -> TrainResult:
    """Run SFT or DPO; resumes from the newest checkpoint in the run folder."""
    with warnings.catch_warnings():
        # peft and trl still ask the model the deprecated `is_gradient_checkpointing`.
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing", category=FutureWarning
        )
        return _train(config, log=log)


def _train(config: TrainConfig, *, log: LogSink | None = None) -> TrainResult:
    require_training_stack()
    import torch
    from peft import LoraConfig, PeftModel
    from transformers import AutoTokenizer, TrainerCallback

    say = log or (lambda _line: None)
    if not (config.base_dir / "config.json").is_file():
        raise ConfigError(f"{config.base_dir} is not a transformers checkpoint.")
    if config.stage == "dpo" and config.init_adapter is None:
        say("DPO without an SFT adapter: a fresh adapter is trained on the base model")
    rows = _rows(config.stage, config.data)
    if not rows:
        raise ConfigError(f"{config.data} holds no training examples.")
    if config.threads:
        torch.set_num_threads(config.threads)
    cuda = torch.cuda.is_available()
    config.run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = config.run_dir / "checkpoints"
    resume = _latest_checkpoint(checkpoints)
    if resume is not None:
        say(f"resuming from {resume.name}")

    from datasets import Dataset

    dataset = Dataset.from_list(rows)
    tokenizer = AutoTokenizer.from_pretrained(str(config.base_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = _load_model(config, cuda=cuda)
    peft_config = None
    if config.init_adapter is not None:
        model = PeftModel.from_pretrained(model, str(config.init_adapter), is_trainable=True)
    else:
        peft_config = LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=list(config.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
    loss_log = config.run_dir / "loss.jsonl"
    if resume is None:
        loss_log.unlink(missing_ok=True)

    step_seconds: list[float] = []

    class _LossLog(TrainerCallback):  # type: ignore[misc]
        """Appends each logged loss to loss.jsonl and times the optimizer steps."""

        began = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            self.began = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            step_seconds.append(time.perf_counter() - self.began)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            if not logs or "loss" not in logs:
                return
            line = {"stage": config.stage, "step": state.global_step, **logs}
            with loss_log.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")

    common: dict[str, Any] = {
        "output_dir": str(checkpoints),
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "learning_rate": config.learning_rate or (2e-4 if config.stage == "sft" else 5e-5),
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": 2,
        "report_to": "none",
        "seed": config.seed,
        "disable_tqdm": not config.progress_bar,
        "dataloader_num_workers": 0,
        "max_length": config.max_length,
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "dataloader_pin_memory": cuda,
        # Recomputing activations saves GPU memory; on a CPU it only costs time.
        _checkpointing_arg(): cuda,
        **config.extra,
    }
    started = time.perf_counter()
    trainer = _trainer(
        config, model, tokenizer, dataset, peft_config, common, cuda, resume, _LossLog()
    )
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - started
    adapter_dir = config.run_dir / "adapter"
    trainer.model.save_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    steps = int(output.global_step)
    losses = read_losses(loss_log)
    png = plot_losses(losses, config.run_dir / "loss.png") if losses else None
    result = TrainResult(
        adapter_dir=adapter_dir,
        steps=steps,
        resumed_from=resume.name if resume else None,
        seconds=round(seconds, 2),
        seconds_per_step=round(statistics.median(step_seconds), 3) if step_seconds else 0.0,
        peak_rss_mb=round(_peak_rss_mb(), 1),
        final_loss=losses[-1]["loss"] if losses else None,
        loss_png=png,
        device="cuda (4-bit QLoRA)" if cuda else "cpu (fp32 LoRA)",
    )
    summary = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
    (config.run_dir / "summary.json").write_text(json.dumps(summary, indent=2), "utf-8")
    return result


def _trainer(
    config: TrainConfig,
    model: Any,
    tokenizer: Any,
    dataset: Any,
    peft_config: Any,
    common: dict[str, Any],
    cuda: bool,
    resume: Path | None,
    callback: Any,
) -> Any:
    from peft import PeftModel

    if config.stage == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer: Any = SFTTrainer(
            model=model,
            args=SFTConfig(**common, completion_only_loss=True),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[callback],
        )
    else:
        from trl import DPOConfig, DPOTrainer

        ref_model = None
        if config.init_adapter is not None:
            # The reference is the SFT model (base + SFT adapter merged), not the base.
            ref_base = _load_model(config, cuda=cuda)
            ref_model = PeftModel.from_pretrained(ref_base, str(config.init_adapter))
            ref_model = ref_model.merge_and_unload()
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=DPOConfig(**common, beta=config.beta),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[callback],
        )
    return trainer


def read_losses(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    # A resumed run logs its steps again from the checkpoint on: keep the last of each.
    by_step = {int(line["step"]): line for line in lines}
    return [by_step[s] for s in sorted(by_step)]


def plot_losses(losses: Sequence[dict[str, Any]], out: Path) -> Path:
    """The loss curve as a PNG (matplotlib, no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    try:
        ax.plot([p["step"] for p in losses], [p["loss"] for p in losses], marker=".")
        stage = losses[0].get("stage", "")
        ax.set_title(f"tomo persona {stage} loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out
