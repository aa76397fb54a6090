"""Federated persona learning: clients' LoRA adapters aggregated into one, done right.

Each client trains a LoRA adapter on its own data; only the adapter leaves the machine.
A LoRA adapter changes a module's weight by ΔW = scale · B A (scale = alpha / r, rsLoRA
alpha / sqrt(r)). What the clients agree on is a change of the weights, so that is what
is averaged: the mean of the ΔW_i, not a ΔW rebuilt from mean(B) and mean(A). The
latter (HiveMind's FedAvg of the factors) is wrong twice over: mean(B) mean(A) holds
cross terms B_i A_j of different clients, and B A = (B M)(M⁻¹ A) for any invertible M,
so two clients with the same ΔW can hold factors whose means cancel.

Aggregation, per module:
- `mean`: FedAvg, Σ w_i ΔW_i / Σ w_i, weighted by the clients' example counts (which
  the clients report: a lying client can weigh itself up; use a robust method against
  those). Computed without forming ΔW: the sum is [w_1 s_1 B_1 ... w_n s_n B_n] times
  [A_1; ...; A_n], a product of rank at most Σ r_i, whose SVD comes from two QR
  factorizations and the SVD of a small (Σ r_i)² core. Exact.
- `median`: the coordinate-wise median of the ΔW_i (unweighted).
- `trimmed`: the coordinate-wise trimmed mean: per coordinate the floor(β n) largest
  and smallest values are dropped and the rest averaged (unweighted), as
  scipy.stats.trim_mean does.
The median and the trimmed mean bound what a minority of Byzantine clients can do
(a poisoned ΔW of huge norm moves them by at most the spread of the honest values); the
mean follows a single poisoned client anywhere.

Each aggregated ΔW is then factored again at rank r by truncated SVD, ΔW ≈ U_r S_r V_rᵀ:
B = U_r √S_r, A = √S_r V_rᵀ, alpha = r (scale 1). When r is at least the rank of the
aggregate (for the mean, at most Σ r_i) this reproduces it exactly; otherwise it is the
best rank-r approximation (Eckart-Young).

Differential privacy, on the client: the update's global L2 norm (over every module's
ΔW, ‖ΔW‖_F summed in squares) is clipped to C, Gaussian noise N(0, σ²C²) is added to
every coordinate of every ΔW, and the result is factored again at rank r (post-processing,
which costs no privacy). One upload is then the Gaussian mechanism with L2 sensitivity C
with respect to the whole of that client's data (user-level DP: a neighbouring dataset
is any other data of the same client, the update replaced by one of norm at most C).
Its Rényi DP is ε_α = α / (2σ²) per upload, composed over R uploads (rounds) as
R α / (2σ²); converted to (ε, δ)-DP by ε = min over α > 1 of ε_α + ln(1/δ) / (α - 1),
which has the closed form R / (2σ²) + √(2 R ln(1/δ)) / σ at α = 1 + σ √(2 ln(1/δ) / R).
No amplification by sampling is claimed (every client uploads in every round it joins),
and the guarantee is per client against everyone who sees its upload (the server
included); numpy's generator is not a cryptographic source, and floating-point Gaussian
sampling has known side channels (Mironov 2012): this is a practical protection, not
a certified one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from brain.errors import InputError
from brain.persona.peft_files import LoraPair, LoraUpdate

Method = Literal["mean", "median", "trimmed"]
METHODS: tuple[Method, ...] = ("mean", "median", "trimmed")
F64 = npt.NDArray[np.float64]

# Robust methods hold n clients' ΔW rows at once: about this many float64 values.
_CHUNK_VALUES = 32 * 1024 * 1024


class FederationError(InputError):
    """Updates that cannot be aggregated as asked (a clear message says why)."""


# --- the base model's fingerprint ---------------------------------------------------


def base_fingerprint(architecture: str, tensors: Mapping[str, Sequence[int]]) -> str:
    """A SHA-256 (hex) of the base model's architecture and its tensors' names and shapes
    (numpy order, rows first). Quantization types are left out: Q4 and F16 files of one
    model have the same fingerprint, and an adapter trained on one fits the other."""
    canonical = {
        "architecture": architecture,
        "tensors": sorted([name, [int(n) for n in shape]] for name, shape in tensors.items()),
    }
    text = json.dumps(canonical, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def gguf_base_fingerprint(path: Path) -> str:
    """The fingerprint of a base GGUF model, from its header alone (milliseconds)."""
    from brain.llm.adapters import base_header

    header = base_header(path)
    arch = header.text("general.architecture") or "unknown"
    return base_fingerprint(arch, {n: tuple(reversed(t.ne)) for n, t in header.tensors.items()})


_HF_LAYER = re.compile(r"(?:^|\.)layers\.(?P<layer>\d+)\.(?P<module>[a-z_]+\.[a-z_]+)$")


def check_fits_base(update: LoraUpdate, base_gguf: Path) -> None:
    """FederationError if a module of `update` has another shape than the base model's
    weight it changes (llama-style names; modules it cannot map are not checked)."""
    from brain.llm.adapters import base_header
    from brain.persona.gguf_lora import HF_TO_GGUF

    tensors = base_header(base_gguf).tensors
    for name, (out, inner) in update.layout().items():
        match = _HF_LAYER.search(name)
        if match is None or match["module"] not in HF_TO_GGUF:
            continue
        gguf_name = f"blk.{match['layer']}.{HF_TO_GGUF[match['module']]}.weight"
        info = tensors.get(gguf_name)
        if info is None or tuple(reversed(info.ne)) != (out, inner):
            have = "missing" if info is None else "x".join(map(str, reversed(info.ne)))
            raise FederationError(
                f"the adapter does not fit the base model {base_gguf.name}: {name} is "
                f"{out}x{inner} in the adapter, {have} in the base (trained on another model?)"
            )


def layout_digest(update: LoraUpdate) -> str:
    """SHA-256 of the adapted modules and their (out, in) shapes: updates aggregated
    together must have the same."""
    text = json.dumps(sorted([n, list(s)] for n, s in update.layout().items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- aggregation ----------------------------------------------------------------------


def check_same_layout(updates: Sequence[LoraUpdate]) -> dict[str, tuple[int, int]]:
    """The common {module: (out, in)} of `updates`; FederationError if they differ."""
    if not updates:
        raise FederationError("there are no updates to aggregate")
    layout = updates[0].layout()
    for i, update in enumerate(updates[1:], 1):
        other = update.layout()
        if other != layout:
            names = sorted(set(layout) ^ set(other)) or sorted(
                n for n in layout if layout[n] != other[n]
            )
            raise FederationError(
                f"update {i} adapts other modules or shapes than update 0 (first difference: "
                f"{names[0]}): they were trained for different models or settings"
            )
    return layout


def combine(stack: F64, *, method: Method, weights: F64 | None = None, trim: float = 0.2) -> F64:
    """Combine n values per coordinate (axis 0 of `stack`) by `method`."""
    n = stack.shape[0]
    if method == "mean":
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
        result: F64 = np.tensordot(w / w.sum(), stack, axes=1)
        return result
    if method == "median":
        return np.asarray(np.median(stack, axis=0), dtype=np.float64)
    if method == "trimmed":
        cut = trimmed_count(n, trim)
        return np.asarray(np.sort(stack, axis=0)[cut : n - cut].mean(axis=0), dtype=np.float64)
    raise FederationError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")


def trimmed_count(n: int, trim: float) -> int:
    """How many values the trimmed mean drops on each side: floor(trim · n), at least 1."""
    if not 0.0 <= trim < 0.5:
        raise FederationError(
            f"trim must be at least 0 and below 0.5 (a fraction per side), not {trim}"
        )
    cut = math.floor(trim * n)
    if cut == 0:
        raise FederationError(
            f"a trimmed mean of {n} updates with trim {trim:g} drops none: use trim of at "
            f"least {1 / n:.3g} (1/n), or the median"
        )
    return cut


def aggregate_deltas(
    deltas: Sequence[F64],
    *,
    method: Method = "mean",
    weights: Sequence[float] | None = None,
    trim: float = 0.2,
) -> F64:
    """The aggregate of one module's ΔW_i (a direct computation, in memory)."""
    w = None if weights is None else _weights(weights, len(deltas))
    return combine(
        np.stack([np.asarray(d, dtype=np.float64) for d in deltas]),
        method=method,
        weights=w,
        trim=trim,
    )


