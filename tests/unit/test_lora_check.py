"""check_lora: a bad GGUF LoRA is refused before llama.cpp sees it, with a clear message
(the file, what is wrong, the setting to fix); a good one is described."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from brain.errors import ModelError
from brain.llm.adapters import check_lora, read_gguf_header
from brain.llm.llamacpp import LlamaCppModel, bundled_model_path
from tests.lora_kit import (
    HIDDEN,
    garbage_file,
    mismatched_adapter,
    q_tensors,
    valid_adapter,
    write_adapter,
)


@pytest.fixture(scope="module")
def base() -> Path:
    return bundled_model_path()


def refused(lora: Path, base: Path, *, setting: str = "TOMO_LLM__LORA_PATH") -> str:
    with pytest.raises(ModelError) as info:
        check_lora(lora, base, setting=setting)
    message = str(info.value)
    assert str(lora) in message
    assert setting in message
    return message


def test_a_valid_adapter_is_described(tmp_path: Path, base: Path) -> None:
    info = check_lora(valid_adapter(tmp_path / "persona.gguf"), base)
    assert (info.rank, info.alpha, info.pairs, info.architecture) == (4, 16.0, 30, "llama")
    assert "LoRA rank 4, alpha 16, 30 tensors" in info.describe()


def test_the_base_header_is_read_without_its_weights(base: Path) -> None:
    header = read_gguf_header(base)
    assert header.text("general.architecture") == "llama"
    assert header.fields["llama.embedding_length"] == HIDDEN
    assert header.tensors["blk.0.attn_q.weight"].ne == (HIDDEN, HIDDEN)
    assert header.tensors["blk.0.ffn_down.weight"].ne == (1536, HIDDEN)


def test_an_adapter_for_another_hidden_size(tmp_path: Path, base: Path) -> None:
    message = refused(mismatched_adapter(tmp_path / "big.gguf"), base)
    assert "trained for hidden size 2048, the base model has 576" in message
    assert base.name in message


def test_a_file_of_garbage(tmp_path: Path, base: Path) -> None:
    assert "is not a GGUF file" in refused(garbage_file(tmp_path / "junk.gguf"), base)


def test_the_base_model_given_as_an_adapter(base: Path) -> None:
    message = refused(base, base)
    assert "is a model, not an adapter" in message
    assert "general.type is 'model'" in message


def test_a_gguf_without_an_adapter_type(tmp_path: Path, base: Path) -> None:
    lora = write_adapter(tmp_path / "x.gguf", q_tensors(), general_type=None, adapter_type=None)
    assert "has no general.type" in refused(lora, base)


def test_an_adapter_that_is_not_lora(tmp_path: Path, base: Path) -> None:
    lora = write_adapter(tmp_path / "x.gguf", q_tensors(), adapter_type="control_vector")
    assert "adapter.type is 'control_vector'" in refused(lora, base)


def test_an_adapter_for_another_architecture(tmp_path: Path, base: Path) -> None:
    lora = write_adapter(tmp_path / "x.gguf", q_tensors(), architecture="qwen2")
    assert "made for the 'qwen2' architecture" in refused(lora, base)


def test_an_adapter_on_tensors_the_base_lacks(tmp_path: Path, base: Path) -> None:
    lora = write_adapter(tmp_path / "x.gguf", q_tensors(layers=[40]))
    assert "changes blk.40.attn_q.weight, which the base model" in refused(lora, base)


def test_a_pair_missing_its_half(tmp_path: Path, base: Path) -> None:
    tensors = q_tensors(layers=[0, 1])
    del tensors["blk.1.attn_q.weight.lora_b"]
    lora = write_adapter(tmp_path / "x.gguf", tensors)
    assert "missing blk.1.attn_q.weight.lora_b" in refused(lora, base)


def test_halves_of_different_ranks(tmp_path: Path, base: Path) -> None:
    tensors = q_tensors(layers=[0])
    tensors["blk.0.attn_q.weight.lora_b"] = np.zeros((HIDDEN, 8), np.float32)
    lora = write_adapter(tmp_path / "x.gguf", tensors)
    assert "different ranks (4 and 8)" in refused(lora, base)


def test_an_adapter_with_no_lora_tensors(tmp_path: Path, base: Path) -> None:
    lora = write_adapter(tmp_path / "x.gguf", {})
    assert "holds no LoRA tensors" in refused(lora, base)


def test_truncated_tensor_data(tmp_path: Path, base: Path) -> None:
    whole = valid_adapter(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: len(whole) // 2])
    assert "is truncated" in refused(cut, base)


def test_truncated_header(tmp_path: Path, base: Path) -> None:
    whole = valid_adapter(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:100])
    assert "is corrupt or truncated" in refused(cut, base)


def test_a_missing_file_and_a_folder(tmp_path: Path, base: Path) -> None:
    assert "does not exist" in refused(tmp_path / "nope.gguf", base)
    assert "is not a file" in refused(tmp_path, base)


def test_the_message_names_the_setting_it_was_given(tmp_path: Path, base: Path) -> None:
    lora = mismatched_adapter(tmp_path / "7.gguf")
    refused(lora, base, setting="TOMO_LLM__ADAPTERS_DIR")


def test_the_model_refuses_a_bad_adapter(tmp_path: Path) -> None:
    lora = mismatched_adapter(tmp_path / "big.gguf")
    with pytest.raises(ModelError, match="hidden size 2048"):
        LlamaCppModel(lora_path=lora)


def test_with_fallback_the_model_logs_and_runs_without_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lora = garbage_file(tmp_path / "junk.gguf")
    with caplog.at_level(logging.ERROR):
        model = LlamaCppModel(lora_path=lora, lora_fallback=True)
    assert model.lora_path is None
    assert model.lora_problem is not None
    assert str(lora) in model.lora_problem
    assert "WITHOUT its LoRA adapter" in model.describe()
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert str(lora) in record.getMessage()
    assert "Running on the base model" in record.getMessage()


def test_a_good_adapter_is_kept_and_named(tmp_path: Path) -> None:
    lora = valid_adapter(tmp_path / "persona.gguf")
    model = LlamaCppModel(lora_path=lora, lora_fallback=True)
    assert model.lora_path == lora
    assert model.name.endswith("+persona.gguf")
    assert "with the LoRA adapter" in model.describe()
