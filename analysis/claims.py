"""The paper's claims (issue 6), each checked against the measured runs, with a verdict.

1. MMPareto beats the uniform sum on multimodal accuracy; judged also against the controls
   ``sum(scale=1.5)`` (MMPareto's magnitude without its direction) and ``mmpareto(gamma=1.0)``
   (its direction without the magnitude boost).
2. Conventional Pareto (mgda) is worse than the sum.
3. The multimodal gradient is smaller and less noisy than the unimodal one.
4. Conflicts (negative cosine) occur mostly early in training.
5. MMPareto improves the weaker modality's unimodal accuracy.
6. Across the settings of one dataset (a difficulty gap swept, say): MMPareto's gain over the sum
   grows with the gap between the heads' accuracies, measured under the sum.

Multi-task runs have no multimodal head and no multimodal loss. There, the headline accuracy is the
mean over the tasks (``acc/mean``, by which their epochs are selected), the weaker "modality" is the
harder task, and claim 3 is not measured: no loss is the special one.

Decision rule, the same everywhere: "A > B" is **held** when the difference of the means is
positive and larger than twice its standard error, **inconclusive** when positive but within
two standard errors (seed noise), **not held** when zero or negative. Unpaired comparisons
(different runs) use Welch's standard error sqrt(s_A²/n_A + s_B²/n_B); paired ones (two
quantities of the same runs) the standard error of the per-run difference. With a single seed
on either side there is no noise estimate and the sign decides, which the text says.

Accuracies are test accuracy at the best-validation epoch, in percent; last-epoch figures are
given beside them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from framework import metric_names
from framework.metric_names import COV_TRACE, MEAN, MULTIMODAL, NORM_MEAN, NORM_STD, final_accuracy, train_loss

from .grouping import ONE_JOINT, RunSet, mean_std
from .loading import Histories
from .records import RunRecord
from .tables import EARLY, LATE, conflict_flags

HELD, NOT_HELD, INCONCLUSIVE, NOT_MEASURED = "held", "not held", "inconclusive", "not measured"
SUM, MGDA, MMPARETO = "sum", "mgda", "mmpareto"
MAGNITUDE_CONTROL, DIRECTION_CONTROL = "sum(scale=1.5)", "mmpareto(gamma=1.0)"


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


@dataclass
class ClaimResult:
    claim: int
    statement: str
    dataset: str
    setting: str
    verdict: str
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        for c in out["comparisons"]:
            c["measured"] = None
        for c, comp in zip(out["comparisons"], self.comparisons, strict=False):
            c["measured"] = comp.measured()
        return out


def decide(diff: float, se: float, n_a: int, n_b: int) -> str:
    if math.isnan(diff):
        return NOT_MEASURED
    if diff <= 0:
        return NOT_HELD
    if math.isnan(se) or min(n_a, n_b) < 2:
        return HELD  # sign only; the note says there is no noise estimate
    return HELD if diff > 2 * se else INCONCLUSIVE


def compare(claim: int, what: str, a_name: str, a: Sequence[float], b_name: str, b: Sequence[float],
            primary: bool = True) -> Comparison:  # fmt: skip
    """Unpaired: is mean(a) > mean(b) beyond seed noise?"""
    sa, sb = mean_std(a), mean_std(b)
    if sa[2] == 0 or sb[2] == 0:
        missing = " and ".join(n for n, s in ((a_name, sa), (b_name, sb)) if s[2] == 0)
        return Comparison(claim, what, a_name, b_name, sa, sb, math.nan, math.nan, NOT_MEASURED, primary,
                          f"no finished runs of {missing}")  # fmt: skip
    diff = sa[0] - sb[0]
    var = [(s[1] ** 2 / s[2]) if s[2] > 1 else math.nan for s in (sa, sb)]
    se = math.sqrt(sum(var)) if not any(math.isnan(v) for v in var) else math.nan
    note = "one seed: no noise estimate, the sign decides" if min(sa[2], sb[2]) < 2 else ""
    return Comparison(claim, what, a_name, b_name, sa, sb, diff, se, decide(diff, se, sa[2], sb[2]), primary, note)


def compare_paired(claim: int, what: str, a_name: str, a: Sequence[float], b_name: str, b: Sequence[float],
                   primary: bool = True) -> Comparison:  # fmt: skip
    """Paired (the same runs): is a_i > b_i on average, beyond the spread of the differences?"""
    pairs = [(x, y) for x, y in zip(a, b, strict=False) if not (math.isnan(x) or math.isnan(y))]
    if not pairs:
        return Comparison(claim, what, a_name, b_name, (math.nan,) * 2 + (0,), (math.nan,) * 2 + (0,), math.nan,
                          math.nan, NOT_MEASURED, primary, "not logged")  # fmt: skip
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    d = np.asarray(xs) - np.asarray(ys)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
    diff = float(d.mean())
    note = "paired over runs" + ("; one run: the sign decides" if len(d) < 2 else "")
    return Comparison(claim, what, a_name, b_name, mean_std(xs), mean_std(ys), diff, se,
                      decide(diff, se, len(d), len(d)), primary, note)  # fmt: skip


def _acc(runs: Sequence[RunRecord], head: str, kind: Literal["best", "last"] = "best") -> list[float]:
    key = final_accuracy(head, kind)
    return [100.0 * r.metrics[key] for r in runs if key in r.metrics]


def _overall(comparisons: Sequence[Comparison]) -> str:
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


class ClaimChecker:
    """Runs the five checks for one dataset and one setting of the swept parameters."""

    def __init__(self, runset: RunSet, histories: Histories, dataset: str, setting: tuple[str, ...],
                 magnitude_control: str = MAGNITUDE_CONTROL, direction_control: str = DIRECTION_CONTROL) -> None:  # fmt: skip
        self.runset, self.histories, self.dataset, self.setting = runset, histories, dataset, setting
        self.magnitude_control, self.direction_control = magnitude_control, direction_control
        self.by_label = {k[0]: v for k, v in runset.rows(dataset).items() if tuple(k[1:]) == setting}
        runs = [r for group in self.by_label.values() for r in group]
        multitask = not any(MULTIMODAL in r.heads for r in runs) and any(MEAN in r.heads for r in runs)
        self.headline = MEAN if multitask else MULTIMODAL
        """The accuracy the claims rank by: the multimodal head's, or the tasks' mean."""
        self.headline_text = "mean accuracy over the tasks" if multitask else "multimodal accuracy"
        self.kind = "task" if multitask else "modality"

    def runs(self, label: str) -> list[RunRecord]:
        return self.by_label.get(label, [])

    @property
    def setting_text(self) -> str:
        params = self.runset.swept.get(self.dataset, [])
        return ", ".join(f"{p}={v}" for p, v in zip(params, self.setting, strict=False)) or "all runs"

    def result(self, claim: int, statement: str, comparisons: list[Comparison], notes: list[str] = (),
               verdict: str | None = None) -> ClaimResult:  # fmt: skip
        return ClaimResult(claim, statement, self.dataset, self.setting_text, verdict or _overall(comparisons),
                           comparisons, list(notes))  # fmt: skip

    def claim1(self) -> ClaimResult:
        m, mag, dirc, h = MMPARETO, self.magnitude_control, self.direction_control, self.headline

        def acc(label: str, kind: Literal["best", "last"] = "best") -> list[float]:
            return _acc(self.runs(label), h, kind)

        comps = [
            compare(1, f"{h} acc, best val", m, acc(m), SUM, acc(SUM)),
            compare(1, f"{h} acc vs the magnitude control, best val", m, acc(m), mag, acc(mag)),
            compare(1, "direction only (gamma 1) vs sum, best val", dirc, acc(dirc), SUM, acc(SUM), primary=False),
            compare(1, "gamma 1.5 vs gamma 1, best val", m, acc(m), dirc, acc(dirc), primary=False),
            compare(1, f"{h} acc, last epoch", m, acc(m, "last"), SUM, acc(SUM, "last"), primary=False),
            compare(1, "vs the magnitude control, last epoch", m, acc(m, "last"), mag, acc(mag, "last"), primary=False),
        ]
        against_sum, against_control = comps[0].verdict, comps[1].verdict
        if against_sum != HELD or against_control == HELD:
            verdict = against_sum
        elif against_control == NOT_MEASURED:
            verdict = f"held against {SUM}; the control {mag} was not run"
        elif against_control == NOT_HELD:
            verdict = f"not held against the control: beats {SUM}, but not {mag}"
        else:
            verdict = f"not established against the control: beats {SUM}, within seed noise of {mag}"
        return self.result(1, f"MMPareto beats the uniform sum on {self.headline_text}", comps, verdict=verdict)

    def claim2(self) -> ClaimResult:
        h = self.headline
        comps = [
            compare(2, f"{h} acc, best val", SUM, _acc(self.runs(SUM), h), MGDA, _acc(self.runs(MGDA), h)),
            compare(2, f"{h} acc, last epoch", SUM, _acc(self.runs(SUM), h, "last"), MGDA,
                    _acc(self.runs(MGDA), h, "last"), primary=False),
        ]  # fmt: skip
        return self.result(2, "Conventional Pareto (mgda) is worse than the uniform sum", comps)

    def reference_runs(self) -> tuple[str, list[RunRecord]]:
        """The uniform-sum runs (the paper's setting for Fig. 1), else every multitask run."""
        if self.runs(SUM):
            return SUM, self.runs(SUM)
        pooled = [r for label, runs in self.by_label.items() if label != ONE_JOINT for r in runs]
        return "all multitask runs", pooled

    def _per_run_mean(self, runs: Sequence[RunRecord], key: str) -> list[float]:
        out = []
        for run in runs:
            values = self.histories.get(run, key)["value"]
            out.append(float(values.mean()) if len(values) else math.nan)
        return out

    def claim3(self) -> ClaimResult:
        statement = "The multimodal gradient is smaller and less noisy than the unimodal one"
        if self.headline != MULTIMODAL:
            why = "multi-task runs: no loss is the multimodal one, every task loss is a peer"
            return self.result(3, statement, [], [why], NOT_MEASURED)
        name, runs = self.reference_runs()
        comps: list[Comparison] = []
        groups = sorted({(g, tuple(ls)) for r in runs for g, ls in r.norm_groups().items() if len(ls) > 1})
        for group, losses in groups:
            for uni in [loss for loss in losses if loss != MULTIMODAL]:
                for kind, what, primary in ((NORM_MEAN, "mean per-batch |g|", True),
                                            (NORM_STD, "spread (std) of per-batch |g| within an epoch", True),
                                            (COV_TRACE, "tr Cov of per-sample gradients", True)):  # fmt: skip
                    mm = self._per_run_mean(runs, metric_names.grad(group, kind, MULTIMODAL))
                    un = self._per_run_mean(runs, metric_names.grad(group, kind, uni))
                    comp = compare_paired(3, f"{group}: {what}", f"unimodal ({uni})", un, MULTIMODAL, mm, primary)
                    if kind == COV_TRACE and comp.verdict == NOT_MEASURED:
                        comp.primary = False
                    if comp.verdict != NOT_MEASURED:
                        ratio = [
                            x / y for x, y in zip(mm, un, strict=False) if y and not (math.isnan(x) or math.isnan(y))
                        ]
                        comp.note += f"; ratio multimodal/unimodal {np.mean(ratio):.3f}" if ratio else ""
                    comps.append(comp)
        notes = [f"measured on {name} ({_runs(len(runs))}), averaged over epochs (norm, spread) or probes (tr Cov)"]
        return self.result(3, statement, comps, notes)

    def conflict_rates(self, runs: Sequence[RunRecord], group: str) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"early": [], "late": [], "first_half": [], "all": []}
        for run in runs:
            if group not in run.groups():
                continue
            flags = conflict_flags(self.histories, run, group)
            if flags.empty:
                continue
            out["early"].append(100 * float(flags.loc[flags["frac"] < EARLY, "conflict"].mean()))
            out["late"].append(100 * float(flags.loc[flags["frac"] >= LATE, "conflict"].mean()))
            out["all"].append(100 * float(flags["conflict"].mean()))
            total = flags["conflict"].sum()
            out["first_half"].append(
                100 * float(flags.loc[flags["frac"] < 0.5, "conflict"].sum() / total) if total else math.nan
            )
        return out

    def claim4(self) -> ClaimResult:
        name, runs = self.reference_runs()
        comps: list[Comparison] = []
        notes = [f"measured on {name} ({_runs(len(runs))}); early = first third of training steps, late = last third"]
        for group in sorted({g for r in runs for g in r.groups()}):
            rates = self.conflict_rates(runs, group)
            comp = compare_paired(
                4, f"{group}: conflict rate (%) early vs late", "early", rates["early"], "late", rates["late"]
            )
            share = mean_std(rates["first_half"])
            if comp.verdict == NOT_HELD and mean_std(rates["all"])[0] == 0:
                comp.note += "; no conflicts at all"
            comp.note += f"; overall {mean_std(rates['all'])[0]:.1f}%"
            comp.note += f"; {share[0]:.0f}% of conflicts in the first half" if share[2] else ""
            if comp.verdict == HELD and share[2] and share[0] <= 50:
                comp.verdict = NOT_HELD
                comp.note += " (not mostly early)"
            comps.append(comp)
        for group in sorted({g for r in self.runs(MMPARETO) for g in r.groups()}):
            rates = self.conflict_rates(self.runs(MMPARETO), group)
            e, l_, a = mean_std(rates["early"]), mean_std(rates["late"]), mean_std(rates["all"])
            notes.append(
                f"MMPareto's conflict branch fired on {group} in {e[0]:.1f}% of steps early, {l_[0]:.1f}% late, "
                f"{a[0]:.1f}% overall (mean over {_runs(a[2])})"
            )
        return self.result(4, "Conflicts (negative cosine) occur mostly early in training", comps, notes)

    def weaker_modality(self) -> tuple[str | None, str]:
        """The modality the multimodal training learns least: highest final unimodal training loss
        under one-joint-loss (its unimodal heads are probes), else under the uniform sum."""
        for label in (ONE_JOINT, SUM):
            runs = self.runs(label)
            modalities = sorted({m for r in runs for m in r.modalities})
            losses = {m: mean_std([r.metrics.get(train_loss(m), math.nan) for r in runs])[0] for m in modalities}
            losses = {m: v for m, v in losses.items() if not math.isnan(v)}
            if losses:
                weak = max(losses, key=losses.get)
                text = ", ".join(f"{m} {v:.3f}" for m, v in sorted(losses.items()))
                return weak, f"weaker {self.kind}: {weak} (final unimodal training loss under {label}: {text})"
        return None, f"weaker {self.kind}: undetermined (no one_joint or sum runs with unimodal losses)"

    def claim5(self) -> ClaimResult:
        weak, why = self.weaker_modality()
        statement = (
            "MMPareto improves the weaker modality's unimodal accuracy"
            if self.kind == "modality"
            else "MMPareto improves the harder task's accuracy"
        )
        if weak is None:
            return self.result(5, statement, [], [why], NOT_MEASURED)
        m = _acc(self.runs(MMPARETO), weak)
        comps = [
            compare(5, f"{weak}-only acc, best val", MMPARETO, m, SUM, _acc(self.runs(SUM), weak)),
            compare(5, f"{weak}-only acc, best val", MMPARETO, m, ONE_JOINT, _acc(self.runs(ONE_JOINT), weak),
                    primary=self.kind == "modality"),  # tasks have no one-joint-loss baseline
            compare(5, f"{weak}-only acc vs the magnitude control", MMPARETO, m, self.magnitude_control,
                    _acc(self.runs(self.magnitude_control), weak), primary=False),
            compare(5, f"{weak}-only acc, last epoch", MMPARETO, _acc(self.runs(MMPARETO), weak, "last"), SUM,
                    _acc(self.runs(SUM), weak, "last"), primary=False),
        ]  # fmt: skip
        return self.result(5, statement, comps, [why])

    def all(self) -> list[ClaimResult]:
        return [self.claim1(), self.claim2(), self.claim3(), self.claim4(), self.claim5()]

    def head_gap(self) -> tuple[float, str]:
        """The spread of the heads' best-validation test accuracies (%) under the sum, largest minus
        smallest (mean over seeds): the difficulty gap as measured, not as set."""
        runs = self.runs(SUM)
        means = {h: mean_std(_acc(runs, h))[0] for h in sorted({h for r in runs for h in r.modalities})}
        means = {h: v for h, v in means.items() if not math.isnan(v)}
        if len(means) < 2:
            return math.nan, f"{self.setting_text}: no sum runs with two {self.kind} accuracies"
        gap = max(means.values()) - min(means.values())
        text = ", ".join(f"{h} {v:.2f}" for h, v in means.items())
        return gap, f"{self.setting_text}: under sum {text}; gap {gap:.2f} points"