def refactor(delta: F64, rank: int) -> tuple[F64, F64]:
    """(A, B) with B A the best rank-`rank` approximation of `delta` (truncated SVD)."""
    u, s, vt = np.linalg.svd(np.asarray(delta, dtype=np.float64), full_matrices=False)
    return _split(u, s, vt, rank)


def refactor_product(b: F64, a: F64, rank: int) -> tuple[F64, F64]:
    """refactor(b @ a, rank) for a thin product, without forming it: QR of both factors,
    then the SVD of the small core. Exact."""
    qb, rb = np.linalg.qr(b)
    qa, ra = np.linalg.qr(a.T)
    u, s, vt = np.linalg.svd(rb @ ra.T)
    return _split(qb @ u, s, vt @ qa.T, rank)


def _split(u: F64, s: F64, vt: F64, rank: int) -> tuple[F64, F64]:
    if rank < 1:
        raise FederationError(f"the rank must be at least 1, not {rank}")
    keep = min(rank, s.shape[0])
    root = np.sqrt(np.maximum(s[:keep], 0.0))
    b = np.zeros((u.shape[0], rank))
    a = np.zeros((rank, vt.shape[1]))
    b[:, :keep] = u[:, :keep] * root
    a[:keep] = root[:, None] * vt[:keep]
    return a, b


