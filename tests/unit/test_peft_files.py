"""The strict safetensors reader and the peft adapter folders of the federation."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from brain.persona.federation import aggregate
from brain.persona.peft_files import (
    PeftFileError,
    lora_pairs,
    parse_update,
    read_adapter,
    read_safetensors,
    write_adapter,
    write_safetensors,
)
from tests.federation_kit import SMOL_SHAPES, direct_mean, f32, random_update


def _raw(header: dict[str, object], data: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def test_round_trip_and_the_safetensors_package_agree(tmp_path: Path) -> None:
    tensors = {"x.lora_A.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    data = write_safetensors(tensors)
    back, meta = read_safetensors(data)
    np.testing.assert_array_equal(back["x.lora_A.weight"], tensors["x.lora_A.weight"])
    assert meta == {"format": "pt"}
    import safetensors.numpy as numpy_io  # the `train` extra, installed by `make test`

    path = tmp_path / "a.safetensors"
    path.write_bytes(data)
    np.testing.assert_array_equal(
        numpy_io.load_file(str(path))["x.lora_A.weight"], back["x.lora_A.weight"]
    )
    theirs = numpy_io.save(
        {"h": np.array([1.5, -2], dtype=np.float16), "d": np.ones((2, 2), dtype=np.float64)}
    )
    read, _ = read_safetensors(theirs)
    np.testing.assert_array_equal(read["h"], [1.5, -2])
    assert read["d"].dtype == np.float64


def test_bfloat16_is_widened() -> None:
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    data = _raw({"t": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}, bf16)
    np.testing.assert_array_equal(read_safetensors(data)[0]["t"], values)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x02", "shorter than"),
        (struct.pack("<Q", 10**6) + b"{}", "claims"),
        (struct.pack("<Q", 4) + b"nope", "not UTF-8 JSON"),
        (_raw({"t": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8), "dtype"),
        (
            _raw({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
            "does not fit",
        ),
        (
            _raw({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12),
            "after the last",
        ),
        (
            _raw(
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                },
                b"\0" * 12,
            ),
            "overlaps",
        ),
        (
            _raw({"t": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}, b"\0" * 8),
            "bad shape",
        ),
        (_raw({"__metadata__": {"a": 1}}, b""), "__metadata__"),
    ],
)
def test_corrupt_files_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(PeftFileError, match=message):
        read_safetensors(data)


def test_only_complete_lora_pairs_of_one_rank_are_taken() -> None:
    a, b = np.ones((4, 6), np.float32), np.ones((5, 4), np.float32)
    pairs, rank = lora_pairs({"m.lora_A.weight": a, "m.lora_B.weight": b})
    assert rank == 4
    assert pairs["m"].a_key == "m.lora_A.weight"
    with pytest.raises(PeftFileError, match="not half of a LoRA pair"):
        lora_pairs({"m.lora_A.weight": a, "m.lora_B.weight": b, "lm_head.weight": b})
    with pytest.raises(PeftFileError, match="no lora_B"):
        lora_pairs({"m.lora_A.weight": a})
    with pytest.raises(PeftFileError, match="not a LoRA pair"):
        lora_pairs({"m.lora_A.weight": a, "m.lora_B.weight": np.ones((5, 3), np.float32)})
    with pytest.raises(PeftFileError, match="different ranks"):
        lora_pairs(
            {
                "m.lora_A.weight": a,
                "m.lora_B.weight": b,
                "n.lora_A.weight": np.ones((2, 6), np.float32),
                "n.lora_B.weight": np.ones((5, 2), np.float32),
            }
        )
    nan = a.copy()
    nan[0, 0] = np.nan
    with pytest.raises(PeftFileError, match="NaN"):
        lora_pairs({"m.lora_A.weight": nan, "m.lora_B.weight": b})
    with pytest.raises(PeftFileError, match="no LoRA tensors"):
        parse_update(write_safetensors({}), alpha=1.0)


def test_an_adapter_folder_round_trips(tmp_path: Path) -> None:
    update = f32(random_update(0, alpha=16.0))
    write_adapter(update, tmp_path / "adapter")
    back = read_adapter(tmp_path / "adapter")
    assert back.rank == 4
    assert back.scale == 4.0
    for name in update.pairs:
        np.testing.assert_allclose(back.delta(name), update.delta(name), rtol=1e-6)
    write_adapter(update, tmp_path / "adapter")  # replaces the folder
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_peft_reads_the_aggregated_config(tmp_path: Path) -> None:
    import peft  # the `train` extra, installed by `make test`

    result = aggregate([random_update(0), random_update(1)], rank=8)
    write_adapter(result, tmp_path / "agg")
    config = peft.LoraConfig.from_pretrained(str(tmp_path / "agg"))
    assert config.r == 8
    assert config.lora_alpha == 8
    assert set(config.target_modules) == {"q_proj", "down_proj"}


def test_tomo_persona_export_converts_an_aggregate(tmp_path: Path) -> None:
    """The aggregate of two adapters shaped for the bundled model becomes a GGUF LoRA
    that the adapter check accepts, with the aggregated ΔW (up to llama.cpp's q/k row
    permutation)."""
    from brain.llm.adapters import check_lora
    from brain.llm.llamacpp import bundled_model_path
    from brain.persona.gguf_lora import _permute_rows, export_gguf_lora, read_gguf_lora

    updates = [
        f32(random_update(s, rank=2, layers=(0, 3), shapes=SMOL_SHAPES, scale=0.01))
        for s in range(2)
    ]
    result = aggregate(updates, weights=[1, 3], rank=4)
    write_adapter(result, tmp_path / "agg")
    out = tmp_path / "agg.gguf"
    export_gguf_lora(tmp_path / "agg", out, base_gguf=bundled_model_path())
    info = check_lora(out, bundled_model_path())
    assert (info.rank, info.pairs) == (4, 4)
    lora = read_gguf_lora(out)
    assert lora.scale == 1.0
    assert set(lora.pairs) == {f"blk.{i}.attn_{m}.weight" for i in (0, 3) for m in "qk"}
    # the k projection of layer 3, its rows permuted the way llama.cpp permutes the base
    name = "base_model.model.model.layers.3.self_attn.k_proj"
    expected = _permute_rows(direct_mean(updates, [1, 3], name), 3)  # 3 kv heads
    a, b = lora.pairs["blk.3.attn_k.weight"]
    np.testing.assert_allclose(b @ a, expected, atol=1e-6)
