"""torchjd's aggregator properties, applied to the framework's integrators on torchjd's own matrices.

torchjd (TorchJD/torchjd@46962c2be7788503c151007fa013f761a6238ef2) states five empirical
properties of an aggregator ``A`` of a matrix ``J`` (rows: the losses' gradients) in
``tests/unit/aggregation/_asserts.py``:

- expected structure (``_asserts.py:11-21``): ``A(J)`` has ``J``'s column count, finite entries;
- non-conflicting (``_asserts.py:24-35``): ``J A(J) >= 0`` (the positive part of ``J A(J)`` has its norm);
- permutation invariance (``_asserts.py:38-60``): permuting the rows of ``J`` leaves ``A(J)`` alone;
- linear under scaling (``_asserts.py:63-83``): ``A(diag(a c1 + b c2) J) = a A(diag(c1) J) + b A(diag(c2) J)``
  for positive ``c1, c2, a, b``;
- strongly stationary (``_asserts.py:86-101``): ``A(J) != 0`` (norm above a threshold) whenever ``J``
  is not strongly stationary (no ``w > 0`` with ``J^T w = 0``).

The properties are re-stated below (own code), with torchjd's tolerances, and applied through the
framework's flat API (``integrator(J)``, one parameter tensor, so ``rescale`` tensor and group
coincide) with the structure checks of ``tests/unit/integrators/_asserts.py`` (``integrate``).
The matrices are torchjd's (``tests/unit/aggregation/_inputs.py:7-57``, drawn by the samplers of
``_matrix_samplers.py:38-163`` from ``torch.Generator().manual_seed(0)`` in float32, torchjd's
default test dtype, ``tests/settings.py``), re-drawn here in the same order and used in float32
as torchjd's tests use them (in float64 torchjd's own UPGrad misses its linear-under-scaling
tolerance of 6e-2 on the ``4 x 3`` rank-3 matrix: 0.147, against 0.040 in float32). :data:`PROPERTIES` records, for every integrator and magnitude choice, which property
holds (and is tested) and why the others do not; :data:`COUNTER_EXAMPLES` shows on these matrices
that some of those "does not hold" are real.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.nn.functional import normalize
from torch.testing import assert_close

from tests.unit.integrators import _asserts as A
from framework.integrators import INTEGRATORS, Integrator, get_integrator
from framework.integrators.min_norm import MAX_EXACT_LOSSES

TORCHJD = "TorchJD/torchjd@46962c2be7788503c151007fa013f761a6238ef2"


# ---------------------------------------------------------------- torchjd's matrices (_matrix_samplers.py)


def _complement(q: Tensor, rng: torch.Generator) -> Tensor:
    """A random semi-orthonormal ``[m, m - k]`` matrix orthogonal to ``q`` (``_matrix_samplers.py:148-163``)."""
    m, k = q.shape
    a = torch.randn([m, m - k], generator=rng)
    return torch.linalg.qr(a - q @ (q.T @ a))[0]


def _orthonormal(dim: int, rng: torch.Generator) -> Tensor:
    return _complement(torch.zeros([dim, 0]), rng)


def _singular_values(rank: int, rng: torch.Generator) -> Tensor:
    return torch.diag(torch.abs(torch.randn([rank], generator=rng)))


def normal_matrix(m: int, n: int, rank: int, rng: torch.Generator) -> Tensor:
    """``NormalSampler`` (``_matrix_samplers.py:38-46``)."""
    u, vt = _orthonormal(m, rng), _orthonormal(n, rng)
    return u[:, :rank] @ _singular_values(rank, rng) @ vt[:rank, :]


def strong_matrix(m: int, n: int, rank: int, rng: torch.Generator) -> Tensor:
    """``StrongSampler`` (``_matrix_samplers.py:49-72``): ``v^T J = 0`` for a positive ``v``."""
    v = torch.abs(torch.randn([m], generator=rng))
    u2 = _complement(normalize(v, dim=0).unsqueeze(1), rng)
    vt = _orthonormal(n, rng)
    return u2[:, :rank] @ _singular_values(rank, rng) @ vt[:rank, :]


def strictly_weak_matrix(m: int, n: int, rank: int, rng: torch.Generator) -> Tensor:
    """``StrictlyWeakSampler`` (``_matrix_samplers.py:75-114``): weakly, not strongly, stationary."""
    u = torch.abs(torch.randn([m], generator=rng))
    split = int(torch.randint(1, m, [], generator=rng).item())
    shuffled = torch.randperm(m, generator=rng)
    v, v_prime = torch.zeros(m), torch.zeros(m)
    v[shuffled[:split]] = normalize(u[shuffled[:split]], dim=0)
    v_prime[shuffled[split:]] = normalize(u[shuffled[split:]], dim=0)
    u1 = torch.stack([v, v_prime]).T
    full = torch.hstack([u1, _complement(u1, rng)])
    vt = _orthonormal(n, rng)
    return full[:, 1 : rank + 1] @ _singular_values(rank, rng) @ vt[:rank, :]


def non_weak_matrix(m: int, n: int, rank: int, rng: torch.Generator) -> Tensor:
    """``NonWeakSampler`` (``_matrix_samplers.py:117-139``): not even weakly stationary."""
    u = torch.abs(torch.randn([m], generator=rng))
    u1 = normalize(u, dim=0).unsqueeze(1)
    full = torch.hstack([u1, _complement(u1, rng)])
    vt = _orthonormal(n, rng)
    return full[:, :rank] @ _singular_values(rank, rng) @ vt[:rank, :]


def _draw() -> dict[str, list[Tensor]]:
    """``_inputs.py:7-57``: the same dims, the same generator, the same order of draws."""
    rng = torch.Generator().manual_seed(0)
    normal_dims = [(1, 1, 1), (4, 3, 1), (4, 3, 2), (4, 3, 3), (9, 11, 5), (9, 11, 9)]
    stationarity_dims = [(20, 10, 10), (20, 10, 5), (20, 10, 1), (20, 100, 1), (20, 100, 19)]
    normal = [normal_matrix(*d, rng) for d in normal_dims]
    zero = [torch.zeros([m, n]) for m, n in [(1, 1), (4, 3), (9, 11)]]
    strong = [strong_matrix(*d, rng) for d in stationarity_dims]
    strictly_weak = [strictly_weak_matrix(*d, rng) for d in stationarity_dims]
    non_weak = [non_weak_matrix(*d, rng) for d in stationarity_dims]
    nash = [normal_matrix(*d, rng) for d in [(3, 1, 1), (4, 3, 1), (4, 3, 2), (4, 3, 3), (9, 11, 5), (9, 11, 9)]]
    scaled = [scale * m for scale in [0.0, 1e-10, 1e3, 1e5, 1e10, 1e15] for m in normal]
    return {
        "scaled": scaled,
        "typical": zero + normal + strong + strictly_weak + non_weak,
        "non_strong": strictly_weak + non_weak,
        "nash_mtl": nash,
    }


MATRICES = _draw()


def test_the_matrices_have_torchjds_structure():
    """The re-drawn matrices have torchjd's shapes and ranks (float32: rank up to a relative 1e-5)."""
    typical = MATRICES["typical"]
    expected = [(1, 1, 0), (4, 3, 0), (9, 11, 0), (1, 1, 1), (4, 3, 1), (4, 3, 2), (4, 3, 3), (9, 11, 5), (9, 11, 9)]
    expected += [(20, 10, 10), (20, 10, 5), (20, 10, 1), (20, 100, 1), (20, 100, 19)] * 3
    assert [(*m.shape, int(torch.linalg.matrix_rank(m, rtol=1e-5))) for m in typical] == expected


