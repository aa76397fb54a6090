"""Small GGUF LoRA files for tests, shaped for the bundled SmolLM2-135M (llama, 30 layers,
hidden 576), written with the `gguf` package the way `tomo persona export` writes them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

LAYERS = 30
HIDDEN = 576

Tensors = Mapping[str, npt.NDArray[np.float32]]


def write_adapter(
    path: Path,
    tensors: Tensors,
    *,
    general_type: str | None = "adapter",
    adapter_type: str | None = "lora",
    architecture: str = "llama",
    alpha: float = 16.0,
) -> Path:
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), architecture)
    if general_type is not None:
        writer.add_string("general.type", general_type)
    if adapter_type is not None:
        writer.add_string("adapter.type", adapter_type)
    writer.add_float32("adapter.lora.alpha", alpha)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def q_tensors(
    *,
    rank: int = 4,
    scale: float = 0.5,
    in_features: int = HIDDEN,
    out_features: int = HIDDEN,
    layers: Iterable[int] = range(LAYERS),
    seed: int = 0,
) -> dict[str, npt.NDArray[np.float32]]:
    """lora_a (rank x in) and lora_b (out x rank) on attn_q of `layers`, random values:
    large enough (scale 0.5) to change the greedy output of the model."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, npt.NDArray[np.float32]] = {}
    for i in layers:
        a = rng.standard_normal((rank, in_features)) * scale
        b = rng.standard_normal((out_features, rank)) * scale
        tensors[f"blk.{i}.attn_q.weight.lora_a"] = a.astype(np.float32)
        tensors[f"blk.{i}.attn_q.weight.lora_b"] = b.astype(np.float32)
    return tensors


def valid_adapter(path: Path, *, seed: int = 0, scale: float = 0.5) -> Path:
    """A rank-4 adapter on attn_q of every layer that fits the bundled model."""
    return write_adapter(path, q_tensors(seed=seed, scale=scale))


def mismatched_adapter(path: Path) -> Path:
    """Made for a model of hidden size 2048."""
    return write_adapter(path, q_tensors(in_features=2048, out_features=2048, layers=range(2)))


def garbage_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00not a model at all\xff" * 64)
    return path
