"""GGUF LoRA adapters: checked against their base model before llama.cpp sees them.

llama-cpp-python 0.3.36 does not survive a bad adapter: `Llama(lora_path=...)` misses the
NULL that llama.cpp returns for it and the process dies (SIGSEGV). So every adapter is
read here first (header only, no weights) and compared with the base model the way
llama.cpp itself will (file type, architecture, tensor names and shapes, data present);
a problem is a ModelError that names the file, what is wrong and the setting to fix.

The GGUF header is parsed here, with the standard library, rather than with
`gguf.GGUFReader`: that one turns every token of a model's vocabulary into numpy views
and takes seconds on a 135M model; this reads the same facts in milliseconds.
"""

from __future__ import annotations

import functools
import mmap
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brain.errors import ModelError

GGUF_MAGIC = b"GGUF"
LORA_SETTING = "TOMO_LLM__LORA_PATH"
MODEL_SETTING = "TOMO_LLM__MODEL_PATH"

# GGUF value types: fixed sizes (8 = string, 9 = array are variable).
_SCALAR_FORMATS: Mapping[int, str] = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
_MAX_COUNT = 10_000_000  # more tensors or keys than this: not a real file


class _Corrupt(Exception):
    """The bytes are not a well-formed GGUF header."""


@dataclass(frozen=True)
class TensorInfo:
    """A tensor of a GGUF file: `ne` in ggml order (fastest-varying dimension first)."""

    ne: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the data section


@dataclass(frozen=True)
class GgufHeader:
    """What a GGUF file says about itself, without its weights. Arrays are not kept."""

    version: int
    fields: Mapping[str, Any]
    tensors: Mapping[str, TensorInfo]
    data_offset: int
    file_size: int

    def text(self, key: str) -> str | None:
        value = self.fields.get(key)
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class LoraInfo:
    """A checked adapter: what it changes and how strongly."""

    path: Path
    architecture: str
    rank: int
    alpha: float | None
    pairs: int  # base tensors it changes

    def describe(self) -> str:
        alpha = f", alpha {self.alpha:g}" if self.alpha is not None else ""
        return f"{self.path} (LoRA rank {self.rank}{alpha}, {self.pairs} tensors)"


