"""peft LoRA adapters as GGUF: converted for llama.cpp, or merged into a quantized base.

Written with the `gguf` package, in numpy only (no torch): the layout is the one of
llama.cpp's own `convert_lora_to_gguf.py`. The KV pairs `general.type = adapter`,
`adapter.type = lora` and `adapter.lora.alpha`; per target a pair of F32 tensors
`blk.N.attn_q.weight.lora_a` (numpy shape rank x in) and `.lora_b` (out x rank).
Hugging Face's llama layout differs from GGUF's in one place: the rows of the query and
key projections are permuted for llama.cpp's rope. So `lora_b` of q and k is permuted the
same way as the base weights were when the model was converted.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brain.errors import ModelError

# Hugging Face module names -> llama.cpp tensor names, for the llama architecture
# (SmolLM2, Llama 2/3, Mistral, Qwen2-style attention without biases).
HF_TO_GGUF: Mapping[str, str] = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
SUPPORTED_ARCHITECTURES = ("llama",)
_PEFT_KEY = re.compile(
    r"^(?:base_model\.model\.)?model\.layers\.(?P<layer>\d+)\.(?P<module>[a-z_]+\.[a-z_]+)"
    r"\.lora_(?P<ab>[AB])(?:\.default)?\.weight$"
)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LoraTensors:
    """An adapter in GGUF naming: {base tensor name: (lora_a, lora_b)} and its alpha."""

    pairs: dict[str, tuple[np.ndarray, np.ndarray]]
    alpha: float
    rank: int

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:  # pragma: no cover - gguf is a runtime dependency
        raise ModelError("The gguf package is missing: run `make run` to install tomo.") from None
    return gguf


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def base_shape(base_gguf: Path) -> dict[str, Any]:
    """What the converter needs of the base model: architecture and attention heads."""
    from brain.llm.adapters import base_header

    header = base_header(base_gguf)
    arch = header.text("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelError(
            f"The base model {base_gguf} is of architecture {arch!r}; the LoRA converter "
            f"knows {', '.join(SUPPORTED_ARCHITECTURES)}."
        )
    return {
        "architecture": arch,
        "n_head": int(header.fields[f"{arch}.attention.head_count"]),
        "n_head_kv": int(header.fields[f"{arch}.attention.head_count_kv"]),
        # numpy order (rows first), as the converter's arrays are
        "tensors": {name: tuple(reversed(t.ne)) for name, t in header.tensors.items()},
    }


def _permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute on the output (row) axis."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_peft_adapter(adapter_dir: Path, *, n_head: int, n_head_kv: int) -> LoraTensors:
    """Load a peft adapter folder and map it to GGUF names (q/k rows permuted)."""
    config_path = adapter_dir / "adapter_config.json"
    weights_path = adapter_dir / "adapter_model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ModelError(
                f"{adapter_dir} is not a peft adapter folder: {path.name} is missing "
                "(train one with `tomo persona train`)."
            )
    try:
        config = json.loads(config_path.read_text("utf-8"))
        rank = int(config["r"])
        alpha = float(config["lora_alpha"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"The adapter config {config_path} is unreadable: {exc}") from None
    if config.get("use_dora"):
        raise ModelError(f"{adapter_dir} is a DoRA adapter; llama.cpp serves plain LoRA only.")
    if config.get("use_rslora"):
        # peft scales by alpha/sqrt(r), llama.cpp by alpha/r: carry the difference in alpha.
        alpha = alpha * math.sqrt(rank)
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"The adapter weights {weights_path} are corrupt: {exc}") from None
    halves: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        match = _PEFT_KEY.match(key)
        if match is None or match["module"] not in HF_TO_GGUF:
            raise ModelError(
                f"The adapter {adapter_dir} has a tensor tomo cannot convert: {key} "
                "(only LoRA on the attention and MLP projections of a llama model)."
            )
        name = f"blk.{match['layer']}.{HF_TO_GGUF[match['module']]}.weight"
        halves.setdefault(name, {})[match["ab"]] = value.astype(np.float32)
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, ab in sorted(halves.items()):
        if set(ab) != {"A", "B"}:
            raise ModelError(f"The adapter {adapter_dir} lacks half of the pair for {name}.")
        lora_a, lora_b = ab["A"], ab["B"]
        if ".attn_q." in name:
            lora_b = _permute_rows(lora_b, n_head)
        elif ".attn_k." in name:
            lora_b = _permute_rows(lora_b, n_head_kv)
        pairs[name] = (np.ascontiguousarray(lora_a), np.ascontiguousarray(lora_b))
    if not pairs:
        raise ModelError(f"The adapter {adapter_dir} holds no LoRA weights.")
    return LoraTensors(pairs=pairs, alpha=alpha, rank=rank)


def _check_against_base(lora: LoraTensors, base: Mapping[str, Any], source: Path) -> None:
    tensors: Mapping[str, tuple[int, ...]] = base["tensors"]
    for name, (lora_a, lora_b) in lora.pairs.items():
        if name not in tensors:
            raise ModelError(f"The adapter {source} targets {name}, which the base model lacks.")
        out_features, in_features = tensors[name]
        if lora_a.shape[1] != in_features or lora_b.shape[0] != out_features:
            raise ModelError(
                f"The adapter {source} does not fit the base model: {name} is "
                f"{out_features}x{in_features} in the base, the adapter is for "
                f"{lora_b.shape[0]}x{lora_a.shape[1]} (trained on another model?)."
            )


def _atomic_target(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.name}.{os.getpid()}.tmp")


def write_gguf_lora(lora: LoraTensors, out: Path, *, architecture: str = "llama") -> None:
    """Write the adapter as a GGUF LoRA (atomically: a crash leaves no half file)."""
    gguf = _gguf()
    tmp = _atomic_target(out)
    try:
        writer = gguf.GGUFWriter(tmp, architecture)
        writer.add_string("general.type", "adapter")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", float(lora.alpha))
        writer.add_string("general.name", out.stem)
        for name, (lora_a, lora_b) in lora.pairs.items():
            writer.add_tensor(f"{name}.lora_a", lora_a)
            writer.add_tensor(f"{name}.lora_b", lora_b)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def export_gguf_lora(adapter_dir: Path, out: Path, *, base_gguf: Path) -> LoraTensors:
    """peft adapter folder -> GGUF LoRA that llama.cpp applies to `base_gguf`."""
    base = base_shape(base_gguf)
    lora = read_peft_adapter(adapter_dir, n_head=base["n_head"], n_head_kv=base["n_head_kv"])
    _check_against_base(lora, base, adapter_dir)
    write_gguf_lora(lora, out, architecture=base["architecture"])
    return lora


def read_gguf_lora(path: Path) -> LoraTensors:
    """A GGUF LoRA file back into arrays (for merging and for checks)."""
    from brain.llm.adapters import read_gguf_header

    header = read_gguf_header(path, what="LoRA adapter", setting="the LoRA path")
    if header.text("general.type") != "adapter" or header.text("adapter.type") != "lora":
        raise ModelError(f"{path} is not a GGUF LoRA adapter (general.type/adapter.type).")
    gguf = _gguf()
    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read the LoRA adapter {path}: {exc}") from None
    alpha = _field(reader, "adapter.lora.alpha")
    halves: dict[str, dict[str, np.ndarray]] = {}
    for tensor in reader.tensors:
        base_name, _, half = tensor.name.rpartition(".lora_")
        if half not in ("a", "b"):
            raise ModelError(f"{path} has a tensor that is not a LoRA half: {tensor.name}")
        data = np.asarray(
            _gguf().quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32
        )
        halves.setdefault(base_name, {})[half] = data
    pairs = {name: (ab["a"], ab["b"]) for name, ab in halves.items() if set(ab) == {"a", "b"}}
    if not pairs or len(pairs) != len(halves):
        raise ModelError(f"{path} holds no complete LoRA pairs.")
    rank = next(iter(pairs.values()))[0].shape[0]
    return LoraTensors(pairs=pairs, alpha=float(alpha) if alpha else float(rank), rank=rank)


def merge_into_gguf(
    base_gguf: Path,
    lora_gguf: Path,
    out: Path,
    *,
    qtype: str | None = None,
    progress: Progress | None = None,
) -> int:
    """Merge a GGUF LoRA into the base weights and write a new quantized GGUF.

    `qtype` names the type of the merged tensors (F32, F16, Q8_0, Q4_0, Q4_1, ...);
    unset: each keeps its type in the base. All metadata (tokenizer, chat template) is
    copied. Returns the number of tensors changed.
    """
    gguf = _gguf()
    base = base_shape(base_gguf)
    lora = read_gguf_lora(lora_gguf)
    _check_against_base(lora, base, lora_gguf)
    target_type = None
    if qtype is not None:
        try:
            target_type = gguf.GGMLQuantizationType[qtype.upper()]
        except KeyError:
            raise ModelError(
                f"Unknown tensor type {qtype!r}: use F32, F16, Q8_0, Q4_0 or Q4_1."
            ) from None
    reader = gguf.GGUFReader(base_gguf)
    tmp = _atomic_target(out)
    changed = 0
    try:
        writer = gguf.GGUFWriter(tmp, base["architecture"])
        for field in reader.fields.values():
            if field.name == "general.architecture" or field.name.startswith("GGUF."):
                continue
            val_type = field.types[0]
            sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), val_type, sub_type=sub_type)
        datas: list[np.ndarray] = []
        for tensor in reader.tensors:
            data: np.ndarray = tensor.data
            kind = tensor.tensor_type
            pair = lora.pairs.get(tensor.name)
            if pair is not None:
                weight = np.asarray(gguf.quants.dequantize(data, kind), dtype=np.float32)
                weight = weight + np.float32(lora.scale) * (pair[1] @ pair[0])
                kind = target_type if target_type is not None else kind
                data = _encode(gguf, weight, kind)
                changed += 1
            datas.append(data)
            writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, data in enumerate(datas, 1):
            writer.write_tensor_data(data)
            if progress is not None:
                progress(i, len(datas))
        writer.close()
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return changed


def _encode(gguf: Any, weight: np.ndarray, kind: Any) -> np.ndarray:
    if kind == gguf.GGMLQuantizationType.F32:
        return weight.astype(np.float32)
    if kind == gguf.GGMLQuantizationType.F16:
        return weight.astype(np.float16)
    try:
        return np.asarray(gguf.quants.quantize(weight, kind))
    except (NotImplementedError, gguf.quants.QuantError) as exc:
        raise ModelError(
            f"The gguf package cannot quantize to {kind.name} ({exc}): pick F16, Q8_0, Q4_0 "
            "or Q4_1 with --type."
        ) from None
