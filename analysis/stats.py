"""Comparisons of two groups of measurements, with a verdict: is ``A`` larger than ``B``?

Decision rule, the same everywhere: "A > B" is **held** when the difference of the means is
positive and larger than twice its standard error, **inconclusive** when positive but within
two standard errors (seed noise), **not held** when zero or negative. Unpaired comparisons
(different runs) use Welch's standard error sqrt(s_A²/n_A + s_B²/n_B); paired ones (two
quantities of the same runs) the standard error of the per-run difference. With a single seed
on either side there is no noise estimate and the sign decides, which the text says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .grouping import mean_std

HELD, NOT_HELD, INCONCLUSIVE, NOT_MEASURED = "held", "not held", "inconclusive", "not measured"

_UNMEASURED = (math.nan, math.nan, 0)
"""The (mean, std, n) of a side without measurements."""


@dataclass
class Comparison:
    """``a`` compared with ``b``: is ``a`` larger? (Callers order the pair so that it should be.)"""

    claim: int
    what: str
    a_name: str
    b_name: str
    a: tuple[float, float, int]
    b: tuple[float, float, int]
    diff: float
    se: float
    verdict: str
    primary: bool = True
    note: str = ""

    def measured(self, digits: int = 2) -> str:
        if self.verdict == NOT_MEASURED:
            return self.note or "missing runs"
        (ma, sa, na), (mb, sb, nb) = self.a, self.b
        fmt = lambda m, s: f"{m:.{digits}f}" + ("" if math.isnan(s) else f" ± {s:.{digits}f}")  # noqa: E731
        se = f", {self.diff / self.se:.1f} SE" if self.se and not math.isnan(self.se) and self.se > 0 else ""
        text = (
            f"{self.a_name} {fmt(ma, sa)} vs {self.b_name} {fmt(mb, sb)} (n={na}/{nb}): Δ {self.diff:+.{digits}f}{se}"
        )
        return text + (f"; {self.note}" if self.note else "")


def not_measured(
    claim: int,
    what: str,
    a_name: str,
    b_name: str,
    primary: bool,
    note: str,
    a: tuple[float, float, int] = _UNMEASURED,
    b: tuple[float, float, int] = _UNMEASURED,
) -> Comparison:
    """A comparison that could not be made; ``note`` says why."""
    return Comparison(
        claim=claim,
        what=what,
        a_name=a_name,
        b_name=b_name,
        a=a,
        b=b,
        diff=math.nan,
        se=math.nan,
        verdict=NOT_MEASURED,
        primary=primary,
        note=note,
    )


def decide(diff: float, se: float, n_a: int, n_b: int) -> str:
    if math.isnan(diff):
        return NOT_MEASURED
    if diff <= 0:
        return NOT_HELD
    if math.isnan(se) or min(n_a, n_b) < 2:
        return HELD  # sign only; the note says there is no noise estimate
    return HELD if diff > 2 * se else INCONCLUSIVE


def compare(
    claim: int, what: str, a_name: str, a: Sequence[float], b_name: str, b: Sequence[float], primary: bool = True
) -> Comparison:
    """Unpaired: is mean(a) > mean(b) beyond seed noise?"""
    sa, sb = mean_std(a), mean_std(b)
    if sa[2] == 0 or sb[2] == 0:
        missing = " and ".join(n for n, s in ((a_name, sa), (b_name, sb)) if s[2] == 0)
        return not_measured(claim, what, a_name, b_name, primary, f"no finished runs of {missing}", a=sa, b=sb)
    diff = sa[0] - sb[0]
    var = [(s[1] ** 2 / s[2]) if s[2] > 1 else math.nan for s in (sa, sb)]
    se = math.sqrt(sum(var)) if not any(math.isnan(v) for v in var) else math.nan
    return Comparison(
        claim=claim,
        what=what,
        a_name=a_name,
        b_name=b_name,
        a=sa,
        b=sb,
        diff=diff,
        se=se,
        verdict=decide(diff, se, sa[2], sb[2]),
        primary=primary,
        note="one seed: no noise estimate, the sign decides" if min(sa[2], sb[2]) < 2 else "",
    )


def compare_paired(
    claim: int, what: str, a_name: str, a: Sequence[float], b_name: str, b: Sequence[float], primary: bool = True
) -> Comparison:
    """Paired (the same runs): is a_i > b_i on average, beyond the spread of the differences?"""
    pairs = [(x, y) for x, y in zip(a, b, strict=False) if not (math.isnan(x) or math.isnan(y))]
    if not pairs:
        return not_measured(claim, what, a_name, b_name, primary, "not logged")
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    d = np.asarray(xs) - np.asarray(ys)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
    diff = float(d.mean())
    return Comparison(
        claim=claim,
        what=what,
        a_name=a_name,
        b_name=b_name,
        a=mean_std(xs),
        b=mean_std(ys),
        diff=diff,
        se=se,
        verdict=decide(diff, se, len(d), len(d)),
        primary=primary,
        note="paired over runs" + ("; one run: the sign decides" if len(d) < 2 else ""),
    )


def overall_verdict(comparisons: Sequence[Comparison]) -> str:
    """One verdict from the primary comparisons' (the others are context)."""
    primary = [c.verdict for c in comparisons if c.primary]
    if not primary or all(v == NOT_MEASURED for v in primary):
        return NOT_MEASURED
    measured = [v for v in primary if v != NOT_MEASURED]
    if all(v == HELD for v in measured):
        return HELD if len(measured) == len(primary) else f"{HELD} (partly measured)"
    if all(v == NOT_HELD for v in measured):
        return NOT_HELD
    if HELD in measured:
        return "partly held"
    return INCONCLUSIVE if NOT_HELD not in measured else NOT_HELD
