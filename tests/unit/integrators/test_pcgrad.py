"""PCGrad: closed form for two losses, torchjd's PCGrad, brute-force projections with the same orders.

Shared behaviour (APIs, decision fields, state round trip, global RNG, scale equivariance, ...):
test_contract.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close
from torchjd.aggregation import PCGrad as TorchjdPCGrad

from framework.integrators import get_integrator
from framework.integrators.pcgrad import pcgrad_weights

from . import _asserts as A
from . import _refs as R


def run(g, sizes=None, seed: int = 0):
    return A.run(get_integrator("pcgrad", seed=seed), g, sizes)


def two_loss_reference(g: np.ndarray) -> np.ndarray:
    g1, g2 = g
    dot = g1 @ g2
    if dot >= 0:
        return g1 + g2
    return (g1 - dot / (g2 @ g2) * g2) + (g2 - dot / (g1 @ g1) * g1)


@pytest.mark.parametrize("seed", range(12))
def test_two_losses_closed_form(seed: int):
    g = R.rng(seed).standard_normal((2, 10)) * R.rng(seed + 1).uniform(0.2, 5, size=(2, 1))
    out, decision = run(g, [4, 6], seed=seed)
    np.testing.assert_allclose(out, two_loss_reference(g), rtol=1e-10, atol=1e-12)
    # projected gradients no longer conflict with the other gradient
    if g[0] @ g[1] < 0:
        w = R.as_np(decision.weights)
        np.testing.assert_allclose(out, w @ g, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("seed", range(12))
def test_matches_torchjd_two_losses(seed: int):
    g = torch.tensor(R.rng(seed + 40).standard_normal((2, 10)))
    torch.manual_seed(123)  # with two losses the order is irrelevant
    expected = TorchjdPCGrad()(g)
    assert_close(get_integrator("pcgrad", seed=seed)(g).update, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [3, 4, 5])
def test_matches_torchjd_with_same_random_order(seed: int, k: int):
    # torchjd draws torch.randperm(k) from the global RNG, once per i; ours draws the same from a
    # generator seeded with `seed`. Seeding the global RNG identically reproduces the order, also
    # across consecutive calls.
    torch.manual_seed(seed)
    assert R.torch_perms(seed, k, 1)[0] == [torch.randperm(k).tolist() for _ in range(k)]
    integrator = get_integrator("pcgrad", seed=seed)
    torchjd = TorchjdPCGrad()
    torch.manual_seed(seed)
    for call in range(3):
        g = torch.tensor(R.with_conflict(seed * 10 + call, k, 7))
        assert_close(integrator(g).update, torchjd(g), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [3, 4, 5])
def test_matches_bruteforce_projection(seed: int, k: int):
    calls = 3
    perms = R.torch_perms(seed, k, calls)
    integrator = get_integrator("pcgrad", seed=seed)
    for call in range(calls):
        g = R.with_conflict(seed * 7 + call, k, sum(R.SIZES))
        out = R.as_np(integrator(torch.tensor(g), segments=R.SIZES).update)
        np.testing.assert_allclose(out, R.ref_pcgrad(g, perms[call]), rtol=1e-10, atol=1e-12 * np.abs(g).max())


def test_order_matters_for_three_losses():
    # sanity: the brute-force reference does depend on the order, so the tests above are meaningful
    g = np.array([[1.0, 0.0], [-0.8, 0.6], [0.3, -1.0]])
    results = {tuple(np.round(R.ref_pcgrad(g, [p] * 3), 12)) for p in ([0, 1, 2], [0, 2, 1])}
    assert len(results) == 2


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_no_conflict_is_plain_sum(seed: int, k: int):
    g = R.aligned(seed, k, 9)
    out, decision = run(g, [4, 5], seed=seed)
    np.testing.assert_allclose(out, g.sum(0), rtol=1e-14, atol=1e-14)
    np.testing.assert_array_equal(R.as_np(decision.weights), np.ones(k))


def test_state_dict_reproduces_random_order():
    k, gs = 5, [torch.tensor(R.with_conflict(s, 5, 8)) for s in range(6)]
    integrator = get_integrator("pcgrad", seed=3)
    integrator(gs[0])
    state = integrator.state_dict()
    first = [integrator(g).update for g in gs[1:]]
    integrator.load_state_dict(state)
    again = [integrator(g).update for g in gs[1:]]
    fresh = get_integrator("pcgrad", seed=99)  # the loaded state overrides the seed
    fresh.load_state_dict(state)
    other = [fresh(g).update for g in gs[1:]]
    for a, b, c in zip(first, again, other, strict=False):
        assert_close(a, b, rtol=0, atol=0)
        assert_close(a, c, rtol=0, atol=0)
    # the restored generator continues the seeded stream (brute force with the seed-3 orders)
    perms = R.torch_perms(3, k, len(gs))
    for call, g in enumerate(gs[1:], start=1):
        expected = R.ref_pcgrad(R.as_np(g), perms[call])
        np.testing.assert_allclose(R.as_np(first[call - 1]), expected, rtol=1e-10, atol=1e-12)


def test_same_seed_same_sequence_and_seeds_differ():
    gs = [torch.tensor(R.with_conflict(s, 4, 6)) for s in range(20)]
    a, b = get_integrator("pcgrad", seed=1), get_integrator("pcgrad", seed=1)
    for g in gs:
        assert_close(a(g).update, b(g).update, rtol=0, atol=0)
    c, d = get_integrator("pcgrad", seed=1), get_integrator("pcgrad", seed=2)
    assert any(not torch.equal(c(g).update, d(g).update) for g in gs)


@pytest.mark.parametrize("seed", range(5))
def test_pcgrad_weights_function_matches_vectors(seed: int):
    g = R.with_conflict(seed, 4, 9)
    w = R.as_np(pcgrad_weights(torch.tensor(R.gram(g)), torch.Generator().manual_seed(seed)))
    np.testing.assert_allclose(w @ g, R.ref_pcgrad(g, R.torch_perms(seed, 4)[0]), rtol=1e-10, atol=1e-12)


def test_hparams():
    assert get_integrator("pcgrad", seed=7).hparams() == {"seed": 7}
    assert repr(get_integrator("pcgrad")) == "PCGrad(seed=0)"


def test_label_omits_the_seed_and_no_fixed_combination():
    # the seed follows the run's seed, so it is not part of the label
    assert get_integrator("pcgrad", seed=3).label() == "pcgrad"
    assert get_integrator("pcgrad").fixed_combination(2) is None


def _edge_params():
    for name in R.EDGE_NAMES:
        for dtype in (torch.float64, torch.float32):
            yield pytest.param(name, dtype, id=f"{name}-{str(dtype)[6:]}")


@pytest.mark.parametrize(("name", "dtype"), list(_edge_params()))
def test_edge_cases_match_closed_form(name: str, dtype: torch.dtype):
    g = R.edge_case(name, dtype)
    out, decision = run(g, R.EDGE_SIZES)
    assert np.isfinite(out).all() and torch.isfinite(decision.weights).all()
    if dtype == torch.float64:
        g64 = R.as_np(g)
        both_nonzero = (g64[0] @ g64[0]) * (g64[1] @ g64[1]) > 0
        expected = two_loss_reference(g64) if both_nonzero else g64.sum(0)
        np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10 * max(np.abs(g64).max(), 1e-300))
