"""What the client knows about a trained adapter: where the newest is, which base model
it was trained on, and on how many examples.

`tomo persona train` writes `federation.json` in its run folder (the base GGUF, its
fingerprint, the number of training examples); `tomo federation pull` writes one into
the pulled adapter folder. `push` reads either, and falls back to the configured base
model for the fingerprint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from brain.errors import ConfigError
from brain.persona.federation import gguf_base_fingerprint
from brain.persona.peft_files import CONFIG_NAME, WEIGHTS_NAME

RECORD_NAME = "federation.json"


def record_training(run_dir: Path, *, base_gguf: Path, data: Path) -> dict[str, Any]:
    """Note the base model's fingerprint and the example count in the run folder."""
    examples = sum(1 for line in data.read_text("utf-8").splitlines() if line.strip())
    record = {
        "base_gguf": str(base_gguf),
        "base_fingerprint": gguf_base_fingerprint(base_gguf),
        "examples": examples,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RECORD_NAME).write_text(json.dumps(record, indent=2), "utf-8")
    return record


def adapter_record(adapter: Path) -> dict[str, Any]:
    """federation.json in the adapter folder or its run folder; {} when there is none."""
    for folder in (adapter, adapter.parent):
        path = folder / RECORD_NAME
        if path.is_file():
            try:
                found = json.loads(path.read_text("utf-8"))
            except ValueError:
                raise ConfigError(f"{path} is not valid JSON: delete or fix it.") from None
            if isinstance(found, dict):
                return found
    return {}


def newest_adapter(data_dir: Path) -> Path:
    """The most recently trained adapter under <data_dir>/persona/runs."""
    runs = data_dir / "persona" / "runs"
    found = [
        p.parent
        for p in runs.glob(f"*/adapter/{CONFIG_NAME}")
        if (p.parent / WEIGHTS_NAME).is_file()
    ]
    if not found:
        raise ConfigError(
            f"No trained adapter under {runs}: run `tomo persona train`, or pass --adapter."
        )
    return max(found, key=lambda p: (p / WEIGHTS_NAME).stat().st_mtime)