def gain_with_gap(checkers: Sequence[ClaimChecker], control: str = MAGNITUDE_CONTROL) -> ClaimResult | None:
    """Claim 6 for one dataset, across its settings: is MMPareto's gain over the sum (headline
    accuracy) at the setting with the largest measured gap larger than at the one with the smallest?
    The standard error of a gain is Welch's, that of the difference of two gains (independent runs)
    the root of the sum of their squares. ``None`` when fewer than two settings have both."""
    measured = []
    for checker in checkers:
        gap, text = checker.head_gap()
        h = checker.headline
        m = _acc(checker.runs(MMPARETO), h)
        gain = compare(6, f"gain over sum at {checker.setting_text}", MMPARETO, m, SUM, _acc(checker.runs(SUM), h),
                       primary=False)  # fmt: skip
        beyond = compare(6, f"gain over {control} at {checker.setting_text}", MMPARETO, m, control,
                         _acc(checker.runs(control), h), primary=False)  # fmt: skip
        if not math.isnan(gap) and gain.verdict != NOT_MEASURED:
            measured.append((gap, checker, gain, beyond, text))
    if len(measured) < 2:
        return None
    measured.sort(key=lambda item: item[0])
    (gap_lo, lo, gain_lo, beyond_lo, _), (gap_hi, hi, gain_hi, beyond_hi, _) = measured[0], measured[-1]

    def growth(what: str, at_hi: Comparison, at_lo: Comparison, primary: bool) -> Comparison:
        n_hi, n_lo = min(at_hi.a[2], at_hi.b[2]), min(at_lo.a[2], at_lo.b[2])
        if NOT_MEASURED in (at_hi.verdict, at_lo.verdict):
            return Comparison(6, what, "", "", (math.nan, math.nan, 0), (math.nan, math.nan, 0), math.nan, math.nan,
                              NOT_MEASURED, primary, at_hi.note or at_lo.note)  # fmt: skip
        diff, se = at_hi.diff - at_lo.diff, math.hypot(at_hi.se, at_lo.se)
        return Comparison(6, what, f"gain at {hi.setting_text}", f"gain at {lo.setting_text}",
                          (at_hi.diff, math.nan, n_hi), (at_lo.diff, math.nan, n_lo), diff, se,
                          decide(diff, se, n_hi, n_lo), primary)  # fmt: skip

    kind = lo.kind
    comps = [
        growth(f"{lo.headline} acc gain over sum, largest gap minus smallest", gain_hi, gain_lo, True),
        growth(f"{lo.headline} acc gain over {control}, largest gap minus smallest", beyond_hi, beyond_lo, False),
        *(gain for _, _, gain, _, _ in measured),
    ]
    notes = [text for *_, text in measured]
    notes.append(f"settings ordered by the measured gap: {', '.join(c.setting_text for _, c, *_ in measured)}")
    setting = f"across settings: {lo.setting_text} (gap {gap_lo:.2f}) to {hi.setting_text} (gap {gap_hi:.2f})"
    statement = f"MMPareto's gain over the uniform sum grows with the difficulty gap between the {kind}s"
    return ClaimResult(6, statement, lo.dataset, setting, _overall(comps), comps, notes)


