"""Small random LoRA adapters for the federation tests, named the way peft names them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brain.persona.peft_files import LoraPair, LoraUpdate

PREFIX = "base_model.model.model.layers"
# SmolLM2-135M: hidden 576, 3 kv heads of 64
SMOL_SHAPES = {"self_attn.q_proj": (576, 576), "self_attn.k_proj": (192, 576)}
SMALL_SHAPES = {"self_attn.q_proj": (10, 12), "mlp.down_proj": (12, 7)}


def module_name(layer: int, module: str) -> str:
    return f"{PREFIX}.{layer}.{module}"


def random_update(
    seed: int,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    rslora: bool = False,
    layers: Sequence[int] = (0, 1),
    shapes: dict[str, tuple[int, int]] | None = None,
    scale: float = 1.0,
) -> LoraUpdate:
    rng = np.random.default_rng(seed)
    pairs: dict[str, LoraPair] = {}
    for layer in layers:
        for module, (out, inner) in (shapes or SMALL_SHAPES).items():
            name = module_name(layer, module)
            pairs[name] = LoraPair(
                a=rng.normal(size=(rank, inner)) * scale,
                b=rng.normal(size=(out, rank)) * scale,
                a_key=f"{name}.lora_A.weight",
                b_key=f"{name}.lora_B.weight",
            )
    return LoraUpdate(pairs=pairs, rank=rank, alpha=alpha, rslora=rslora)


def f32(update: LoraUpdate) -> LoraUpdate:
    """The update as it travels (float32 tensors)."""
    pairs = {
        n: LoraPair(
            a=p.a.astype(np.float32), b=p.b.astype(np.float32), a_key=p.a_key, b_key=p.b_key
        )
        for n, p in update.pairs.items()
    }
    return LoraUpdate(pairs=pairs, rank=update.rank, alpha=update.alpha, rslora=update.rslora)


def direct_mean(updates: Sequence[LoraUpdate], weights: Sequence[float], name: str) -> np.ndarray:
    """Σ w_i s_i B_i A_i / Σ w_i, computed the obvious way."""
    total = sum(
        w * u.scale * (u.pairs[name].b.astype(np.float64) @ u.pairs[name].a.astype(np.float64))
        for w, u in zip(weights, updates, strict=True)
    )
    return np.asarray(total) / sum(weights)
