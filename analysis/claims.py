"""The paper's claims, each checked against the measured runs, with a verdict.

1. MMPareto beats the uniform sum on multimodal accuracy; judged also against the controls
   ``sum(scale=1.5)`` (MMPareto's magnitude without its direction) and ``mmpareto(gamma=1.0)``
   (its direction without the magnitude boost).
2. Conventional Pareto (mgda) is worse than the sum.
3. The multimodal gradient is smaller and less noisy than the unimodal one.
4. Conflicts (negative cosine) occur mostly early in training.
5. MMPareto improves the weaker modality's unimodal accuracy.
6. Across the settings of one dataset (a difficulty gap swept, say): MMPareto's gain over the sum
   grows with the gap between the heads' accuracies, measured under the sum.

:class:`ClaimChecker` checks claims 1-5 within one setting; claim 6, which compares settings, and
the report's section are :mod:`analysis.claim_checks`.

Multi-task runs have no multimodal head and no multimodal loss. There, the headline accuracy is the
mean over the tasks (``acc/mean``, by which their epochs are selected), the weaker "modality" is the
harder task, and claim 3 is not measured: no loss is the special one.

Every verdict follows the decision rule of :mod:`analysis.stats`.

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
from .stats import HELD, NOT_HELD, NOT_MEASURED, Comparison, compare, compare_paired, overall_verdict
from .tables import EARLY, LATE, conflict_flags

SUM, MGDA, MMPARETO = "sum", "mgda", "mmpareto"
MAGNITUDE_CONTROL, DIRECTION_CONTROL = "sum(scale=1.5)", "mmpareto(gamma=1.0)"


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


def accuracies(runs: Sequence[RunRecord], head: str, kind: Literal["best", "last"] = "best") -> list[float]:
    """The runs' test accuracies (%) of ``head``, at the best-validation epoch or the last."""
    key = final_accuracy(head, kind)
    return [100.0 * r.metrics[key] for r in runs if key in r.metrics]


class ClaimChecker:
    """Runs the five checks for one dataset and one setting of the swept parameters."""

    def __init__(
        self,
        runset: RunSet,
        histories: Histories,
        dataset: str,
        setting: tuple[str, ...],
        magnitude_control: str = MAGNITUDE_CONTROL,
        direction_control: str = DIRECTION_CONTROL,
    ) -> None:
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

    def result(
        self,
        claim: int,
        statement: str,
        comparisons: list[Comparison],
        notes: Sequence[str] = (),
        verdict: str | None = None,
    ) -> ClaimResult:
        return ClaimResult(
            claim=claim,
            statement=statement,
            dataset=self.dataset,
            setting=self.setting_text,
            verdict=verdict or overall_verdict(comparisons),
            comparisons=comparisons,
            notes=list(notes),
        )

    def claim1(self) -> ClaimResult:
        m, mag, dirc, h = MMPARETO, self.magnitude_control, self.direction_control, self.headline

        def acc(label: str, kind: Literal["best", "last"] = "best") -> list[float]:
            return accuracies(self.runs(label), h, kind)

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
            compare(2, f"{h} acc, best val", SUM, accuracies(self.runs(SUM), h), MGDA, accuracies(self.runs(MGDA), h)),
            compare(
                2,
                f"{h} acc, last epoch",
                SUM,
                accuracies(self.runs(SUM), h, "last"),
                MGDA,
                accuracies(self.runs(MGDA), h, "last"),
                primary=False,
            ),
        ]
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
                for kind, what, primary in (
                    (NORM_MEAN, "mean per-batch |g|", True),
                    (NORM_STD, "spread (std) of per-batch |g| within an epoch", True),
                    (COV_TRACE, "tr Cov of per-sample gradients", True),
                ):
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
                weak = max(losses, key=losses.__getitem__)
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
        m = accuracies(self.runs(MMPARETO), weak)
        comps = [
            compare(5, f"{weak}-only acc, best val", MMPARETO, m, SUM, accuracies(self.runs(SUM), weak)),
            compare(
                5,
                f"{weak}-only acc, best val",
                MMPARETO,
                m,
                ONE_JOINT,
                accuracies(self.runs(ONE_JOINT), weak),
                primary=self.kind == "modality",
            ),  # tasks have no one-joint-loss baseline
            compare(
                5,
                f"{weak}-only acc vs the magnitude control",
                MMPARETO,
                m,
                self.magnitude_control,
                accuracies(self.runs(self.magnitude_control), weak),
                primary=False,
            ),
            compare(
                5,
                f"{weak}-only acc, last epoch",
                MMPARETO,
                accuracies(self.runs(MMPARETO), weak, "last"),
                SUM,
                accuracies(self.runs(SUM), weak, "last"),
                primary=False,
            ),
        ]
        return self.result(5, statement, comps, [why])

    def all(self) -> list[ClaimResult]:
        return [self.claim1(), self.claim2(), self.claim3(), self.claim4(), self.claim5()]

    def head_gap(self) -> tuple[float, str]:
        """The spread of the heads' best-validation test accuracies (%) under the sum, largest minus
        smallest (mean over seeds): the difficulty gap as measured, not as set."""
        runs = self.runs(SUM)
        means = {h: mean_std(accuracies(runs, h))[0] for h in sorted({h for r in runs for h in r.modalities})}
        means = {h: v for h, v in means.items() if not math.isnan(v)}
        if len(means) < 2:
            return math.nan, f"{self.setting_text}: no sum runs with two {self.kind} accuracies"
        gap = max(means.values()) - min(means.values())
        text = ", ".join(f"{h} {v:.2f}" for h, v in means.items())
        return gap, f"{self.setting_text}: under sum {text}; gap {gap:.2f} points"


def _runs(n: int) -> str:
    return f"{n} run" + ("" if n == 1 else "s")