def against_baseline(checker: ClaimChecker, baseline: str = SUM) -> list[tuple[Comparison, dict[str, Comparison]]]:
    """Every other run group of the checker's setting against ``baseline``: the headline accuracy
    (best validation epoch), and beside it the same comparison per head. Empty without baseline runs."""
    base = checker.runs(baseline)
    if not base:
        return []
    h = checker.headline
    heads = sorted({head for r in base for head in r.modalities})
    out = []
    for label, runs in checker.by_label.items():
        if label == baseline:
            continue
        headline = compare(0, f"{h} acc vs {baseline}", label, _acc(runs, h), baseline, _acc(base, h))
        per_head = {head: compare(0, f"{head} acc vs {baseline}", label, _acc(runs, head), baseline, _acc(base, head),
                                  primary=False) for head in heads}  # fmt: skip
        out.append((headline, per_head))
    return out


def _baseline_section(title: str, headline: str, baseline: str,
                      rows: Sequence[tuple[Comparison, dict[str, Comparison]]]) -> list[str]:  # fmt: skip
    if not rows:
        return []
    heads = list(rows[0][1])
    lines = [f"### {title}: every run group against {baseline}", "",
             f"| Integrator | n | {headline} | Δ {headline} | SE | Verdict | " + " | ".join(f"Δ {h}" for h in heads) + " |",
             "|---|--:|--:|--:|--:|---|" + "--:|" * len(heads)]  # fmt: skip
    bm, bs, bn = rows[0][0].b
    lines.append(f"| {_cell(baseline)} | {bn} | {_mean_std(bm, bs)} | | | | " + " | ".join("" for _ in heads) + " |")
    for c, per_head in rows:
        (mean, std, n), se = c.a, c.se
        cells = [_cell(c.a_name), str(n), _mean_std(mean, std), _signed(c.diff), "–" if math.isnan(se) else f"{se:.2f}",
                 c.verdict, *(_signed(p.diff) for p in per_head.values())]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.2f}" + ("" if math.isnan(std) else f" ± {std:.2f}")