def _weights(weights: Sequence[float], n: int) -> F64:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any():
        raise FederationError("the weights must be one non-negative number per update")
    return w if w.sum() > 0 else np.ones(n)


def aggregate(
    updates: Sequence[LoraUpdate],
    *,
    method: Method = "mean",
    weights: Sequence[float] | None = None,
    trim: float = 0.2,
    rank: int | None = None,
) -> LoraUpdate:
    """Aggregate the updates' ΔW per module by `method`, factored again at `rank`
    (default: the first update's). The result has alpha = rank (scale 1) and the first
    update's tensor key names."""
    layout = check_same_layout(updates)
    if method not in METHODS:
        raise FederationError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    r = rank or updates[0].rank
    w = _weights(weights if weights is not None else [1.0] * len(updates), len(updates))
    if method == "trimmed":
        trimmed_count(len(updates), trim)
    pairs: dict[str, LoraPair] = {}
    for name in layout:
        if method == "mean":
            share = w / w.sum()
            b = np.concatenate(
                [
                    share[i] * u.scale * u.pairs[name].b.astype(np.float64)
                    for i, u in enumerate(updates)
                ],
                axis=1,
            )
            a = np.concatenate([u.pairs[name].a.astype(np.float64) for u in updates], axis=0)
            new_a, new_b = refactor_product(b, a, r)
        else:
            new_a, new_b = refactor(_robust_delta(updates, name, method=method, trim=trim), r)
        first = updates[0].pairs[name]
        pairs[name] = LoraPair(a=new_a, b=new_b, a_key=first.a_key, b_key=first.b_key)
    return LoraUpdate(pairs=pairs, rank=r, alpha=float(r), rslora=False)


