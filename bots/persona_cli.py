"""`tomo persona`: build the training data, train, export and evaluate the persona LoRA.

The commands live in two modules so that the data side (dataset, eval) and the training
side (train, export, merge) can change apart; both register on `persona_app`.
"""

from __future__ import annotations

import typer

persona_app = typer.Typer(
    help=(
        "The persona LoRA: `dataset` (SFT examples and judged DPO pairs as JSONL), "
        "`train --stage sft|dpo`, `export` (GGUF LoRA for llama.cpp), `merge` "
        "(adapter merged into a quantized GGUF), `eval` (persona consistency, before and after)."
    ),
    no_args_is_help=True,
)

# The commands register themselves on persona_app when their modules are imported.
from bots import persona_data_cli, persona_train_cli  # noqa: E402

__all__ = ["persona_app", "persona_data_cli", "persona_train_cli"]