class _Cursor:
    def __init__(self, data: Any, *, endian: str) -> None:
        self.data = data
        self.pos = 0
        self.endian = endian

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise _Corrupt("the header ends early")
        (value,) = struct.unpack_from(self.endian + fmt, self.data, self.pos)
        self.pos += size
        return value

    def skip(self, size: int) -> None:
        if size < 0 or self.pos + size > len(self.data):
            raise _Corrupt("the header ends early")
        self.pos += size

    def string(self) -> str:
        length = self.take("Q")
        start = self.pos
        self.skip(length)
        try:
            return bytes(self.data[start : self.pos]).decode("utf-8")
        except UnicodeDecodeError:
            raise _Corrupt("a name in the header is not UTF-8") from None

    def _skip_strings(self, count: int) -> None:
        data, pos, end = self.data, self.pos, len(self.data)
        length_at = struct.Struct(self.endian + "Q").unpack_from
        for _ in range(count):
            if pos + 8 > end:
                raise _Corrupt("the header ends early")
            pos += 8 + length_at(data, pos)[0]
        if pos > end:
            raise _Corrupt("the header ends early")
        self.pos = pos

    def value(self, kind: int) -> Any:
        if kind in _SCALAR_FORMATS:
            return self.take(_SCALAR_FORMATS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.take("I"), self.take("Q")
            if count > len(self.data):
                raise _Corrupt("an array is longer than the file")
            if item_kind in _SCALAR_FORMATS:
                self.skip(count * struct.calcsize(_SCALAR_FORMATS[item_kind]))
            elif item_kind == _STRING:  # a vocabulary: skip fast
                self._skip_strings(count)
            else:
                for _ in range(count):
                    self.value(item_kind)
            return None
        raise _Corrupt(f"unknown value type {kind}")


def _parse(data: Any, *, file_size: int) -> GgufHeader:
    if bytes(data[:4]) != GGUF_MAGIC:
        raise _Corrupt("no GGUF magic")
    (version,) = struct.unpack_from("<I", data, 4)
    endian = "<"
    if version & 0xFFFF == 0:  # a big-endian file
        endian = ">"
        (version,) = struct.unpack_from(">I", data, 4)
    if version not in (2, 3):
        raise _Corrupt(f"GGUF version {version} is not supported")
    cur = _Cursor(data, endian=endian)
    cur.pos = 8
    n_tensors, n_kv = cur.take("Q"), cur.take("Q")
    if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise _Corrupt("impossible tensor or key counts")
    fields: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        fields[key] = cur.value(cur.take("I"))
    tensors: dict[str, TensorInfo] = {}
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.take("I")
        if n_dims > 8:
            raise _Corrupt(f"tensor {name} has {n_dims} dimensions")
        ne = tuple(int(cur.take("Q")) for _ in range(n_dims))
        tensors[name] = TensorInfo(ne=ne, ggml_type=cur.take("I"), offset=cur.take("Q"))
    alignment = fields.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0:
        raise _Corrupt("bad general.alignment")
    data_offset = -(-cur.pos // alignment) * alignment
    return GgufHeader(
        version=version,
        fields=fields,
        tensors=tensors,
        data_offset=data_offset,
        file_size=file_size,
    )


def gguf_file_size(path: Path, *, what: str, setting: str) -> int:
    """The size of the GGUF file at `path`, or a ModelError saying why it cannot be used
    (missing, not a file, unreadable, not GGUF), naming the setting to fix."""
    if not path.exists():
        raise ModelError(f"The {what} {path} does not exist. Fix or unset {setting}.")
    if not path.is_file():
        raise ModelError(f"The {what} path {path} is not a file. Fix or unset {setting}.")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
            size = fh.seek(0, 2)
    except OSError as exc:
        raise ModelError(
            f"Cannot read the {what} {path} ({exc.strerror}). Fix {setting}."
        ) from None
    if magic != GGUF_MAGIC:
        raise ModelError(
            f"The {what} {path} is not a GGUF file (corrupt, or the wrong kind of file). "
            f"Fix {setting}."
        )
    return size


def read_gguf_header(
    path: Path, *, what: str = "model file", setting: str = MODEL_SETTING
) -> GgufHeader:
    """The header of a GGUF file (keys and tensor shapes), read without its weights."""
    size = gguf_file_size(path, what=what, setting=setting)
    try:
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse(mm, file_size=size)
    except _Corrupt as exc:
        raise ModelError(
            f"The {what} {path} is corrupt or truncated ({exc}). Fix {setting}."
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read the {what} {path} ({exc}). Fix {setting}.") from None


@functools.lru_cache(maxsize=8)
def _base_header_cached(path: str, mtime_ns: int, size: int) -> GgufHeader:
    return read_gguf_header(Path(path), what="base model", setting=MODEL_SETTING)


def base_header(path: Path) -> GgufHeader:
    """The base model's header, read once per version of the file."""
    try:
        stat = path.stat()
    except OSError:
        return read_gguf_header(path, what="base model")  # raises the clear error
    return _base_header_cached(str(path), stat.st_mtime_ns, stat.st_size)


def _tensor_bytes(info: TensorInfo) -> int | None:
    """How many bytes a tensor's data takes (None: a type this check does not know)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(info.ggml_type)]
    except (ValueError, KeyError):
        return None
    count = 1
    for n in info.ne:
        count *= n
    return int(count // block * type_size)


def _dimension_name(size: int, base: GgufHeader, arch: str, tensor: str) -> str:
    if size == base.fields.get(f"{arch}.embedding_length"):
        return "hidden size"
    if size == base.fields.get(f"{arch}.feed_forward_length"):
        return "feed-forward size"
    return f"{tensor} size"


def check_lora(lora_path: Path, base_path: Path, *, setting: str = LORA_SETTING) -> LoraInfo:
    """Check that the GGUF LoRA at `lora_path` fits the GGUF model at `base_path`.

    Raises ModelError naming the adapter, the problem and `setting`; returns what the
    adapter is on success. Reads headers only (milliseconds).
    """
    lora = read_gguf_header(lora_path, what="LoRA adapter", setting=setting)
    base = base_header(base_path)
    fix = (
        f"Export it again for this base model (`tomo persona export`), or fix {setting}; "
        "until then tomo answers without it."
    )
    where = f"The LoRA adapter {lora_path}"
    general_type = lora.text("general.type")
    if general_type != "adapter":
        said = f"its general.type is {general_type!r}" if general_type else "it has no general.type"
        kind = "a model, not an adapter" if general_type == "model" else "not an adapter"
        raise ModelError(f"{where} is {kind} ({said}; expected 'adapter'). {fix}")
    adapter_type = lora.text("adapter.type")
    if adapter_type != "lora":
        raise ModelError(
            f"{where} is not a LoRA adapter (adapter.type is {adapter_type!r}, expected "
            f"'lora'). {fix}"
        )
    arch, base_arch = lora.text("general.architecture"), base.text("general.architecture")
    if arch != base_arch or arch is None:
        raise ModelError(
            f"{where} was made for the {arch!r} architecture; the base model {base_path.name} "
            f"is {base_arch!r}. {fix}"
        )
    alpha = lora.fields.get("adapter.lora.alpha")
    if alpha is not None and not isinstance(alpha, float):
        raise ModelError(f"{where} has an adapter.lora.alpha that is not a number. {fix}")

    pairs: dict[str, dict[str, TensorInfo]] = {}
    for name, info in lora.tensors.items():
        stem, dot, part = name.rpartition(".")
        if dot and part in ("lora_a", "lora_b"):
            pairs.setdefault(stem, {})[part] = info
        elif not name.endswith("_norm.weight"):  # llama.cpp ignores norm tensors
            raise ModelError(f"{where} holds a tensor {name!r} that is not a LoRA pair. {fix}")
    if not pairs:
        raise ModelError(f"{where} holds no LoRA tensors (nothing to apply). {fix}")

    rank = 0
    for stem, pair in sorted(pairs.items()):
        if len(pair) != 2:
            missing = "lora_b" if "lora_a" in pair else "lora_a"
            raise ModelError(f"{where} is missing {stem}.{missing} (the file is damaged). {fix}")
        a, b = pair["lora_a"], pair["lora_b"]
        target = base.tensors.get(stem)
        if target is None:
            raise ModelError(
                f"{where} changes {stem}, which the base model {base_path.name} does not have: "
                f"it was trained for another model. {fix}"
            )
        if len(a.ne) != 2 or len(b.ne) != 2 or len(target.ne) < 2:
            raise ModelError(f"{where} has a tensor {stem} that is not a matrix. {fix}")
        if stem == "token_embd.weight":  # stored flipped, see llama.cpp's llm_build_inp_embd
            wanted = ((target.ne[0], b.ne[1]), (target.ne[1], a.ne[1]))
        else:
            wanted = ((target.ne[0], a.ne[0]), (target.ne[1], b.ne[1]))
        for base_dim, lora_dim in wanted:
            if base_dim != lora_dim:
                what = _dimension_name(base_dim, base, arch, stem)
                raise ModelError(
                    f"{where} does not fit the base model {base_path.name}: it was trained for "
                    f"{what} {lora_dim}, the base model has {base_dim} ({stem}). {fix}"
                )
        inner_a, inner_b = (a.ne[0], b.ne[1]) if stem == "token_embd.weight" else (a.ne[1], b.ne[0])
        if inner_a != inner_b:
            raise ModelError(
                f"{where} has lora_a and lora_b of {stem} with different ranks ({inner_a} and "
                f"{inner_b}): the file is damaged or from an old converter. {fix}"
            )
        rank = max(rank, inner_a)

    end = lora.data_offset
    for info in lora.tensors.values():
        size = _tensor_bytes(info)
        if size is not None:
            end = max(end, lora.data_offset + info.offset + size)
    if end > lora.file_size:
        raise ModelError(
            f"{where} is truncated: its tensors need {end} bytes, the file has "
            f"{lora.file_size} (an interrupted copy or export?). {fix}"
        )
    return LoraInfo(
        path=lora_path,
        architecture=arch,
        rank=rank,
        alpha=alpha,
        pairs=len(pairs),
    )


__all__ = ["GgufHeader", "LoraInfo", "TensorInfo", "base_header", "check_lora", "read_gguf_header"]