def _robust_delta(updates: Sequence[LoraUpdate], name: str, *, method: Method, trim: float) -> F64:
    """The median or trimmed mean of one module's ΔW_i, a block of rows at a time."""
    out, inner = updates[0].layout()[name]
    result = np.empty((out, inner))
    rows = max(1, _CHUNK_VALUES // max(1, len(updates) * inner))
    for start in range(0, out, rows):
        stack = np.stack(
            [
                u.scale
                * (
                    u.pairs[name].b[start : start + rows].astype(np.float64)
                    @ u.pairs[name].a.astype(np.float64)
                )
                for u in updates
            ]
        )
        result[start : start + rows] = combine(stack, method=method, trim=trim)
    return result


# --- differential privacy on the client ------------------------------------------------


def update_deltas(update: LoraUpdate) -> dict[str, F64]:
    return {name: update.delta(name) for name in update.pairs}


def global_norm(deltas: Mapping[str, F64]) -> float:
    """The L2 norm of the whole update: √(Σ over modules of ‖ΔW‖_F²)."""
    return math.sqrt(sum(float(np.sum(np.square(d))) for d in deltas.values()))


def clip_deltas(deltas: Mapping[str, F64], clip: float) -> tuple[dict[str, F64], float]:
    """The deltas scaled so their global norm is at most `clip`; and the norm before."""
    if not clip > 0:
        raise FederationError(f"the clipping norm must be positive, not {clip}")
    norm = global_norm(deltas)
    factor = min(1.0, clip / norm) if norm > 0 else 1.0
    return {name: d * factor for name, d in deltas.items()}, norm


def add_gaussian_noise(
    deltas: Mapping[str, F64], *, std: float, rng: np.random.Generator
) -> dict[str, F64]:
    """Each coordinate plus an independent N(0, std²) draw."""
    return {name: d + rng.normal(0.0, std, size=d.shape) for name, d in deltas.items()}


def privatize(
    update: LoraUpdate,
    *,
    clip: float,
    sigma: float,
    rng: np.random.Generator,
    rank: int | None = None,
) -> tuple[LoraUpdate, float]:
    """Clip the update's global norm to `clip`, add N(0, (sigma·clip)²) noise to every ΔW
    coordinate, factor each again at `rank` (default the update's). Returns the private
    update (alpha = rank) and the norm before clipping."""
    if sigma < 0:
        raise FederationError(f"the noise multiplier must not be negative, not {sigma}")
    clipped, norm = clip_deltas(update_deltas(update), clip)
    noisy = add_gaussian_noise(clipped, std=sigma * clip, rng=rng) if sigma > 0 else clipped
    r = rank or update.rank
    pairs: dict[str, LoraPair] = {}
    for name, delta in noisy.items():
        a, b = refactor(delta, r)
        old = update.pairs[name]
        pairs[name] = LoraPair(a=a, b=b, a_key=old.a_key, b_key=old.b_key)
    return LoraUpdate(pairs=pairs, rank=r, alpha=float(r), rslora=False, config=update.config), norm


def rdp_gaussian(order: float, *, sigma: float, rounds: int) -> float:
    """Rényi DP of `rounds` Gaussian mechanisms (sensitivity 1, noise sigma) at `order`."""
    return rounds * order / (2.0 * sigma**2)


def epsilon(*, sigma: float, rounds: int, delta: float) -> float:
    """(ε, δ)-DP of `rounds` uploads with noise multiplier `sigma`: the minimum over
    α > 1 of rounds·α/(2σ²) + ln(1/δ)/(α-1), in closed form."""
    if not sigma > 0:
        raise FederationError("epsilon needs a positive noise multiplier sigma")
    if rounds < 1:
        raise FederationError("epsilon needs at least one round")
    if not 0 < delta < 1:
        raise FederationError(f"delta must be between 0 and 1, not {delta}")
    log_term = math.log(1.0 / delta)
    return rounds / (2.0 * sigma**2) + math.sqrt(2.0 * rounds * log_term) / sigma


def best_order(*, sigma: float, rounds: int, delta: float) -> float:
    """The Rényi order α at which `epsilon` takes its minimum."""
    return 1.0 + sigma * math.sqrt(2.0 * math.log(1.0 / delta) / rounds)


__all__ = [
    "METHODS",
    "FederationError",
    "Method",
    "add_gaussian_noise",
    "aggregate",
    "aggregate_deltas",
    "base_fingerprint",
    "best_order",
    "check_fits_base",
    "check_same_layout",
    "clip_deltas",
    "combine",
    "epsilon",
    "gguf_base_fingerprint",
    "global_norm",
    "layout_digest",
    "privatize",
    "rdp_gaussian",
    "refactor",
    "refactor_product",
    "trimmed_count",
    "update_deltas",
]
