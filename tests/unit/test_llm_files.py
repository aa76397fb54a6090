"""A missing or corrupt model file gives a clear error naming the path and the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from brain.errors import ModelError
from brain.llm.llamacpp import LlamaCppModel, bundled_model_path


def test_bundled_model_is_installed() -> None:
    path = bundled_model_path()
    assert path.is_file()
    assert path.read_bytes()[:4] == b"GGUF"


def test_missing_model_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelError) as info:
        LlamaCppModel(model_path=missing)
    assert str(missing) in str(info.value)
    assert "TOMO_LLM__MODEL_PATH" in str(info.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a file"):
        LlamaCppModel(model_path=tmp_path)


def test_not_a_gguf(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"<html>not a model</html>")
    with pytest.raises(ModelError, match="not a GGUF file") as info:
        LlamaCppModel(model_path=bogus)
    assert str(bogus) in str(info.value)


def test_bad_lora_names_its_own_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="TOMO_LLM__LORA_PATH"):
        LlamaCppModel(lora_path=tmp_path / "missing-lora.gguf")


async def test_truncated_gguf_fails_on_load_with_a_clear_error(tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(bundled_model_path().read_bytes()[:4096])
    model = LlamaCppModel(model_path=cut)
    with pytest.raises(ModelError, match="could not load") as info:
        await model.aload()
    assert str(cut) in str(info.value)
    assert "TOMO_LLM__MODEL_PATH" in str(info.value)
