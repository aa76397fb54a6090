"""Federated aggregation of LoRA adapters: the math against direct numpy computations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from brain.persona.federation import (
    FederationError,
    add_gaussian_noise,
    aggregate,
    aggregate_deltas,
    base_fingerprint,
    best_order,
    clip_deltas,
    epsilon,
    gguf_base_fingerprint,
    global_norm,
    privatize,
    rdp_gaussian,
    refactor,
    refactor_product,
    update_deltas,
)
from brain.persona.peft_files import LoraPair, LoraUpdate
from tests.federation_kit import SMALL_SHAPES, direct_mean, module_name, random_update

NAME = module_name(0, "self_attn.q_proj")


def test_mean_of_deltas_is_reproduced_exactly_when_the_rank_allows() -> None:
    """Rank 12 >= 3 clients x rank 4: the refactored adapter's ΔW is the weighted mean."""
    updates = [
        random_update(0, alpha=8.0),
        random_update(1, alpha=16.0),
        random_update(2, alpha=4.0, rslora=True),  # scale alpha/sqrt(r)
    ]
    weights = [10, 30, 60]
    result = aggregate(updates, weights=weights, rank=12)
    assert result.rank == 12
    assert result.alpha == 12.0
    assert result.scale == 1.0
    for name in result.pairs:
        np.testing.assert_allclose(
            result.delta(name), direct_mean(updates, weights, name), atol=1e-10
        )
        assert result.pairs[name].a_key == updates[0].pairs[name].a_key


def test_the_true_rank_is_enough() -> None:
    """Clients whose ΔW share one column space (rank 4) average to rank 4: rank 4 is exact."""
    rng = np.random.default_rng(7)
    basis = rng.normal(size=(10, 4))
    updates = []
    for seed in range(5):
        mix = np.random.default_rng(seed).normal(size=(4, 4))
        a = np.random.default_rng(seed + 100).normal(size=(4, 12))
        pair = LoraPair(
            a=a, b=basis @ mix, a_key=f"{NAME}.lora_A.weight", b_key=f"{NAME}.lora_B.weight"
        )
        updates.append(LoraUpdate(pairs={NAME: pair}, rank=4, alpha=8.0))
    result = aggregate(updates, weights=[1, 2, 3, 4, 5], rank=4)
    np.testing.assert_allclose(
        result.delta(NAME), direct_mean(updates, [1, 2, 3, 4, 5], NAME), atol=1e-10
    )


def test_a_lower_rank_gives_the_best_approximation() -> None:
    """Eckart-Young: the error of the rank-r refactoring is the norm of the dropped
    singular values."""
    updates = [random_update(s) for s in range(3)]
    mean = direct_mean(updates, [1, 1, 1], NAME)
    result = aggregate(updates, rank=3)
    s = np.linalg.svd(mean, compute_uv=False)
    error = np.linalg.norm(result.delta(NAME) - mean)
    assert error == pytest.approx(math.sqrt(float(np.sum(s[3:] ** 2))), rel=1e-9)


def test_refactor_product_equals_the_dense_svd() -> None:
    rng = np.random.default_rng(3)
    b, a = rng.normal(size=(30, 9)), rng.normal(size=(9, 20))
    for rank in (2, 9, 15):
        a1, b1 = refactor_product(b, a, rank)
        a2, b2 = refactor(b @ a, rank)
        assert a1.shape == a2.shape == (rank, 20)
        assert b1.shape == b2.shape == (30, rank)
        np.testing.assert_allclose(b1 @ a1, b2 @ a2, atol=1e-9)


def test_averaging_a_and_b_separately_does_not_give_the_average() -> None:
    """HiveMind's FedAvg of the factors: mean(B) mean(A) is not mean(B A)."""
    updates = [random_update(s) for s in range(4)]
    truth = direct_mean(updates, [1, 1, 1, 1], NAME)
    mean_b = np.mean([u.pairs[NAME].b for u in updates], axis=0)
    mean_a = np.mean([u.pairs[NAME].a for u in updates], axis=0)
    factor_avg = updates[0].scale * mean_b @ mean_a
    ours = aggregate(updates, rank=16).delta(NAME)
    np.testing.assert_allclose(ours, truth, atol=1e-10)
    assert np.linalg.norm(factor_avg - truth) > 0.5 * np.linalg.norm(truth)


def test_two_clients_with_the_same_delta_in_other_factors() -> None:
    """B A = (B M)(M⁻¹ A): the same change, other factors. The mean of the deltas is that
    change; averaging the factors is not."""
    one = random_update(11)
    pair = one.pairs[NAME]
    m = np.diag([-1.0, 2.0, -0.5, 1.0])
    other = LoraPair(a=np.linalg.inv(m) @ pair.a, b=pair.b @ m, a_key=pair.a_key, b_key=pair.b_key)
    two = LoraUpdate(pairs={NAME: other}, rank=4, alpha=one.alpha)
    one = LoraUpdate(pairs={NAME: pair}, rank=4, alpha=one.alpha)
    np.testing.assert_allclose(one.delta(NAME), two.delta(NAME), atol=1e-12)
    np.testing.assert_allclose(aggregate([one, two]).delta(NAME), one.delta(NAME), atol=1e-10)
    factor_avg = one.scale * ((pair.b + other.b) / 2) @ ((pair.a + other.a) / 2)
    assert np.linalg.norm(factor_avg - one.delta(NAME)) > 0.3 * np.linalg.norm(one.delta(NAME))


