"""peft LoRA adapters as plain numpy: the safetensors format read and written by hand.

The federation server takes adapters from clients it does not trust, so their bytes are
parsed here, strictly, with the standard library and numpy (no torch, no `safetensors`
package, which is part of the training extra only): an 8-byte little-endian header
length, a JSON header naming each tensor's dtype, shape and byte range, then the bytes.
Anything off (a header longer than the file, a range outside the data, ranges that
overlap or leave holes, an unknown dtype, a size that does not match the shape, NaN or
infinite values) is a `PeftFileError` that says what is wrong.

A peft LoRA adapter holds, per adapted module, `<module>.lora_A.weight` (rank x in)
and `<module>.lora_B.weight` (out x rank); its `adapter_config.json` gives `r`,
`lora_alpha` and `use_rslora`. The module's weight change is
ΔW = scale · B A with scale = alpha / r (rsLoRA: alpha / sqrt(r)).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from brain.errors import InputError

Array = npt.NDArray[Any]

MAX_HEADER_BYTES = 100 * 1024 * 1024
_DTYPES: Mapping[str, str] = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
_PAIR_KEY = re.compile(
    r"^(?P<module>.+)\.lora_(?P<half>[AB])(?P<tail>(?:\.[A-Za-z0-9_]+)?\.weight)$"
)
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


class PeftFileError(InputError):
    """An adapter file that is corrupt, or not a LoRA adapter tomo can use."""


def read_safetensors(data: bytes) -> tuple[dict[str, Array], dict[str, str]]:
    """The tensors (float32 or float64 arrays) and the `__metadata__` of a safetensors
    file, checked strictly."""
    if len(data) < 8:
        raise PeftFileError("not a safetensors file: shorter than its 8-byte header length")
    (header_len,) = struct.unpack_from("<Q", data, 0)
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise PeftFileError(
            f"corrupt safetensors header: it claims {header_len} bytes, the file has "
            f"{len(data) - 8} after the length"
        )
    try:
        header = json.loads(bytes(data[8 : 8 + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PeftFileError("corrupt safetensors header: not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise PeftFileError("corrupt safetensors header: not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise PeftFileError("corrupt safetensors header: __metadata__ is not a string map")
    buffer = memoryview(data)[8 + header_len :]
    tensors: dict[str, Array] = {}
    ranges: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        tensors[name] = _tensor(name, entry, buffer, ranges)
    at = 0
    for begin, end, name in sorted(ranges):
        if begin != at:
            raise PeftFileError(f"corrupt safetensors data: tensor {name} overlaps or leaves a gap")
        at = end
    if at != len(buffer):
        raise PeftFileError(
            f"corrupt safetensors data: {len(buffer) - at} bytes after the last tensor"
        )
    return tensors, dict(metadata)


def _tensor(name: str, entry: Any, buffer: memoryview, ranges: list[tuple[int, int, str]]) -> Array:
    if not isinstance(entry, dict):
        raise PeftFileError(f"corrupt safetensors header: the entry of {name} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _DTYPES:
        raise PeftFileError(
            f"tensor {name} has dtype {dtype!r}; LoRA weights must be F32, F16, BF16 or F64"
        )
    if not (
        isinstance(shape, list)
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
    ):
        raise PeftFileError(f"corrupt safetensors header: bad shape or offsets for {name}")
    begin, end = offsets
    np_dtype = np.dtype(_DTYPES[str(dtype)])
    count = math.prod(shape)
    if not 0 <= begin <= end <= len(buffer) or end - begin != count * np_dtype.itemsize:
        raise PeftFileError(
            f"corrupt safetensors data: tensor {name} ({dtype} {shape}) does not fit bytes "
            f"{begin}..{end} of {len(buffer)}"
        )
    ranges.append((begin, end, name))
    raw = np.frombuffer(buffer, dtype=np_dtype, count=count, offset=begin)
    array: Array = (
        (raw.astype(np.uint32) << 16).view(np.float32) if dtype == "BF16" else raw
    ).reshape(shape)
    return array.astype(np.float64 if dtype == "F64" else np.float32)


def write_safetensors(
    tensors: Mapping[str, Array], *, metadata: Mapping[str, str] | None = None
) -> bytes:
    """The tensors as a safetensors file, float32, in key order."""
    header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    chunks: list[bytes] = []
    at = 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name], dtype="<f4")
        raw = array.tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [at, at + len(raw)],
        }
        chunks.append(raw)
        at += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks)


@dataclass(frozen=True)
class LoraPair:
    """One adapted module: A (rank x in), B (out x rank) and their keys in the file."""

    a: Array
    b: Array
    a_key: str
    b_key: str


@dataclass(frozen=True)
class LoraUpdate:
    """A LoRA adapter as data: its pairs by module name, rank and scaling."""

    pairs: dict[str, LoraPair]
    rank: int
    alpha: float
    rslora: bool = False
    config: dict[str, Any] = field(default_factory=dict)  # the rest of adapter_config.json

    @property
    def scale(self) -> float:
        return lora_scale(alpha=self.alpha, rank=self.rank, rslora=self.rslora)

    def delta(self, name: str) -> npt.NDArray[np.float64]:
        """ΔW of one module: scale · B A (out x in), in float64."""
        pair = self.pairs[name]
        return self.scale * (pair.b.astype(np.float64) @ pair.a.astype(np.float64))

    def layout(self) -> dict[str, tuple[int, int]]:
        """{module: (out, in)}: what two updates must share to be aggregated."""
        return {name: (p.b.shape[0], p.a.shape[1]) for name, p in sorted(self.pairs.items())}

    def tensors(self) -> dict[str, Array]:
        out: dict[str, Array] = {}
        for pair in self.pairs.values():
            out[pair.a_key] = pair.a
            out[pair.b_key] = pair.b
        return out


def lora_scale(*, alpha: float, rank: int, rslora: bool) -> float:
    return alpha / math.sqrt(rank) if rslora else alpha / rank


def lora_pairs(tensors: Mapping[str, Array]) -> tuple[dict[str, LoraPair], int]:
    """Group `<module>.lora_A/.lora_B` tensors into pairs; every tensor must belong to a
    complete pair of 2-D matrices of one common rank. Returns the pairs and the rank."""
    halves: dict[str, dict[str, tuple[str, Array]]] = {}
    for key, array in tensors.items():
        match = _PAIR_KEY.match(key)
        if match is None:
            raise PeftFileError(
                f"tensor {key!r} is not half of a LoRA pair (expected <module>.lora_A.weight "
                "and <module>.lora_B.weight only)"
            )
        halves.setdefault(match["module"], {})[match["half"]] = (key, array)
    if not halves:
        raise PeftFileError("the adapter holds no LoRA tensors")
    pairs: dict[str, LoraPair] = {}
    ranks: set[int] = set()
    for module, found in sorted(halves.items()):
        if set(found) != {"A", "B"}:
            missing = "lora_B" if "A" in found else "lora_A"
            raise PeftFileError(f"module {module} has no {missing}: not a complete LoRA pair")
        (a_key, a), (b_key, b) = found["A"], found["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] or a.shape[0] == 0:
            raise PeftFileError(
                f"module {module}: lora_A {list(a.shape)} and lora_B {list(b.shape)} are not "
                "a LoRA pair (A is rank x in, B is out x rank)"
            )
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise PeftFileError(f"module {module} holds NaN or infinite values")
        ranks.add(int(a.shape[0]))
        pairs[module] = LoraPair(a=a, b=b, a_key=a_key, b_key=b_key)
    if len(ranks) != 1:
        raise PeftFileError(
            f"the modules have different ranks {sorted(ranks)}; one rank for all is needed"
        )
    return pairs, ranks.pop()


def parse_update(data: bytes, *, alpha: float, rslora: bool = False) -> LoraUpdate:
    """An uploaded adapter (safetensors bytes) as a checked LoraUpdate."""
    tensors, _ = read_safetensors(data)
    pairs, rank = lora_pairs(tensors)
    return LoraUpdate(pairs=pairs, rank=rank, alpha=alpha, rslora=rslora)


def read_adapter(folder: Path) -> LoraUpdate:
    """A peft adapter folder (adapter_config.json + adapter_model.safetensors)."""
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise PeftFileError(
                f"{folder} is not a peft adapter folder: {path.name} is missing "
                "(train one with `tomo persona train`)"
            )
    try:
        config = json.loads(config_path.read_text("utf-8"))
        rank, alpha = int(config["r"]), float(config["lora_alpha"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PeftFileError(f"the adapter config {config_path} is unreadable: {exc}") from None
    if config.get("use_dora"):
        raise PeftFileError(f"{folder} is a DoRA adapter; only plain LoRA can be aggregated")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise PeftFileError(f"{folder} has per-module ranks or alphas; one of each is needed")
    try:
        update = parse_update(
            weights_path.read_bytes(), alpha=alpha, rslora=bool(config.get("use_rslora"))
        )
    except PeftFileError as exc:
        raise PeftFileError(f"{weights_path}: {exc}") from None
    if update.rank != rank:
        raise PeftFileError(
            f"{folder}: the config says r={rank}, the tensors have rank {update.rank}"
        )
    return LoraUpdate(
        pairs=update.pairs, rank=rank, alpha=alpha, rslora=update.rslora, config=config
    )


def adapter_config(update: LoraUpdate) -> dict[str, Any]:
    """The adapter_config.json for `update`: its template's keys, with r, alpha and
    target modules of this update (peft's LoraConfig defaults otherwise)."""
    targets = sorted({name.rsplit(".", 1)[-1] for name in update.pairs})
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": None,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "lora_dropout": 0.0,
        "modules_to_save": None,
        **update.config,
    }
    config.update(
        r=update.rank,
        lora_alpha=update.alpha,
        use_rslora=update.rslora,
        use_dora=False,
        target_modules=targets,
        rank_pattern={},
        alpha_pattern={},
    )
    return config


