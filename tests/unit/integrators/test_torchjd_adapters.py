"""Every torchjd adapter against torchjd's own aggregator on the same ``(k, d)`` float64 matrix.

One table, ``CASES``: for each adapter, the torchjd reference built for ``k`` losses and the
largest relative distance ``|update - torchjd| / |torchjd|`` allowed, with the reason. Each test
runs a sequence of 5 calls on a fresh adapter and a fresh reference (so that stateful methods are
compared along a trajectory), for k = 2, 3, 5, conflicting and aligned gradients. Random methods
run the reference under ``torch.manual_seed(seed)`` (the global RNG, restored afterwards) and the
adapter with ``seed=seed``: its private generator starts from the same state. Method-specific
mathematics lives in test_<name>.py; the registry-wide contract in test_contract.py.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torchjd.aggregation as tjd

from framework.integrators import INTEGRATORS, get_integrator

from . import _refs as R

# cvxpy's notice on torchjd's own NashMTL (the references); the adapter silences it itself
pytestmark = pytest.mark.filterwarnings("ignore:You are solving a parameterized problem that is not DPP")


@dataclass(frozen=True)
class Case:
    reference: Callable[[int], Callable[[torch.Tensor], torch.Tensor]]
    rtol: float
    why: str = "same computation on the same float64 numbers (rounding only)"
    stateful: bool = False  # per_group_state: EMAs, warm starts, step counters, or a generator state
    random: bool = False


def _gramian(weighting: Callable[[], tjd.Weighting]) -> Callable[[int], tjd.Aggregator]:
    return lambda k: tjd.GramianWeightedAggregator(weighting())


CASES: dict[str, Case] = {
    "dualproj": Case(
        lambda k: tjd.DualProj(),
        1e-12,
        "quadprog on the trace-normalised Gramian, which torchjd normalises too; measured 2.8e-15",
    ),
    "cagrad": Case(
        lambda k: tjd.CAGrad(c=0.5),
        1e-8,
        "cvxpy/CLARABEL interior point: rounding differences of the Gramian move its solution; measured 3.9e-10",
    ),
    "nash_mtl": Case(
        lambda k: tjd.NashMTL(n_tasks=k),
        1e-5,
        "ECOS on L L^T instead of J J^T (the same Gramian up to rounding, which the iterated solver amplifies); "
        "measured 4.7e-7; exact against torchjd given L: test_nash_mtl.py",
        stateful=True,
    ),
    "imtl_g": Case(lambda k: tjd.IMTLG(), 1e-11, "pinv of the trace-normalised Gramian; measured 1.3e-13"),
    "aligned_mtl": Case(lambda k: tjd.AlignedMTL(), 1e-12, "eigh of the Gramian; measured 3.8e-14"),
    "gradvac": Case(
        lambda k: tjd.GradVac(),
        1e-6,
        "eps = 1e-8 applies to the trace-normalised Gramian here (norms ~0.3 instead of ~1-3); measured 2.0e-7; "
        "exact against torchjd on the normalised Gramian: test_gradvac.py",
        stateful=True,
        random=True,
    ),
    "config": Case(
        lambda k: tjd.ConFIG(), 1e-13, "torchjd on the matrix divided by a power of two (exact); measured 0"
    ),
    "graddrop": Case(
        lambda k: tjd.GradDrop(), 1e-13, "same draws, same float64 arithmetic; measured 0", stateful=True, random=True
    ),
    "fairgrad": Case(
        lambda k: tjd.FairGrad(alpha=1.0),
        1e-5,
        "scipy least_squares on the trace-normalised Gramian, rescaled: both stop at the solver's tolerance; "
        "measured 8.4e-7 (the adapter's residual is the smaller one: test_fairgrad.py)",
    ),
    "excess_mtl": Case(
        lambda k: tjd.ExcessMTL(n_warmup_steps=1),
        1e-13,
        "one warm-up call (our default, the official code's first call); same matrix, same arithmetic; "
        "measured 2.4e-16",
        stateful=True,
    ),
    "pcd": Case(lambda k: tjd.PCD(), 1e-13, "same Gramian, same active-set solver; measured 4.5e-16", stateful=True),
    "trimmed_mean": Case(
        lambda k: tjd.TrimmedMean(trim_number=(k - 1) // 2), 1e-13, "default trim (k - 1) // 2; measured 0"
    ),
    "random": Case(lambda k: tjd.Random(), 1e-13, "same float64 draws; measured 2.7e-16", stateful=True, random=True),
    "mean": Case(lambda k: tjd.Mean(), 1e-13, "measured 2.0e-16"),
    "cr_mogm": Case(
        _gramian(lambda: tjd.CRMOGMWeighting(tjd.MGDAWeighting())),
        1e-12,
        "Frank-Wolfe MGDA on the trace-normalised Gramian (scale-free steps); measured 1.7e-15",
        stateful=True,
    ),
    "modo": Case(_gramian(tjd.MoDoWeighting), 1e-12, "measured 3.6e-15", stateful=True),
    "sdmgrad": Case(
        _gramian(tjd.SDMGradWeighting),
        1e-3,
        "its inner SGD (lr 10, momentum) amplifies the 1e-10 relative change that normalising the Gramian makes "
        "to its +1e-8 term about 1e6 times; measured 2.3e-4; exact against torchjd on the normalised Gramian: "
        "test_sdmgrad.py",
        stateful=True,
    ),
}

NAMES = list(CASES)
STATEFUL = [n for n in NAMES if CASES[n].stateful]
RANDOM = [n for n in NAMES if CASES[n].random]


def matrices(kind: str, seed: int, k: int, steps: int = 5, d: int = 12) -> list[torch.Tensor]:
    make = R.with_conflict if kind == "conflict" else R.aligned
    return [torch.tensor(make(seed * 100 + step, k, d)) for step in range(steps)]


def reference_updates(name: str, gs: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    reference = CASES[name].reference(gs[0].shape[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [reference(g) for g in gs]


def adapter(name: str, seed: int = 0, **params):
    if CASES[name].random:
        params["seed"] = seed
    return get_integrator(name, **params)


def assert_close_relative(out: torch.Tensor, expected: torch.Tensor, rtol: float, what: str = "") -> None:
    distance = float((out - expected).norm())
    assert distance <= rtol * float(expected.norm()) + 1e-300, (what, distance / float(expected.norm()))


def test_cases_cover_every_torchjd_adapter():
    from framework.integrators._torchjd import _TorchJDIntegrator

    adapters = {n for n, cls in INTEGRATORS.items() if issubclass(cls, _TorchJDIntegrator)}
    assert adapters - {"upgrad"} == set(NAMES)  # upgrad: test_upgrad.py
    for name in NAMES:
        assert CASES[name].stateful == INTEGRATORS[name].per_group_state, name
        assert CASES[name].random == INTEGRATORS[name].random, name


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("kind", ["conflict", "aligned"])
@pytest.mark.parametrize("name", NAMES)
def test_matches_torchjd_over_five_calls(name: str, kind: str, k: int, seed: int):
    gs = matrices(kind, seed, k)
    expected = reference_updates(name, gs, seed)
    integrator = adapter(name, seed)
    for step, (g, e) in enumerate(zip(gs, expected, strict=True)):
        out, decision = integrator(g, segments=[5, 7])
        assert out.dtype == torch.float64 and torch.isfinite(out).all()
        assert_close_relative(out, e, CASES[name].rtol, f"{name} step {step}: {CASES[name].why}")
        assert decision.weights.shape == (k,)


@pytest.mark.parametrize("name", NAMES)
def test_three_loss_group_through_the_tensor_api(name: str):
    # the per-tensor API (what the engine calls) on a 3-loss group equals torchjd on the flat matrix
    gs = matrices("conflict", 7, 3, steps=3, d=sum(R.SIZES))
    expected = reference_updates(name, gs, 7)
    integrator = adapter(name, 7)
    for g, e in zip(gs, expected, strict=True):
        update, decision = integrator.integrate(R.reshape_rows(g, R.SHAPES))
        assert [tuple(t.shape) for t in update] == R.SHAPES
        flat = torch.cat([t.reshape(-1) for t in update])
        assert_close_relative(flat, e, CASES[name].rtol, name)
        assert decision.weights.shape == (3,) and torch.isfinite(decision.weights).all()


@pytest.mark.parametrize("name", STATEFUL + [n for n in RANDOM if n not in STATEFUL])
def test_state_dict_resumes_exactly_through_torch_save(name: str):
    gs = matrices("conflict", 2, 3, steps=6)  # seed 2: SDMGrad's state still shows after 2 steps
    integrator = adapter(name, 5)
    for g in gs[:2]:
        integrator(g)
    buffer = io.BytesIO()
    torch.save(integrator.state_dict(), buffer)  # the trainer's checkpoint path
    continued = [integrator(g).update for g in gs[2:]]
    buffer.seek(0)
    resumed = adapter(name, 5)
    resumed(gs[5])  # another history, overwritten by the load
    resumed.load_state_dict(torch.load(buffer, weights_only=True))  # tensors and plain values only
    for g, expected in zip(gs[2:], continued, strict=True):
        assert torch.equal(resumed(g).update, expected)
    # the state matters: a fresh integrator's next updates differ
    fresh = adapter(name, 5)
    assert any(not torch.equal(fresh(g).update, e) for g, e in zip(gs[2:], continued, strict=True)), name


@pytest.mark.parametrize("name", STATEFUL)
def test_state_loads_into_an_integrator_never_called(name: str):
    """The resume path: a group's integrator is built fresh and loaded before its first call
    (Nash-MTL then has no solver problem yet, and builds it from the loaded state)."""
    gs = matrices("conflict", 2, 3, steps=5)
    integrator = adapter(name, 5)
    for g in gs[:2]:
        integrator(g)
    buffer = io.BytesIO()
    torch.save(integrator.state_dict(), buffer)
    buffer.seek(0)
    resumed = adapter(name, 5)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for g in gs[2:]:
        assert torch.equal(resumed(g).update, integrator(g).update)


@pytest.mark.parametrize("name", NAMES)
def test_every_adapters_state_loads_with_weights_only(name: str):
    integrator = adapter(name, 5)
    integrator(matrices("conflict", 4, 3, steps=1)[0])
    buffer = io.BytesIO()
    torch.save(integrator.state_dict(), buffer)
    buffer.seek(0)
    adapter(name, 5).load_state_dict(torch.load(buffer, weights_only=True))


@pytest.mark.parametrize("name", ["gradvac", "nash_mtl"])
def test_a_checkpoint_holding_the_torchjd_module_still_loads(name: str):
    import copy

    gs = matrices("conflict", 3, 3, steps=5)
    integrator = adapter(name, 5)
    for g in gs[:2]:
        integrator(g)
    old = {"module": copy.deepcopy(integrator.module), **integrator.state_dict()}
    del old["module_state"]
    resumed = adapter(name, 5)
    resumed.load_state_dict(old)
    for g in gs[2:]:
        assert torch.equal(resumed(g).update, integrator(g).update)


@pytest.mark.parametrize("name", STATEFUL)
def test_stateful_methods_depend_on_history_and_copy_per_group(name: str):
    assert INTEGRATORS[name].per_group_state
    shared = adapter(name)
    group_a, group_b = shared.for_group(), shared.for_group()
    assert group_a is not shared and group_b is not group_a
    ga = matrices("conflict", 1, 2, steps=4)
    gb = matrices("conflict", 2, 3, steps=4)
    alone_a = adapter(name)
    expected_a = [alone_a(g).update for g in ga]
    for g_a, g_b, e in zip(ga, gb, expected_a, strict=True):  # interleaved groups (k = 2 and k = 3)
        assert torch.equal(group_a(g_a).update, e)
        assert group_b(g_b).update.shape == (12,)
    # the state matters: on some step, the update differs from a fresh integrator's on the same input
    fresh = [adapter(name)(g).update for g in ga[1:]]
    assert any(not torch.allclose(f, e, rtol=1e-9) for f, e in zip(fresh, expected_a[1:], strict=True)), name


@pytest.mark.parametrize("name", RANDOM)
def test_random_methods_follow_their_seed(name: str):
    gs = matrices("conflict", 4, 3, steps=3)
    a = [adapter(name, 1)(g).update for g in gs]
    b = [adapter(name, 1)(g).update for g in gs]
    c = [adapter(name, 2)(g).update for g in gs]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, z) for x, z in zip(a, c, strict=True))
    integrator = adapter(name, 1)
    assert integrator.hparams()["seed"] == 1 and "seed" not in integrator.label()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    integrator(gs[0])
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is left alone


SCALE_DEGREES = {
    "dualproj": 1,
    "cagrad": 1,
    "nash_mtl": None,
    "imtl_g": 1,
    "aligned_mtl": 1,
    "gradvac": 1,
    "config": 1,
    "graddrop": 1,
    "fairgrad": 0,
    "excess_mtl": None,
    "pcd": 1,
    "trimmed_mean": 1,
    "random": 1,
    "mean": 1,
    "cr_mogm": 1,
    "modo": None,
    "sdmgrad": 1,
}
# Relative tolerance of update(c g) = c^h update(g) over c in 1e-6 .. 1e6, float64, and why (default 1e-12).
SCALE_RTOL = {
    "cagrad": 1e-9,  # CLARABEL on Gramians equal up to rounding; measured 2e-11
    "fairgrad": 1e-10,  # least_squares tolerance; measured 3e-14
}


def scale_rtol(name: str, c: float) -> float:
    if name == "pcd":  # eps = 1e-8 is added to the EMA of |g|^2 (~ 10 c^2 here): relative effect ~ 1e-9 / c^2
        return 1e-1 if c < 1e-3 else 1e-3
    return SCALE_RTOL.get(name, 1e-12)


def test_scale_degrees_are_declared():
    # on instances: fairgrad's depends on its alpha (default 1: degree 0)
    assert {n: get_integrator(n).scale_degree for n in NAMES} == SCALE_DEGREES


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", [n for n in NAMES if SCALE_DEGREES[n] is not None])
def test_scale_degree_holds(name: str, k: int):
    g = torch.tensor(R.with_conflict(21, k, 12))
    base = adapter(name)(g).update
    for c in (1e-6, 1e-3, 0.37, 1e3, 1e6):
        h = get_integrator(name).scale_degree
        out = adapter(name)(g * c).update
        assert_close_relative(out / c**h, base, scale_rtol(name, c), f"{name} c={c}")


@pytest.mark.parametrize(
    ("name", "c", "calls"),
    # excess_mtl's first (warm-up) call is uniform; from the second, its 1e-7 terms break the degree
    [("nash_mtl", 1e3, 1), ("excess_mtl", 1e-4, 2), ("modo", 1e3, 1)],
)
def test_scale_dependent_methods_do_depend_on_scale(name: str, c: float, calls: int):
    # scale_degree None is a measured fact, not a default: no degree h in {0, 1} fits
    g = torch.tensor(R.with_conflict(21, 3, 12))
    base_integrator, scaled_integrator = adapter(name), adapter(name)
    for _ in range(calls):
        base = base_integrator(g).update
        out = scaled_integrator(g * c).update
    for h in (0, 1):
        assert float((out / c**h - base).norm()) > 1e-6 * float(base.norm()), h


@pytest.mark.parametrize("name", NAMES)
def test_float32_gradients_close_to_float64(name: str):
    g = torch.tensor(R.with_conflict(5, 3, 64))
    expected = adapter(name)(g).update
    out, _ = adapter(name)(g.float())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    if name in ("graddrop",):  # torchjd draws its thresholds in the matrix's dtype: other draws
        return
    rtol = {"sdmgrad": 5e-2, "nash_mtl": 1e-3, "fairgrad": 1e-4, "cagrad": 1e-4}.get(name, 1e-4)
    assert_close_relative(out.double(), expected, rtol, name)


def test_graddrop_float32_draws_differ_from_float64_ones():
    # documented behaviour, not a wish: torch.rand in float32 and float64 are different streams
    g = torch.tensor(R.with_conflict(5, 3, 64))
    a = adapter("graddrop")(g).update
    b = adapter("graddrop")(g.float()).update.double()
    assert not torch.allclose(a, b, rtol=1e-4)
    assert np.isfinite(b.numpy()).all()