def test_median_and_trimmed_mean_against_numpy() -> None:
    updates = [random_update(s) for s in range(6)]
    full = min(SMALL_SHAPES["self_attn.q_proj"])
    stack = np.stack([u.delta(NAME) for u in updates])
    median = aggregate(updates, method="median", rank=full)
    np.testing.assert_allclose(median.delta(NAME), np.median(stack, axis=0), atol=1e-10)
    trimmed = aggregate(updates, method="trimmed", trim=0.2, rank=full)
    expected = np.sort(stack, axis=0)[1:5].mean(axis=0)  # floor(0.2 * 6) = 1 per side
    np.testing.assert_allclose(trimmed.delta(NAME), expected, atol=1e-10)
    np.testing.assert_allclose(
        aggregate_deltas(list(stack), method="trimmed", trim=0.2), expected, atol=1e-12
    )


def _honest_and_poisoned(target: np.ndarray) -> list[LoraUpdate]:
    """Five clients near `target` (rank 10 = full), and one with a huge delta."""
    updates = []
    for seed in range(5):
        noise = np.random.default_rng(seed).normal(scale=0.05, size=target.shape)
        a, b = refactor(target + noise, 10)
        updates.append(
            LoraUpdate(
                pairs={NAME: LoraPair(a, b, "x.lora_A.weight", "x.lora_B.weight")},
                rank=10,
                alpha=10.0,
            )
        )
    poison = np.random.default_rng(99).normal(size=target.shape) * 1e4
    a, b = refactor(poison, 10)
    updates.append(
        LoraUpdate(
            pairs={NAME: LoraPair(a, b, "x.lora_A.weight", "x.lora_B.weight")}, rank=10, alpha=10.0
        )
    )
    return updates


def test_a_poisoned_client_is_resisted_by_median_and_trimmed_mean_not_by_mean() -> None:
    target = np.random.default_rng(5).normal(size=(10, 12))
    updates = _honest_and_poisoned(target)
    scale = np.linalg.norm(target)

    def error(method: str) -> float:
        result = aggregate(updates, method=method, trim=0.2, rank=10)  # type: ignore[arg-type]
        return float(np.linalg.norm(result.delta(NAME) - target) / scale)

    assert error("mean") > 100  # one client moved it a hundred times its size
    assert error("median") < 0.1
    assert error("trimmed") < 0.1
    # weights do not help the mean: the poisoned client can claim as many examples as it likes
    weighted = aggregate(updates, weights=[100] * 5 + [1], rank=10)
    assert np.linalg.norm(weighted.delta(NAME) - target) / scale > 10


def test_trimmed_mean_that_drops_nobody_is_refused() -> None:
    updates = [random_update(s) for s in range(3)]
    with pytest.raises(FederationError, match="drops none"):
        aggregate(updates, method="trimmed", trim=0.2)
    with pytest.raises(FederationError, match=r"below 0\.5"):
        aggregate(updates, method="trimmed", trim=0.5)


def test_updates_for_other_modules_or_shapes_are_refused() -> None:
    one = random_update(0)
    other = random_update(1, layers=(0, 2))
    with pytest.raises(FederationError, match="other modules or shapes"):
        aggregate([one, other])
    wide = random_update(2, shapes={"self_attn.q_proj": (10, 13), "mlp.down_proj": (12, 7)})
    with pytest.raises(FederationError, match="other modules or shapes"):
        aggregate([one, wide])


# --- differential privacy -----------------------------------------------------------------


def test_clipping_bounds_the_global_norm_and_keeps_the_direction() -> None:
    deltas = update_deltas(random_update(0, scale=3.0))
    norm = global_norm(deltas)
    assert norm > 5
    clipped, before = clip_deltas(deltas, 5.0)
    assert before == pytest.approx(norm)
    assert global_norm(clipped) <= 5.0 * (1 + 1e-12)
    assert global_norm(clipped) == pytest.approx(5.0)
    for name, d in deltas.items():
        np.testing.assert_allclose(clipped[name], d * 5.0 / norm)
    small, _ = clip_deltas(deltas, norm * 2)
    for name, d in deltas.items():
        np.testing.assert_array_equal(small[name], d)


