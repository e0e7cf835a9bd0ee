"""The contract every registered integrator meets, written once (cf. torchjd's tests/unit/aggregation).

Parametrized over the registry, so a new integrator is covered with its default parameters as
soon as it is registered; ``EXTRA_PARAMS`` adds parameter sets that change the code path. Each
method's own mathematics lives in its own file (test_sum.py, test_mgda.py, ...).

The grid keeps one case per code path, not every combination: k = 1 (pass-through), k = 2 (the
pair formulas) and k = 3 (the general solvers; k = 4 or 5 took the same code), a conflicting and an
aligned draw where the two lead to different solutions (one seed of each, not several of the same
kind), float64 and float32 (the computing dtypes) and float16 / bfloat16 (upcast to float32 in
``_kernels.LOW_PRECISION``), with float16 also beyond its range, scales at both ends of each dtype's
range and around the ``eps`` guards (1e-8), inplace and out of place, segments and empty segments.
Every property runs on every registered integrator and every ``EXTRA_PARAMS`` set.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from framework.integrators import INTEGRATORS, Integration, Integrator, get_integrator
from framework.integrators._torchjd import GramianWeightingIntegrator, MatrixAggregatorIntegrator

from . import _asserts as A
from . import _refs as R

# Parameter sets beyond the defaults that take another code path (a magnitude rule on a method
# without one, and a method without its own; test_magnitude.py has the rule's arithmetic).
EXTRA_PARAMS: dict[str, list[dict]] = {
    "sum": [{"scale": 1.5}],
    "pcgrad": [{"seed": 3}],
    "mgda": [{"magnitude": "restore_gamma"}],
    "mmpareto": [{"rescale": "group"}, {"gamma": 1.0}, {"magnitude": "none"}],
}


def _cases():
    for name in INTEGRATORS:
        yield pytest.param((name, {}), id=name)
        for params in EXTRA_PARAMS.get(name, []):
            suffix = ",".join(f"{k}={v}" for k, v in params.items())
            yield pytest.param((name, params), id=f"{name}({suffix})")


CASES = list(_cases())

# Methods that solve an optimisation problem numerically (or iterate) reproduce themselves only up
# to their solver's tolerance; measured in test_torchjd_adapters.py, with a margin.
SOLVER_RTOL: dict[str, float] = {"cagrad": 1e-8, "nash_mtl": 1e-6, "fairgrad": 1e-6, "sdmgrad": 1e-2}


def solver_rtol(case: tuple[str, dict], rtol: float) -> float:
    return max(rtol, SOLVER_RTOL.get(case[0], 0.0))


def _is_aggregator(integrator: Integrator) -> bool:
    return isinstance(integrator, MatrixAggregatorIntegrator)


@pytest.fixture(params=CASES)
def case(request) -> tuple[str, dict]:
    return request.param


@pytest.fixture
def make(case):
    """A factory of fresh integrators (fresh generator state for pcgrad) for this case."""
    name, params = case
    return lambda: get_integrator(name, **params)


def conflicting(seed: int, k: int, d: int) -> np.ndarray:
    return R.conflicting_pair(seed, d) if k == 2 else R.with_conflict(seed, k, d)


def test_extra_params_name_registered_integrators():
    assert set(EXTRA_PARAMS) <= set(INTEGRATORS)


# ------------------------------------------------------------------ structure


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_output_shape_and_dtype(make, k: int, dtype: torch.dtype):
    rows = R.with_conflict(k, k, sum(R.SIZES)) if k > 1 else R.rng(0).standard_normal((1, sum(R.SIZES)))
    g = torch.tensor(rows, dtype=dtype)
    A.integrate(make(), g, R.SIZES)  # checks update (d,) of g's dtype, gram (k, k), weights (k,)
    result = make().integrate(R.reshape_rows(g, R.SHAPES))
    assert isinstance(result, Integration)
    assert [tuple(t.shape) for t in result.update] == R.SHAPES
    assert all(t.dtype == dtype for t in result.update)
    assert result.decision.weights.shape == (k,)


@pytest.mark.parametrize("seed", [0])
@pytest.mark.parametrize("k", [2, 3])
def test_flat_api_equals_tensor_api(case, make, seed: int, k: int):
    g = torch.tensor(conflicting(seed, k, sum(R.SIZES)))
    flat, flat_decision = make()(g, segments=R.SIZES)
    per_tensor, decision = make().integrate(R.reshape_rows(g, R.SHAPES))
    # reshaped tensors may reduce their norms in another order: equal up to a few ulps
    rtol = solver_rtol(case, 1e-14)
    assert_close(torch.cat([t.reshape(-1) for t in per_tensor]), flat, rtol=rtol, atol=rtol)
    assert_close(decision.gram, flat_decision.gram, rtol=1e-14, atol=1e-14)
    assert_close(decision.weights, flat_decision.weights, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("k", [2, 3])
def test_inplace_equals_out_of_place_and_reuses_storage(make, k: int):
    g = torch.tensor(conflicting(1, k, sum(R.SIZES)))
    expected, expected_decision = make().integrate(R.reshape_rows(g, R.SHAPES))
    lists = R.reshape_rows(g, R.SHAPES)
    out, decision = make().integrate(lists, inplace=True)
    A.assert_same_tensors(out, expected)
    for o, storage in zip(out, lists[0], strict=True):
        assert o.data_ptr() == storage.data_ptr()
    assert torch.equal(decision.weights, expected_decision.weights)
    assert decision.update_norm == expected_decision.update_norm


@pytest.mark.parametrize("k", [1, 3])
def test_out_of_place_leaves_inputs_untouched(make, k: int):
    g = torch.tensor(R.with_conflict(2, k, sum(R.SIZES)) if k > 1 else R.rng(2).standard_normal((1, sum(R.SIZES))))
    copy = g.clone()
    flat, _ = make()(g, segments=R.SIZES)
    assert torch.equal(g, copy) and flat.data_ptr() != g.data_ptr()
    lists = R.reshape_rows(g, R.SHAPES)
    copies = [[t.clone() for t in row] for row in lists]
    out, _ = make().integrate(lists)
    for row, row_copy in zip(lists, copies, strict=True):
        A.assert_same_tensors(row, row_copy)
    assert all(o.data_ptr() != t.data_ptr() for o, t in zip(out, lists[0], strict=True))


# ------------------------------------------------------------------ the decision


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("kind", ["conflict", "aligned"])
def test_decision_fields_match_numpy(make, seed: int, k: int, kind: str):
    g = conflicting(seed, k, sum(R.SIZES)) if kind == "conflict" else R.aligned(seed, k, sum(R.SIZES))
    update, decision = A.run(make(), g, R.SIZES)
    A.assert_decision_matches_numpy(decision, g, update)
    assert decision.weights.shape == (k,) and torch.isfinite(decision.weights).all()


@pytest.mark.parametrize("seed", range(2))  # even: an aligned draw, odd: a conflicting one
@pytest.mark.parametrize("k", [2, 3])
def test_update_is_a_nonnegative_multiple_of_the_weighted_direction(make, seed: int, k: int):
    # Decision.weights are the coefficients of d = sum_i w_i g_i; the update is d on every tensor
    # when there is no magnitude rule, else s_p d_p with s_p >= 0.
    g = conflicting(seed + 10, k, sum(R.SIZES)) if seed % 2 else R.aligned(seed, k, sum(R.SIZES))
    integrator = make()
    if _is_aggregator(integrator):
        pytest.skip("its update is not a weighting of the gradients (weights are a least-squares projection)")
    update, decision = A.run(integrator, g, R.SIZES)
    exact = integrator.magnitude is None
    A.assert_update_along_direction(g, R.SIZES, update, R.as_np(decision.weights), exact=exact)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_single_loss_passes_through_with_weight_one(make, dtype: torch.dtype):
    # docs/mmpareto.md step 6: a parameter one loss reaches gets its plain gradient (no gamma, no scale).
    g = torch.tensor(R.rng(1).standard_normal((1, sum(R.SIZES))), dtype=dtype)
    update, decision = A.integrate(make(), g, R.SIZES)
    assert torch.equal(update, g[0])
    assert decision.weights.tolist() == [1.0]
    np.testing.assert_allclose(decision.update_norm, float(g.double().norm()), rtol=1e-6)
    lists = R.reshape_rows(g, R.SHAPES)
    out, _ = make().integrate(lists, inplace=True)
    assert all(o is t for o, t in zip(out, lists[0], strict=True))


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("k", [2, 3])
def test_no_loss_is_special_unless_the_first_is_primary(case, make, seed: int, k: int):
    # Reordering the losses reorders the weights and leaves the update as it is, unless the method
    # declares a primary first loss (then moving another loss first changes the update).
    if "seed" in inspect.signature(type(make()).__init__).parameters:
        pytest.skip("draws random numbers (its seed): reordered inputs meet other draws")
    g = conflicting(seed + 20, k, sum(R.SIZES))
    order = np.roll(np.arange(k), 1)  # every loss moves; the last one comes first
    base, decision = A.run(make(), g, R.SIZES)
    out, reordered = A.run(make(), g[order], R.SIZES)
    if make().first_loss_is_primary:
        assert not np.allclose(out, base, rtol=1e-3, atol=0.0), "a primary first loss: the order matters"
        return
    rtol = solver_rtol(case, 1e-10)
    np.testing.assert_allclose(out, base, **A.tol(base, rtol))
    weights = R.as_np(decision.weights)
    np.testing.assert_allclose(R.as_np(reordered.weights), weights[order], **A.tol(weights, rtol))


# ------------------------------------------------------------------ numerics


def _scale_params():
    for dtype, scales in (
        # both ends of the dtype's range (squares under- or overflow) and both sides of the 1e-8 guards
        (torch.float64, [1e-150, 1e-8, 1e8, 1e150]),
        (torch.float32, [1e-30, 1e-8, 1e8, 1e20]),
    ):
        for scale in scales:
            yield pytest.param(dtype, scale, id=f"{str(dtype)[6:]}-{scale:g}")


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize(("dtype", "scale"), list(_scale_params()))
def test_scale_equivariance(request, case, make, dtype: torch.dtype, scale: float, k: int):
    # f(c g) = c^h f(g) with h the integrator's declared scale_degree (1: only ratios of inner products).
    degree = make().scale_degree
    if degree is None:
        pytest.skip("the update depends on the gradients' scale (scale_degree None, measured in its own tests)")
    if case[0] == "pcd":
        pytest.skip("pcd adds eps=1e-8 to |g|^2: degree 1 only where |g|^2 >> eps (tested in test_torchjd_adapters.py)")
    if (
        getattr(make(), "random", False)
        and dtype != torch.float64
        and not isinstance(make(), GramianWeightingIntegrator)
    ):
        pytest.skip("draws its random numbers in the gradients' dtype: float32 and float64 draw differently")
    g = conflicting(11, k, sum(R.EDGE_SIZES))
    base, _ = A.run(make(), g, R.EDGE_SIZES)
    out, _ = A.run(make(), torch.tensor(g * scale, dtype=dtype), R.EDGE_SIZES)
    rtol = solver_rtol(case, 1e-12 if dtype == torch.float64 else 1e-5)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out / scale**degree, base, rtol=rtol, atol=rtol * np.abs(base).max())


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize(
    ("dtype", "magnitude"),
    [
        # bfloat16 has float32's range: a magnitude of 100 took the same path as 1; float16's does not
        pytest.param(torch.bfloat16, 1.0, id="bfloat16-1"),
        pytest.param(torch.float16, 1.0, id="float16-1"),
        pytest.param(torch.float16, 100.0, id="float16-100"),
    ],
)
def test_low_precision_gradients(make, dtype: torch.dtype, magnitude: float, k: int):
    if getattr(make(), "random", False) and not isinstance(make(), GramianWeightingIntegrator):
        pytest.skip("draws its random numbers in the gradients' dtype: half and float64 draw differently")
    # float16 gradients with entries ~100 over 1000 coordinates: |g|^2 ~ 1e7 > 65504 (float16 max)
    r = R.rng(0)
    g = r.standard_normal((k, 1000))
    g[1] = -0.5 * g[0] + 0.5 * g[1]
    x = torch.tensor(g * magnitude).to(dtype)
    out, decision = A.integrate(make(), x, [400, 600])
    assert torch.isfinite(out).all() and torch.isfinite(decision.weights).all()
    expected, _ = make()(x.double(), segments=[400, 600])  # the same (rounded) input, in float64
    assert_close(out.double(), expected, rtol=0.05, atol=0.05 * float(expected.abs().max()))


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("edge", R.EDGE_NAMES)
def test_edge_cases_are_finite(case, make, edge: str, dtype: torch.dtype, k: int):
    if case[0] == "excess_mtl" and edge == "huge" and dtype == torch.float32:
        pytest.skip("torchjd's ExcessMTL accumulates squared gradient entries, which overflow float32 here")
    g = R.edge_case(edge, dtype, k=k)
    update, decision = A.integrate(make(), g, R.EDGE_SIZES)
    assert torch.isfinite(update).all()
    assert torch.isfinite(decision.weights).all() and torch.isfinite(decision.gram).all()
    assert np.isfinite(decision.update_norm) and np.isfinite(decision.sum_norm)
    assert torch.isfinite(decision.cosine).all()


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("grads", "segments"),
    [
        (torch.zeros(5), None),  # not (k, d)
        (torch.zeros(0, 5), None),  # k = 0
        (torch.zeros(2, 3, 4), None),
        (torch.zeros(2, 5), [2, 2]),  # segments do not sum to d
        (torch.zeros(2, 5), [6, -1]),  # negative segment
    ],
)
def test_bad_shapes_raise_one_line_value_error(make, grads: torch.Tensor, segments):
    with pytest.raises(ValueError) as info:
        make()(grads, segments=segments)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("lists", [[], [[], []]], ids=["no-loss", "no-tensor"])
def test_empty_tensor_lists_raise_one_line_value_error(make, lists):
    with pytest.raises(ValueError) as info:
        make().integrate(lists)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("segments", [[2, 0, 1], [0, 2, 1, 0]])
def test_empty_segment_is_allowed(make, segments):
    g = torch.tensor([[1.0, 2.0, 0.5], [-2.0, 1.0, 0.1]], dtype=torch.float64)
    with_empty, _ = make()(g, segments=segments)
    without, _ = make()(g, segments=[2, 1])
    assert torch.isfinite(with_empty).all()
    assert torch.equal(with_empty, without)


# ------------------------------------------------------------------ state, capabilities, hparams


def test_state_dict_round_trip_reproduces_the_next_updates(make):
    gs = [torch.tensor(R.with_conflict(s, 4, 8)) for s in range(6)]
    integrator = make()
    integrator(gs[0])
    state = integrator.state_dict()
    first = [integrator(g) for g in gs[1:]]
    integrator.load_state_dict(state)  # the state is a snapshot: later calls did not change it
    again = [integrator(g) for g in gs[1:]]
    fresh = make()
    fresh(gs[-1])  # a different history
    fresh.load_state_dict(state)
    other = [fresh(g) for g in gs[1:]]
    for a, b, c in zip(first, again, other, strict=True):
        assert torch.equal(a.update, b.update) and torch.equal(a.update, c.update)
        assert torch.equal(a.decision.weights, b.decision.weights)


def test_does_not_touch_global_rng(make):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    make()(torch.tensor(R.with_conflict(0, 4, 6)))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("k", [2, 3])
def test_fixed_combination_is_the_update(make, k: int):
    integrator = make()
    weights = integrator.fixed_combination(k)
    if integrator.magnitude is not None:
        assert weights is None
    if weights is None:
        return
    assert weights.shape == (k,) and weights.dtype == torch.float64
    for g in (R.with_conflict(k, k, sum(R.SIZES)), R.aligned(k, k, sum(R.SIZES))):
        update, decision = A.run(integrator, g, R.SIZES)
        np.testing.assert_allclose(update, R.as_np(weights) @ g, rtol=1e-14, atol=1e-14 * np.abs(g).max())
        assert torch.equal(decision.weights, weights)


def test_fixed_combination_of_one_loss_is_its_plain_gradient(request, make):
    # A single loss passes through with weight [1]; a fixed combination for k = 1 should say so.
    integrator = make()
    weights = integrator.fixed_combination(1)
    assert weights is None or weights.tolist() == [1.0]
    g = R.rng(3).standard_normal((1, 7))
    update, _ = A.run(integrator, g)
    assert weights is None or np.array_equal(update, R.as_np(weights) @ g)


def test_hparams_rebuild_the_integrator_and_label(case, make):
    name, params = case
    integrator = make()
    assert isinstance(integrator, Integrator) and integrator.name == name
    rebuilt = get_integrator(name, **integrator.hparams())
    assert rebuilt.hparams() == integrator.hparams()
    assert rebuilt.label() == integrator.label() and repr(rebuilt) == repr(integrator)
    label = integrator.label()
    assert label == name or (label.startswith(f"{name}(") and label.endswith(")"))
    if not params:
        assert label == name
    for key in params:
        shown = integrator.label_params is None or key in integrator.label_params
        assert (f"{key}=" in label) == shown, (key, label)