def write_adapter(update: LoraUpdate, folder: Path) -> Path:
    """Write `update` as a peft adapter folder (atomically, see write_adapter_files)."""
    return write_adapter_files(
        folder, weights=write_safetensors(update.tensors()), config=adapter_config(update)
    )


def write_adapter_files(
    folder: Path,
    *,
    weights: bytes,
    config: Mapping[str, Any],
    extra: Mapping[str, str] | None = None,
) -> Path:
    """A peft adapter folder from its two files' contents (and `extra` text files),
    written atomically: a temporary sibling folder renamed into place (an existing
    folder is replaced)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
    _remove_tree(tmp)
    tmp.mkdir()
    try:
        (tmp / WEIGHTS_NAME).write_bytes(weights)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2), "utf-8")
        for name, text in (extra or {}).items():
            (tmp / Path(name).name).write_text(text, "utf-8")
        if folder.exists():
            folder.replace(old)
        tmp.replace(folder)
    finally:
        _remove_tree(tmp)
        _remove_tree(old)
    return folder


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


__all__ = [
    "LoraPair",
    "LoraUpdate",
    "PeftFileError",
    "adapter_config",
    "lora_pairs",
    "lora_scale",
    "parse_update",
    "read_adapter",
    "read_safetensors",
    "write_adapter",
    "write_adapter_files",
    "write_safetensors",
]
