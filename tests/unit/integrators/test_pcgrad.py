"""PCGrad: closed form for two losses, torchjd's PCGrad, brute-force projections with the same orders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close
from torchjd.aggregation import PCGrad as TorchjdPCGrad

from framework.integrators import get_integrator
from framework.integrators.pcgrad import pcgrad_weights

from . import _refs as R


NAME = "pcgrad"


def run(g, sizes=None, seed: int = 0):
    integrator = get_integrator("pcgrad", seed=seed)
    g = g if isinstance(g, torch.Tensor) else torch.tensor(g, dtype=torch.float64)
    out = integrator(g, segments=sizes)
    assert out.shape == (g.shape[1],) and out.dtype == g.dtype
    return R.as_np(out), integrator


def two_loss_reference(g: np.ndarray) -> np.ndarray:
    g1, g2 = g
    dot = g1 @ g2
    if dot >= 0:
        return g1 + g2
    return (g1 - dot / (g2 @ g2) * g2) + (g2 - dot / (g1 @ g1) * g1)


@pytest.mark.parametrize("seed", range(12))
def test_two_losses_closed_form(seed: int):
    g = R.rng(seed).standard_normal((2, 10)) * R.rng(seed + 1).uniform(0.2, 5, size=(2, 1))
    out, integrator = run(g, [4, 6], seed=seed)
    np.testing.assert_allclose(out, two_loss_reference(g), rtol=1e-10, atol=1e-12)
    # projected gradients no longer conflict with the other gradient
    if g[0] @ g[1] < 0:
        w = R.as_np(integrator.last.weights)
        np.testing.assert_allclose(out, w @ g, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("seed", range(12))
def test_matches_torchjd_two_losses(seed: int):
    g = torch.tensor(R.rng(seed + 40).standard_normal((2, 10)))
    torch.manual_seed(123)  # with two losses the order is irrelevant
    expected = TorchjdPCGrad()(g)
    assert_close(get_integrator("pcgrad", seed=seed)(g), expected, rtol=1e-12, atol=1e-12)


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
        assert_close(integrator(g), torchjd(g), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [3, 4, 5])
def test_matches_bruteforce_projection(seed: int, k: int):
    calls = 3
    perms = R.torch_perms(seed, k, calls)
    integrator = get_integrator("pcgrad", seed=seed)
    for call in range(calls):
        g = R.with_conflict(seed * 7 + call, k, sum(R.SIZES))
        out = R.as_np(integrator(torch.tensor(g), segments=R.SIZES))
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
    out, integrator = run(g, [4, 5], seed=seed)
    np.testing.assert_allclose(out, g.sum(0), rtol=1e-14, atol=1e-14)
    np.testing.assert_array_equal(R.as_np(integrator.last.weights), np.ones(k))


def test_state_dict_reproduces_random_order():
    k, gs = 5, [torch.tensor(R.with_conflict(s, 5, 8)) for s in range(6)]
    integrator = get_integrator("pcgrad", seed=3)
    integrator(gs[0])
    state = integrator.state_dict()
    first = [integrator(g) for g in gs[1:]]
    integrator.load_state_dict(state)
    again = [integrator(g) for g in gs[1:]]
    fresh = get_integrator("pcgrad", seed=99)
    fresh.load_state_dict(state)
    other = [fresh(g) for g in gs[1:]]
    for a, b, c in zip(first, again, other):
        assert_close(a, b, rtol=0, atol=0)
        assert_close(a, c, rtol=0, atol=0)
    # the restored generator continues the seeded stream (brute force with the seed-3 orders)
    perms = R.torch_perms(3, k, len(gs))
    for call, g in enumerate(gs[1:], start=1):
        expected = R.ref_pcgrad(R.as_np(g), perms[call])
        np.testing.assert_allclose(R.as_np(first[call - 1]), expected, rtol=1e-10, atol=1e-12)


def test_state_dict_is_a_snapshot():
    integrator = get_integrator("pcgrad", seed=0)
    state = integrator.state_dict()
    g = torch.tensor(R.with_conflict(0, 4, 6))
    a = integrator(g)
    integrator(g)
    integrator.load_state_dict(state)
    assert_close(integrator(g), a, rtol=0, atol=0)


def test_same_seed_same_sequence_and_seeds_differ():
    gs = [torch.tensor(R.with_conflict(s, 4, 6)) for s in range(20)]
    a, b = get_integrator("pcgrad", seed=1), get_integrator("pcgrad", seed=1)
    for g in gs:
        assert_close(a(g), b(g), rtol=0, atol=0)
    c, d = get_integrator("pcgrad", seed=1), get_integrator("pcgrad", seed=2)
    assert any(not torch.equal(c(g), d(g)) for g in gs)


def test_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    get_integrator("pcgrad", seed=5)(torch.tensor(R.with_conflict(0, 4, 6)))
    assert_close(torch.rand(3), expected, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(5))
def test_pcgrad_weights_function_matches_vectors(seed: int):
    g = R.with_conflict(seed, 4, 9)
    w = R.as_np(pcgrad_weights(torch.tensor(R.gram(g)), torch.Generator().manual_seed(seed)))
    np.testing.assert_allclose(w @ g, R.ref_pcgrad(g, R.torch_perms(seed, 4)[0]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [2, 4])
def test_flat_api_equals_tensor_api(k: int):
    g = torch.tensor(R.with_conflict(3, k, sum(R.SIZES)))
    flat = get_integrator("pcgrad", seed=4)(g, segments=R.SIZES)
    per_tensor = get_integrator("pcgrad", seed=4).integrate_tensors(R.reshape_rows(g, R.SHAPES))
    assert [tuple(t.shape) for t in per_tensor] == R.SHAPES
    assert_close(torch.cat([t.reshape(-1) for t in per_tensor]), flat, rtol=1e-14, atol=1e-14)


def test_inplace_matches_out_of_place():
    g = torch.tensor(R.with_conflict(5, 3, sum(R.SIZES)))
    expected = get_integrator("pcgrad").integrate_tensors(R.reshape_rows(g, R.SHAPES))
    lists = R.reshape_rows(g, R.SHAPES)
    out = get_integrator("pcgrad").integrate_tensors(lists, inplace=True)
    for o, e, storage in zip(out, expected, lists[0]):
        assert_close(o, e, rtol=1e-15, atol=0)
        assert o.data_ptr() == storage.data_ptr()


def test_decision_fields():
    g = R.with_conflict(2, 3, 10)
    out, integrator = run(g, [4, 6])
    d = integrator.last
    np.testing.assert_allclose(R.as_np(d.gram), R.gram(g), rtol=1e-12)
    np.testing.assert_allclose(R.as_np(d.cosine), R.cosine(g), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(d.sum_norm, np.linalg.norm(g.sum(0)), rtol=1e-12)
    np.testing.assert_allclose(d.update_norm, np.linalg.norm(out), rtol=1e-12)
    np.testing.assert_allclose(R.as_np(d.weights) @ g, out, rtol=1e-12, atol=1e-13)


def test_hparams():
    assert get_integrator("pcgrad", seed=7).hparams() == {"seed": 7}
    assert repr(get_integrator("pcgrad")) == "PCGrad(seed=0)"


def _edge_params():
    for name in R.EDGE_NAMES:
        for dtype in (torch.float64, torch.float32):
            yield pytest.param(name, dtype, id=f"{name}-{str(dtype)[6:]}")


@pytest.mark.parametrize(("name", "dtype"), list(_edge_params()))
def test_edge_cases_finite(name: str, dtype: torch.dtype):
    g = R.edge_case(name, dtype)
    out, integrator = run(g, R.EDGE_SIZES)
    assert np.isfinite(out).all() and torch.isfinite(integrator.last.weights).all()
    if dtype == torch.float64:
        g64 = R.as_np(g)
        both_nonzero = (g64[0] @ g64[0]) * (g64[1] @ g64[1]) > 0
        expected = two_loss_reference(g64) if both_nonzero else g64.sum(0)
        np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10 * max(np.abs(g64).max(), 1e-300))


@pytest.mark.parametrize(("dtype", "scale"), [
    *[pytest.param(torch.float64, s, id=f"float64-{s:g}") for s in (1e-150, 1e-30, 1e20, 1e150)],
    *[pytest.param(torch.float32, s, id=f"float32-{s:g}") for s in (1e-15, 1e15)],
    pytest.param(torch.float32, 1e-30, id="float32-1e-30"),
    pytest.param(torch.float32, 1e20, id="float32-1e+20"),
])
def test_scale_equivariance(dtype: torch.dtype, scale: float):
    g = R.conflicting_pair(4, 9)
    base, _ = run(g)
    out, _ = run(torch.tensor(g * scale, dtype=dtype))
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(out / scale, base, rtol=rtol, atol=rtol * np.abs(base).max())


@pytest.mark.parametrize(("dtype", "magnitude"), [
    pytest.param(torch.bfloat16, 100.0, id="bfloat16-100"),
    pytest.param(torch.float16, 1.0, id="float16-1"),
    pytest.param(torch.float16, 100.0, id="float16-100"),
])
def test_low_precision_gradients(dtype: torch.dtype, magnitude: float):
    # float16 gradients with entries ~100 over 1000 coordinates: |g|^2 ~ 1e7 > 65504 (float16 max)
    r = R.rng(0)
    g = r.standard_normal((2, 1000))
    g[1] = -0.5 * g[0] + 0.5 * g[1]
    x = torch.tensor(g * magnitude).to(dtype)
    out = get_integrator(NAME)(x, segments=[400, 600])
    assert out.dtype == dtype and torch.isfinite(out).all()
    expected = get_integrator(NAME)(x.double(), segments=[400, 600])
    assert_close(out.double(), expected, rtol=0.05, atol=0.05 * float(expected.abs().max()))