def _signed(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.2f}"


RULE = (
    "Verdicts are computed from the runs: *A > B* is **held** when the difference of the means is positive and "
    "more than twice its standard error, **inconclusive** when positive but within two standard errors (seed "
    "noise), **not held** when zero or negative. Unpaired comparisons use Welch's standard error "
    "sqrt(s_A²/n_A + s_B²/n_B); paired ones (two quantities of the same runs) that of the per-run difference. "
    "Accuracies: test accuracy (%) at the best-validation epoch; last-epoch figures beside them. Rows marked "
    "*(info)* are context and do not enter the verdict."
)


def claim_checks(runset: RunSet, histories: Histories, magnitude_control: str = MAGNITUDE_CONTROL,
                 direction_control: str = DIRECTION_CONTROL) -> tuple[str, list[ClaimResult]]:  # fmt: skip
    """The claim checks for every dataset (and setting of other swept parameters), as a Markdown
    section (``## Claim checks``) and as structured results."""
    results: list[ClaimResult] = []
    lines = ["## Claim checks", "", RULE, ""]
    for dataset in runset.datasets:
        settings = sorted({tuple(k[1:]) for k in runset.rows(dataset)})
        checkers = [ClaimChecker(runset, histories, dataset, s, magnitude_control, direction_control) for s in settings]
        for checker in checkers:
            found = checker.all()
            results.extend(found)
            title = dataset if len(settings) == 1 else f"{dataset} ({checker.setting_text})"
            lines += _section(title, found)
            lines += _baseline_section(title, checker.headline, SUM, against_baseline(checker))
        across = gain_with_gap(checkers, magnitude_control)
        if across is not None:
            results.append(across)
            lines += _section(f"{dataset}, {across.setting}", [across])
    return "\n".join(lines).rstrip() + "\n", results


def _section(title: str, found: Sequence[ClaimResult]) -> list[str]:
    """Markdown lines of one section: the verdicts, every comparison, the notes."""
    lines = [f"### {title}", "", "| # | Claim | Verdict |", "|---|---|---|"]
    lines += [f"| {r.claim} | {r.statement} | **{r.verdict}** |" for r in found]
    lines += ["", "| # | Comparison | Measured | Verdict |", "|---|---|---|---|"]
    for r in found:
        for c in r.comparisons:
            what = c.what + ("" if c.primary else " *(info)*")
            lines.append(f"| {r.claim} | {_cell(what)} | {_cell(c.measured())} | {c.verdict} |")
    notes = [f"- claim {r.claim}: {n}" for r in found for n in r.notes]
    return [*lines, "", *notes, ""] if notes else [*lines, ""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _runs(n: int) -> str:
    return f"{n} run" + ("" if n == 1 else "s")
