"""What `tomo federation push` knows about an adapter: which one, which base, how many
examples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bots.federation.cli import _fingerprint
from bots.federation.runs import adapter_record, newest_adapter, record_training
from bots.settings import Settings
from brain.errors import ConfigError
from brain.llm.llamacpp import bundled_model_path
from brain.persona.federation import FederationError, check_fits_base, gguf_base_fingerprint
from brain.persona.peft_files import write_adapter
from tests.federation_kit import SMALL_SHAPES, SMOL_SHAPES, random_update


def test_training_records_the_base_and_the_examples(tmp_path: Path) -> None:
    data = tmp_path / "sft.jsonl"
    data.write_text('{"messages": []}\n\n{"messages": []}\n{"messages": []}\n')
    run = tmp_path / "runs" / "persona-sft"
    record = record_training(run, base_gguf=bundled_model_path(), data=data)
    assert record["examples"] == 3
    assert record["base_fingerprint"] == gguf_base_fingerprint(bundled_model_path())
    write_adapter(random_update(0), run / "adapter")
    assert adapter_record(run / "adapter") == record  # found in the run folder
    assert adapter_record(tmp_path) == {}
    (run / "federation.json").write_text("{broken")
    with pytest.raises(ConfigError, match="not valid JSON"):
        adapter_record(run / "adapter")


def test_the_newest_trained_adapter_is_pushed_by_default(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tomo persona train"):
        newest_adapter(tmp_path)
    runs = tmp_path / "persona" / "runs"
    old = write_adapter(random_update(0), runs / "persona-sft" / "adapter")
    new = write_adapter(random_update(1), runs / "person-7-dpo" / "adapter")
    os.utime(old / "adapter_model.safetensors", (1_000, 1_000))
    assert newest_adapter(tmp_path) == new


def test_the_fingerprint_comes_from_the_record_or_the_configured_base(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    fits = write_adapter(random_update(0, shapes=SMOL_SHAPES, layers=(2,)), tmp_path / "fits")
    assert _fingerprint(settings, fits, {}, None) == gguf_base_fingerprint(bundled_model_path())
    assert _fingerprint(settings, fits, {"base_fingerprint": "f" * 64}, None) == "f" * 64
    misfit = write_adapter(random_update(0, shapes=SMALL_SHAPES), tmp_path / "misfit")
    with pytest.raises(FederationError, match="does not fit the base model"):
        _fingerprint(settings, misfit, {}, None)


def test_check_fits_base_names_the_module() -> None:
    wide = random_update(0, shapes={"self_attn.q_proj": (576, 2048)}, layers=(4,))
    with pytest.raises(FederationError, match=r"layers\.4\.self_attn\.q_proj is 576x2048"):
        check_fits_base(wide, bundled_model_path())
    beyond = random_update(0, shapes={"self_attn.q_proj": (576, 576)}, layers=(99,))
    with pytest.raises(FederationError, match="missing in the base"):
        check_fits_base(beyond, bundled_model_path())