# ---------------------------------------------------------------- the properties (_asserts.py)


def update(integrator: Integrator, matrix: Tensor) -> Tensor:
    """``A(J)``: the integrator through the flat API, with the project's structure checks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cvxpy's and ECOS's solver warnings
        out, _ = A.integrate(integrator, matrix)
    return out


def check_expected_structure(make: Callable[[], Integrator], matrix: Tensor, tol: float) -> None:
    """``_asserts.py:11-21`` (the shape and dtype checks are ``A.integrate``'s)."""
    assert update(make(), matrix).isfinite().all()


def check_non_conflicting(make: Callable[[], Integrator], matrix: Tensor, tol: float) -> None:
    """``_asserts.py:24-35`` (atol = rtol = ``tol``; torchjd's default 4e-4)."""
    inner = matrix @ update(make(), matrix)
    assert_close(inner[inner >= 0].norm(), inner.norm(), atol=tol, rtol=tol)


def check_permutation_invariant(make: Callable[[], Integrator], matrix: Tensor, tol: float) -> None:
    """``_asserts.py:38-60``: random row permutations (atol = rtol = ``tol``; torchjd's 1e-4), three
    instead of torchjd's five (runtime)."""
    generator = torch.Generator().manual_seed(1)
    expected = update(make(), matrix)
    for _ in range(3):
        permuted = matrix[torch.randperm(matrix.shape[0], generator=generator)]
        assert_close(update(make(), permuted), expected, atol=tol, rtol=tol)


def check_linear_under_scaling(make: Callable[[], Integrator], matrix: Tensor, tol: float) -> None:
    """``_asserts.py:63-83``: draws of ``c1, c2`` (per row) and ``a, b`` in ``[0, 1)``, two instead of
    torchjd's five (runtime)."""
    generator = torch.Generator().manual_seed(2)
    for _ in range(2):
        c1, c2 = (torch.rand(matrix.shape[0], generator=generator, dtype=matrix.dtype) for _ in range(2))
        a, b = (torch.rand([], generator=generator, dtype=matrix.dtype) for _ in range(2))
        x1 = update(make(), torch.diag(c1) @ matrix)
        x2 = update(make(), torch.diag(c2) @ matrix)
        x = update(make(), torch.diag(a * c1 + b * c2) @ matrix)
        assert_close(x, a * x1 + b * x2, atol=tol, rtol=tol)


def check_strongly_stationary(make: Callable[[], Integrator], matrix: Tensor, tol: float) -> None:
    """``_asserts.py:86-101``: ``|A(J)| > tol`` (torchjd's threshold 5e-3) on a non-strongly-stationary ``J``."""
    assert float(update(make(), matrix).norm()) > tol


CHECKS = {
    "expected_structure": (check_expected_structure, ("scaled", "typical"), 0.0),
    "non_conflicting": (check_non_conflicting, ("typical",), 4e-4),
    "permutation_invariant": (check_permutation_invariant, ("typical",), 1e-4),
    "linear_under_scaling": (check_linear_under_scaling, ("typical",), 1e-4),
    "strongly_stationary": (check_strongly_stationary, ("non_strong",), 5e-3),
}


# ---------------------------------------------------------------- which property holds for which integrator

S, NC, PI, LS, SS = CHECKS  # the property names, in CHECKS's order

NOT_CLAIMED = "not claimed by torchjd's tests or the method's paper"
RANDOM = "draws random numbers (seeded): a permuted or rescaled input meets other draws"
MIN_NORM_ZERO = (
    "the min-norm point is 0 at every weakly stationary J, strictly weak ones included (torchjd's "
    "non-strong matrices have 20 rows, beyond the exact min-norm solver's 10: not run here)"
)
NOT_LINEAR = "the weights depend on the gradients' directions and norms: not linear in the row scales"
ENLARGE_NOT_LINEAR = "the magnitude rule's scale max(1, |u|/|d|) depends on the rows' scales: not linear"
SUM_CONFLICTS = "the sum conflicts with a loss whose gradient is outweighed (g_1 = -2 g_0)"
IMTL_G_FLOAT32 = (
    "claimed (torchjd test_imtl_g.py) and true for float64 inputs (permutations move the update by "
    "6e-16), but not for float32 rank-deficient J: the framework takes a float64 pinv of a Gram "
    "accumulated in float32, inverting singular values at float32's round-off; on the 20 x 10 "
    "non-weakly-stationary rank-5 matrix a permutation moves the update by 0.31 (torchjd's float32 "
    "IMTLG: 4.5e-8)"
)
DESCENT_SWITCH = (
    "gamma * sum where the sum is a common descent direction, the sum elsewhere (magnitude.py): "
    "not linear across that switch"
)


def _row(entries: dict[str, bool | str] | None = None) -> dict[str, bool | str]:
    """A table row: ``True`` where the property holds (and is tested), else why not."""
    return {S: True, NC: NOT_CLAIMED, PI: NOT_CLAIMED, LS: NOT_CLAIMED, SS: NOT_CLAIMED, **(entries or {})}


_SUM = {NC: SUM_CONFLICTS, PI: True, LS: True, SS: True}  # torchjd test_sum.py / test_mean.py
_MGDA = {NC: True, PI: True, LS: NOT_LINEAR, SS: MIN_NORM_ZERO}  # torchjd test_mgda.py
_UPGRAD = {NC: True, PI: True, LS: True, SS: True}  # torchjd test_upgrad.py
_DUALPROJ = {NC: True, PI: True, LS: NOT_LINEAR, SS: True}  # torchjd test_dualproj.py
# MMPareto (Wei & Hu 2024): uniform weights when every cosine is > 0 (then J u >= 0), else the
# min-norm direction (non-conflicting), both symmetric in the losses.
_MMPARETO = {NC: True, PI: True, LS: NOT_LINEAR + ", and it switches between uniform and min-norm", SS: MIN_NORM_ZERO}

PROPERTIES: dict[str, dict[str, bool | str]] = {
    "sum": _row(_SUM),
    "sum(magnitude=restore)": _row(_SUM),  # |u| = |d|: the scale is 1
    "sum(magnitude=restore_gamma)": _row({**_SUM, LS: DESCENT_SWITCH}),
    "mean": _row(_SUM),
    "mgda": _row(_MGDA),
    "mgda(magnitude=restore)": _row({**_MGDA, LS: ENLARGE_NOT_LINEAR}),
    "mgda(magnitude=restore_gamma)": _row({**_MGDA, LS: ENLARGE_NOT_LINEAR}),
    "upgrad": _row(_UPGRAD),
    "upgrad(magnitude=restore)": _row({**_UPGRAD, LS: ENLARGE_NOT_LINEAR}),
    "upgrad(magnitude=restore_gamma)": _row({**_UPGRAD, LS: ENLARGE_NOT_LINEAR}),
    "dualproj": _row(_DUALPROJ),
    "dualproj(magnitude=restore)": _row(_DUALPROJ),
    "dualproj(magnitude=restore_gamma)": _row(_DUALPROJ),
    "mmpareto": _row(_MMPARETO),  # its default magnitude: restore_gamma
    "mmpareto(magnitude=none)": _row(_MMPARETO),
    "mmpareto(magnitude=restore)": _row(_MMPARETO),
    "cagrad": _row({NC: "c = 0.5 < 1: holds for c >= 1 only (torchjd test_cagrad.py:35-38)"}),
    "cagrad(c=1.0)": _row({NC: True}),
    "cagrad(c=2.0)": _row({NC: True}),
    "aligned_mtl": _row({PI: True}),  # torchjd test_aligned_mtl.py
    "imtl_g": _row({PI: IMTL_G_FLOAT32}),
    "config": _row({PI: True, LS: True}),  # torchjd test_config.py
    "trimmed_mean": _row({PI: True}),  # torchjd test_trimmed_mean.py
    "random": _row({PI: RANDOM, LS: RANDOM, SS: True}),  # torchjd test_random.py: positive random weights
    "pcgrad": _row({PI: RANDOM, LS: RANDOM}),
    "gradvac": _row({PI: RANDOM, LS: RANDOM}),
    "graddrop": _row({PI: RANDOM, LS: RANDOM}),
    "nash_mtl": _row(),  # torchjd test_nash_mtl.py: structure only, on its own matrices
    "cr_mogm": _row(),
    "excess_mtl": _row(),
    "fairgrad": _row(),
    "modo": _row({PI: RANDOM, LS: RANDOM}),
    "pcd": _row(),
    "sdmgrad": _row({PI: RANDOM, LS: RANDOM}),
}
"""Property -> ``True`` (holds, tested below) or why it does not, for each integrator label."""

# Where a property is tested with torchjd's own tolerance for that aggregator (the magnitude
# variants keep the defaults: the rule's norms add float32 round-off of 1e-6).
TOLERANCES = {
    ("upgrad", LS): 6e-2,  # torchjd test_upgrad.py:41
    ("upgrad", PI): 5e-7,  # test_upgrad.py:36
    ("dualproj", NC): 1e-4,  # test_dualproj.py:30
    ("dualproj", PI): 2e-7,  # test_dualproj.py:35
    ("dualproj", SS): 3e-3,  # test_dualproj.py:40
}


def _parse(label: str) -> tuple[str, dict]:
    """``name`` or ``name(key=value,...)`` -> ``get_integrator`` arguments."""
    if "(" not in label:
        return label, {}
    name, rest = label[:-1].split("(", 1)
    params: dict = {}
    for item in rest.split(","):
        key, value = item.split("=")
        params[key] = float(value) if value[0].isdigit() else value
    return name, params


def _limited(name: str, matrix: Tensor) -> bool:
    """Whether ``matrix`` is outside the integrator's declared domain (min-norm: at most 10 losses)."""
    return name in ("mgda", "mmpareto") and matrix.shape[0] > MAX_EXACT_LOSSES


def _matrices(name: str, sets: tuple[str, ...]) -> list[Tensor]:
    if name == "nash_mtl":  # torchjd tests Nash-MTL on its own matrices only (_inputs.py:48-57)
        return MATRICES["nash_mtl"]
    return [m for s in sets for m in MATRICES[s] if not _limited(name, m)]


def test_the_table_covers_every_registered_integrator():
    assert {_parse(label)[0] for label in PROPERTIES} == set(INTEGRATORS)
    assert all(set(row) == set(CHECKS) for row in PROPERTIES.values())
    for label in PROPERTIES:
        name, params = _parse(label)
        get_integrator(name, **params)


def _holding():
    for label, row in PROPERTIES.items():
        for prop, holds in row.items():
            if holds is True:
                yield pytest.param(label, prop, id=f"{label}-{prop}")


@pytest.mark.parametrize(("label", "prop"), list(_holding()))
def test_property_holds(label: str, prop: str):
    check, sets, default_tol = CHECKS[prop]
    name, params = _parse(label)
    tol = TOLERANCES.get((label, prop), default_tol)
    matrices = _matrices(name, sets)
    assert matrices
    for index, matrix in enumerate(matrices):
        try:
            check(lambda: get_integrator(name, **params), matrix, tol)
        except AssertionError as error:
            raise AssertionError(f"{label}: {prop} fails on matrix {index} {tuple(matrix.shape)}") from error


COUNTER_EXAMPLES = [
    ("sum", NC),
    ("imtl_g", PI),
    ("mgda", LS),
    ("mgda(magnitude=restore_gamma)", LS),
    ("upgrad(magnitude=restore_gamma)", LS),
    ("sum(magnitude=restore_gamma)", LS),
    ("cagrad", NC),
]
"""Entries of :data:`PROPERTIES` marked as not holding that fail on at least one of torchjd's matrices."""


@pytest.mark.parametrize(("label", "prop"), COUNTER_EXAMPLES, ids=[f"{lb}-{p}" for lb, p in COUNTER_EXAMPLES])
def test_property_fails_where_the_table_says_so(label: str, prop: str):
    assert PROPERTIES[label][prop] is not True
    check, sets, default_tol = CHECKS[prop]
    name, params = _parse(label)
    for matrix in _matrices(name, sets):
        try:
            check(lambda: get_integrator(name, **params), matrix, default_tol)
        except AssertionError:
            return
    pytest.fail(f"{label}: {prop} holds on every matrix")
