"""`tomo bench persona`: what training the persona LoRA costs on this machine.

Each stage runs in a fresh process, so its peak memory is its own:
- base: the GGUF converted to a transformers checkpoint (done once per model).
- sft: LoRA SFT steps on the persona card's examples.
- dpo: DPO steps from the SFT adapter (the reference is the SFT model, held in memory).
- export: the peft adapter to a GGUF LoRA; merge: into a Q8_0 GGUF.
Seconds a step are the median over the steps (the first, which warms up, included).
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from brain.llm.llamacpp import bundled_model_path
from brain.persona.card import PersonaCard

GENERIC = "As an AI language model, I do not have feelings, but I can help you with that."


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stage_base(work: str, gguf: str) -> dict[str, Any]:
    from brain.persona.train import base_checkpoint

    started = time.perf_counter()
    base = base_checkpoint(Path(gguf), Path(work) / "base")
    return {"seconds": time.perf_counter() - started, "base_dir": str(base)}


def _stage_train(work: str, stage: str, steps: int, threads: int) -> dict[str, Any]:
    from brain.persona.train import TrainConfig, train

    root = Path(work)
    base_dir = next((root / "base").iterdir())
    result = train(
        TrainConfig(
            stage="sft" if stage == "sft" else "dpo",
            data=root / f"{stage}.jsonl",
            run_dir=root / stage,
            base_dir=base_dir,
            init_adapter=root / "sft" / "adapter" if stage == "dpo" else None,
            max_steps=steps,
            threads=threads,
            progress_bar=False,
        )
    )
    return {"seconds": result.seconds, "seconds_per_step": result.seconds_per_step}


def _stage_export(work: str, gguf: str) -> dict[str, Any]:
    from brain.persona.gguf_lora import export_gguf_lora, merge_into_gguf

    root = Path(work)
    started = time.perf_counter()
    export_gguf_lora(root / "dpo" / "adapter", root / "persona.gguf", base_gguf=Path(gguf))
    exported = time.perf_counter()
    merge_into_gguf(Path(gguf), root / "persona.gguf", root / "merged.gguf", qtype="Q8_0")
    return {
        "seconds": exported - started,
        "merge_seconds": time.perf_counter() - exported,
        "lora_mb": (root / "persona.gguf").stat().st_size / 1e6,
    }


def _child(fn: Callable[..., dict[str, Any]], args: tuple[Any, ...], out: Any) -> None:
    figures = fn(*args)
    figures["peak_mb"] = _peak_mb()
    out.put(figures)


def _in_fresh_process(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    figures: dict[str, Any] = queue.get()
    proc.join()
    return figures


def _data(card: PersonaCard, work: Path) -> int:
    from brain.persona.dataset import card_examples

    sft = card_examples(card)
    dpo = [
        {
            "prompt": r["messages"][:-1],
            "chosen": r["messages"][-1:],
            "rejected": [{"role": "assistant", "content": GENERIC}],
            "reasons": "bench: the card's own reply against a generic assistant's",
            "judge": "bench",
            "person_id": None,
            "source": "card",
        }
        for r in sft
    ]
    for name, rows in (("sft", sft), ("dpo", dpo)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(sft)


def persona_bench(*, card: PersonaCard, steps: int = 8, threads: int = 2) -> dict[str, float]:
    """Run every stage once on the bundled model; print and return the figures."""
    gguf = str(bundled_model_path())
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tomo-bench-persona-") as tmp:
        examples = _data(card, Path(tmp))
        print(f"{examples} SFT examples and DPO pairs from the card; {steps} steps a stage")
        base = _in_fresh_process(_stage_base, tmp, gguf)
        figures["base_convert_s"] = base["seconds"]
        figures["base_peak_mb"] = base["peak_mb"]
        for stage in ("sft", "dpo"):
            result = _in_fresh_process(_stage_train, tmp, stage, steps, threads)
            figures[f"{stage}_step_s"] = result["seconds_per_step"]
            figures[f"{stage}_peak_mb"] = result["peak_mb"]
        export = _in_fresh_process(_stage_export, tmp, gguf)
        figures["export_s"] = export["seconds"]
        figures["merge_q8_s"] = export["merge_seconds"]
        figures["export_peak_mb"] = export["peak_mb"]
        figures["lora_mb"] = export["lora_mb"]
    f = figures
    print(
        f"base conversion {f['base_convert_s']:.1f} s (peak {f['base_peak_mb']:.0f} MB)\n"
        f"SFT  {f['sft_step_s']:.2f} s a step (batch 2, peak {f['sft_peak_mb']:.0f} MB)\n"
        f"DPO  {f['dpo_step_s']:.2f} s a step (batch 2, peak {f['dpo_peak_mb']:.0f} MB)\n"
        f"export to GGUF LoRA {figures['export_s']:.1f} s ({figures['lora_mb']:.1f} MB), "
        f"merge to Q8_0 {figures['merge_q8_s']:.1f} s (peak {figures['export_peak_mb']:.0f} MB)"
    )
    return figures