def test_the_noise_has_standard_deviation_sigma_times_clip() -> None:
    zeros = {"a": np.zeros((200, 300)), "b": np.zeros((100, 400))}
    sigma, clip = 0.8, 2.0
    noisy = add_gaussian_noise(zeros, std=sigma * clip, rng=np.random.default_rng(1234))
    values = np.concatenate([v.ravel() for v in noisy.values()])  # 100,000 coordinates
    assert values.std() == pytest.approx(sigma * clip, rel=0.02)
    assert abs(values.mean()) < 0.02
    # independent across modules and coordinates
    assert abs(np.corrcoef(noisy["a"].ravel()[:-1], noisy["a"].ravel()[1:])[0, 1]) < 0.02


def test_privatize_clips_noises_and_refactors() -> None:
    update = random_update(0, scale=2.0)
    private, norm = privatize(update, clip=1.0, sigma=0.0, rng=np.random.default_rng(0), rank=8)
    assert norm == pytest.approx(global_norm(update_deltas(update)))
    assert private.rank == 8
    assert private.scale == 1.0
    # without noise, rank 8 >= 4 reproduces the clipped update exactly
    clipped, _ = clip_deltas(update_deltas(update), 1.0)
    for name in update.pairs:
        np.testing.assert_allclose(private.delta(name), clipped[name], atol=1e-10)
    noisy, _ = privatize(update, clip=1.0, sigma=1.0, rng=np.random.default_rng(0))
    assert noisy.rank == update.rank
    for name, pair in noisy.pairs.items():
        assert pair.a.shape == update.pairs[name].a.shape
        assert np.linalg.matrix_rank(noisy.delta(name)) <= update.rank
        assert not np.allclose(noisy.delta(name), clipped[name])


def test_epsilon_matches_a_hand_computation() -> None:
    # σ = 1, one round, δ = 1e-5: min over α of α/2 + ln(1e5)/(α-1), at α - 1 = sqrt(2 ln 1e5)
    # = 4.7985: ε = 1/2 + sqrt(2 · 11.5129) = 0.5 + 4.7985 = 5.2985
    assert epsilon(sigma=1.0, rounds=1, delta=1e-5) == pytest.approx(5.2985, abs=1e-4)
    # σ = 2, 4 rounds, δ = 1e-6: 4/8 + sqrt(8 · 13.8155)/2 = 0.5 + 5.2565 = 5.7565
    assert epsilon(sigma=2.0, rounds=4, delta=1e-6) == pytest.approx(5.7565, abs=1e-4)


def test_epsilon_is_the_minimum_over_renyi_orders() -> None:
    for sigma, rounds, delta in [(0.7, 1, 1e-5), (1.5, 10, 1e-6), (4.0, 100, 1e-5)]:
        orders = np.linspace(1.0001, 400, 400_000)
        curve = rdp_gaussian(orders, sigma=sigma, rounds=rounds) + np.log(1 / delta) / (orders - 1)  # type: ignore[arg-type]
        eps = epsilon(sigma=sigma, rounds=rounds, delta=delta)
        assert eps == pytest.approx(float(curve.min()), rel=1e-6)
        assert best_order(sigma=sigma, rounds=rounds, delta=delta) == pytest.approx(
            float(orders[curve.argmin()]), rel=1e-3
        )


def test_epsilon_falls_with_more_noise_and_grows_with_more_rounds() -> None:
    by_sigma = [epsilon(sigma=s, rounds=5, delta=1e-5) for s in (0.5, 1, 2, 4, 8)]
    assert by_sigma == sorted(by_sigma, reverse=True)
    by_rounds = [epsilon(sigma=1.0, rounds=r, delta=1e-5) for r in (1, 2, 10, 100)]
    assert by_rounds == sorted(by_rounds)
    with pytest.raises(FederationError):
        epsilon(sigma=0.0, rounds=1, delta=1e-5)
    with pytest.raises(FederationError):
        epsilon(sigma=1.0, rounds=1, delta=1.5)


# --- the base model's fingerprint ----------------------------------------------------------


def _gguf(path: Path, *, hidden: int = 8, dtype: type = np.float32) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("blk.0.attn_q.weight", np.ones((hidden, hidden), dtype=dtype))
    writer.add_tensor("token_embd.weight", np.ones((16, hidden), dtype=dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_fingerprint_ignores_quantization_but_not_shapes(tmp_path: Path) -> None:
    f32 = gguf_base_fingerprint(_gguf(tmp_path / "a.gguf"))
    f16 = gguf_base_fingerprint(_gguf(tmp_path / "b.gguf", dtype=np.float16))
    wider = gguf_base_fingerprint(_gguf(tmp_path / "c.gguf", hidden=16))
    assert f32 == f16 != wider
    assert len(f32) == 64
    assert f32 == base_fingerprint(
        "llama", {"blk.0.attn_q.weight": (8, 8), "token_embd.weight": (16, 8)}
    )
    assert f32 != base_fingerprint(
        "qwen2", {"blk.0.attn_q.weight": (8, 8), "token_embd.weight": (16, 8)}
    )


def test_the_bundled_model_has_a_stable_fingerprint() -> None:
    from brain.llm.llamacpp import bundled_model_path

    first = gguf_base_fingerprint(bundled_model_path())
    assert first == gguf_base_fingerprint(bundled_model_path())
