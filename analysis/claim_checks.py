"""The report's ``## Claim checks`` section: the claims of :mod:`analysis.claims` checked for every
dataset and setting of its other swept parameters, claim 6 across a dataset's settings, and every
run group against the uniform sum; as Markdown and as structured results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .claims import DIRECTION_CONTROL, MAGNITUDE_CONTROL, MMPARETO, SUM, ClaimChecker, ClaimResult, accuracies
from .grouping import RunSet
from .loading import Histories
from .stats import NOT_MEASURED, Comparison, compare, decide, not_measured, overall_verdict


def gain_with_gap(checkers: Sequence[ClaimChecker], control: str = MAGNITUDE_CONTROL) -> ClaimResult | None:
    """Claim 6 for one dataset, across its settings: is MMPareto's gain over the sum (headline
    accuracy) at the setting with the largest measured gap larger than at the one with the smallest?
    The standard error of a gain is Welch's, that of the difference of two gains (independent runs)
    the root of the sum of their squares. ``None`` when fewer than two settings have both."""
    measured = []
    for checker in checkers:
        gap, text = checker.head_gap()
        h = checker.headline
        m = accuracies(checker.runs(MMPARETO), h)
        gain = compare(
            6,
            f"gain over sum at {checker.setting_text}",
            MMPARETO,
            m,
            SUM,
            accuracies(checker.runs(SUM), h),
            primary=False,
        )
        beyond = compare(
            6,
            f"gain over {control} at {checker.setting_text}",
            MMPARETO,
            m,
            control,
            accuracies(checker.runs(control), h),
            primary=False,
        )
        if not math.isnan(gap) and gain.verdict != NOT_MEASURED:
            measured.append((gap, checker, gain, beyond, text))
    if len(measured) < 2:
        return None
    measured.sort(key=lambda item: item[0])
    (gap_lo, lo, gain_lo, beyond_lo, _), (gap_hi, hi, gain_hi, beyond_hi, _) = measured[0], measured[-1]

    def growth(what: str, at_hi: Comparison, at_lo: Comparison, primary: bool) -> Comparison:
        n_hi, n_lo = min(at_hi.a[2], at_hi.b[2]), min(at_lo.a[2], at_lo.b[2])
        if NOT_MEASURED in (at_hi.verdict, at_lo.verdict):
            return not_measured(6, what, "", "", primary, at_hi.note or at_lo.note)
        diff, se = at_hi.diff - at_lo.diff, math.hypot(at_hi.se, at_lo.se)
        return Comparison(
            claim=6,
            what=what,
            a_name=f"gain at {hi.setting_text}",
            b_name=f"gain at {lo.setting_text}",
            a=(at_hi.diff, math.nan, n_hi),
            b=(at_lo.diff, math.nan, n_lo),
            diff=diff,
            se=se,
            verdict=decide(diff, se, n_hi, n_lo),
            primary=primary,
        )

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
    return ClaimResult(
        claim=6,
        statement=statement,
        dataset=lo.dataset,
        setting=setting,
        verdict=overall_verdict(comps),
        comparisons=comps,
        notes=notes,
    )


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
        headline = compare(0, f"{h} acc vs {baseline}", label, accuracies(runs, h), baseline, accuracies(base, h))
        per_head = {
            head: compare(
                0,
                f"{head} acc vs {baseline}",
                label,
                accuracies(runs, head),
                baseline,
                accuracies(base, head),
                primary=False,
            )
            for head in heads
        }
        out.append((headline, per_head))
    return out


def _baseline_section(
    title: str, headline: str, baseline: str, rows: Sequence[tuple[Comparison, dict[str, Comparison]]]
) -> list[str]:
    if not rows:
        return []
    heads = list(rows[0][1])
    lines = [
        f"### {title}: every run group against {baseline}",
        "",
        f"| Integrator | n | {headline} | Δ {headline} | SE | Verdict | " + " | ".join(f"Δ {h}" for h in heads) + " |",
        "|---|--:|--:|--:|--:|---|" + "--:|" * len(heads),
    ]
    bm, bs, bn = rows[0][0].b
    lines.append(f"| {_cell(baseline)} | {bn} | {_mean_std(bm, bs)} | | | | " + " | ".join("" for _ in heads) + " |")
    for c, per_head in rows:
        (mean, std, n), se = c.a, c.se
        cells = [
            _cell(c.a_name),
            str(n),
            _mean_std(mean, std),
            _signed(c.diff),
            "–" if math.isnan(se) else f"{se:.2f}",
            c.verdict,
            *(_signed(p.diff) for p in per_head.values()),
        ]
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


def claim_checks(
    runset: RunSet,
    histories: Histories,
    magnitude_control: str = MAGNITUDE_CONTROL,
    direction_control: str = DIRECTION_CONTROL,
) -> tuple[str, list[ClaimResult]]:
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
