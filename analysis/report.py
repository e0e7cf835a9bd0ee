"""``python -m analysis.report --experiment NAME [--experiment NAME2] --out DIR [--filter key=value]``

Reads the runs of the experiments from MLflow (``$MLFLOW_TRACKING_URI``, else the embedded
``sqlite:///<cwd>/mlflow.db``) and writes to DIR:

- ``accuracy.{md,tex,csv}``: test accuracy (%) at the best-validation epoch and at the last
  epoch, multimodal and per modality, mean ± std over seeds, best entry per column marked
- ``conflicts.{md,tex,csv}``: conflict rate per encoder, early / late / overall
- ``gradient_noise.{md,tex,csv}``: per-batch gradient norm, its spread, covariance trace
  (both: one table per model when the runs' models have different parameter groups)
- ``decisions.{md,tex,csv}``: what the imbalance methods decided (coefficients, loss weights,
  ratios), mean over the logged steps, mean ± std over seeds
- ``claims.md``, ``claims.json``: the paper's claims checked against the runs; ``claims.md`` also
  compares every run group with ``sum`` per setting (Δ accuracy, Welch SE, verdict)
- ``<dataset>_{cosine,grad_norm_hist,accuracy_bars,conflict_rate,cov_trace}.png``
- ``runs.csv``: every run read, counted or not, with the reason; ``report.md``: all of it

FAILED, KILLED and unfinished runs are listed (in ``report.md`` and on stdout) and left out.
The same files are logged as artifacts of a summary run (tag ``summary=true``) in the first
experiment, which later reports skip. ``--writeup FILE`` also fills the marked sections of a
Markdown write-up (``<!-- report:NAME -->`` ... ``<!-- /report:NAME -->``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from framework.tracking import default_tracking_uri

from . import figures
from .claim_checks import claim_checks
from .grouping import RunSet
from .loading import SUMMARY_TAG, Filter, Histories, load_runs
from .tables import Table, accuracy_table, conflict_table, decisions_table, noise_table, tables_per_block, write_tables


@dataclass
class Report:
    out: Path
    runset: RunSet
    accuracy: list[Table]
    conflicts: list[Table]
    noise: list[Table]
    decisions: list[Table]
    claims_md: str
    claims: list
    figures: dict[str, list[Path]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    summary_run_id: str | None = None
    history_calls: int = 0

    def sections(self, relative_to: Path | None = None) -> dict[str, str]:
        """Markdown sections keyed by marker name; figure links relative to ``relative_to``."""
        base = relative_to or self.out

        def link(path: Path) -> str:
            return os.path.relpath(path, base)

        accuracy = "\n\n".join(f"**{t.title}**\n\n{t.markdown()}" for t in self.accuracy) or "_no finished runs_"
        conflicts = "\n\n".join(f"**{t.title}**\n\n{t.markdown()}" for t in self.conflicts if not t.frame.empty)
        noise = "\n\n".join(f"**{t.title}**\n\n{t.markdown()}" for t in self.noise if not t.frame.empty)
        decisions = "\n\n".join(f"**{t.title}**\n\n{t.markdown()}" for t in self.decisions if not t.frame.empty)
        figs = []
        for dataset, paths in self.figures.items():
            figs.append(f"**{dataset}**\n")
            figs += [f"![{p.stem}]({link(p)})" for p in paths]
            figs.append("")
        return {
            "runs": self.runs_markdown(),
            "accuracy": accuracy,
            "claims": re.sub(r"^(#+) ", r"#\1 ", self.claims_md.strip(), flags=re.M),  # under the doc's own H2
            "conflicts": conflicts or "_no conflict statistics logged_",
            "noise": noise or "_no gradient-norm statistics logged_",
            "decisions": decisions or "_no imbalance method in these runs_",
            "figures": "\n".join(figs).strip() or "_no figures_",
            "excluded": self.excluded_markdown(),
        }

    def runs_markdown(self) -> str:
        lines = []
        for dataset in self.runset.datasets:
            rows = self.runset.rows(dataset)
            counts = ", ".join(f"{self.runset.row_name(dataset, k)} ×{len(v)}" for k, v in rows.items())
            swept = self.runset.swept.get(dataset, [])
            lines.append(f"- **{dataset}**: {sum(len(v) for v in rows.values())} finished runs ({counts})"
                         + (f"; swept besides the integrator: {', '.join(swept)}" if swept else ""))  # fmt: skip
        lines.append(f"- left out: {len(self.runset.excluded)} (listed below)")
        return "\n".join(lines)

    def excluded_markdown(self) -> str:
        if not self.runset.excluded:
            return "None: every run read was FINISHED and complete."
        lines = ["| Experiment | Run | Run id | Status | Reason |", "|---|---|---|---|---|"]
        for e in self.runset.excluded:
            reason = e.reason.replace("|", "\\|").replace("\n", " ")[:300]
            lines.append(f"| {e.run.experiment} | {e.run.name} | `{e.run.run_id}` | {e.run.status} | {reason} |")
        return "\n".join(lines)

    def markdown(self, title: str) -> str:
        s = self.sections()
        return (
            "\n\n".join(
                [
                    f"# {title}",
                    "## Runs\n\n" + s["runs"],
                    "## Test accuracy\n\n" + s["accuracy"],
                    self.claims_md.strip(),
                    "## Conflict rate, early and late\n\n" + s["conflicts"],
                    "## Gradient size and noise\n\n" + s["noise"],
                    "## What the imbalance methods decided\n\n" + s["decisions"],
                    "## Figures\n\n" + s["figures"],
                    "## Runs left out (FAILED, KILLED, unfinished, superseded)\n\n" + s["excluded"],
                ]
            )
            + "\n"
        )


def build_report(client: MlflowClient, experiments: list[str], out: Path, filters: Sequence[Filter] = ()) -> Report:
    out.mkdir(parents=True, exist_ok=True)
    runset = load_runs(client, experiments, filters)
    histories = Histories(client)
    accuracy = [accuracy_table(runset, d) for d in runset.datasets]
    conflicts = [t for d in runset.datasets for t in tables_per_block(conflict_table, runset, histories, d)]
    noise = [t for d in runset.datasets for t in tables_per_block(noise_table, runset, histories, d)]
    decisions = [decisions_table(runset, histories, d) for d in runset.datasets]
    claims_md, claims = claim_checks(runset, histories)
    report = Report(out, runset, accuracy, conflicts, noise, decisions, claims_md, claims)
    files: list[Path] = []
    for stem, tables in (
        ("accuracy", accuracy),
        ("conflicts", conflicts),
        ("gradient_noise", noise),
        ("decisions", decisions),
    ):
        files += [Path(p) for p in write_tables(tables, str(out / stem)).values()]
    (out / "claims.md").write_text(claims_md)
    (out / "claims.json").write_text(json.dumps(_finite([c.to_dict() for c in claims]), indent=1))
    files += [out / "claims.md", out / "claims.json"]
    for dataset, table in zip(runset.datasets, accuracy, strict=False):
        made = [
            figures.cosine_figure(runset, histories, dataset, out),
            figures.norm_histogram_figure(runset, histories, dataset, out),
            figures.accuracy_bars_figure(table, runset, out),
            figures.conflict_rate_figure(runset, histories, dataset, out),
            figures.cov_trace_figure(runset, histories, dataset, out),
        ]
        report.figures[dataset] = [p for p in made if p is not None]
        files += report.figures[dataset]
    runs_csv = out / "runs.csv"
    _runs_frame(runset).to_csv(runs_csv, index=False)
    files.append(runs_csv)
    report.files = files
    report.history_calls = histories.calls
    return report


def _finite(value: Any) -> Any:
    """NaN and infinities -> None, so that the JSON is valid."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _runs_frame(runset: RunSet) -> pd.DataFrame:
    rows = []
    for run in runset.runs:
        rows.append({"experiment": run.experiment, "dataset": run.dataset, "run": run.name, "run_id": run.run_id,
                     "label": run.label, "seed": run.seed, "status": run.status, "counted": True, "reason": ""})  # fmt: skip
    for e in runset.excluded:
        r = e.run
        rows.append({"experiment": r.experiment, "dataset": r.dataset, "run": r.name, "run_id": r.run_id,
                     "label": r.label, "seed": r.seed, "status": r.status, "counted": False, "reason": e.reason})  # fmt: skip
    return pd.DataFrame(
        rows, columns=["experiment", "dataset", "run", "run_id", "label", "seed", "status", "counted", "reason"]
    )


def log_summary_run(client: MlflowClient, report: Report, experiments: list[str], filters: list[Filter],
                    experiment: str | None = None) -> str:  # fmt: skip
    """A run tagged ``summary=true`` holding the report's files as artifacts."""
    name = experiment or experiments[0]
    found = client.get_experiment_by_name(name)
    experiment_id = found.experiment_id if found else client.create_experiment(name)
    tags = {
        SUMMARY_TAG: "true",
        "report.experiments": ",".join(experiments),
        "report.filters": " ".join(f"{f.key}={f.value}" for f in filters),
        "report.runs_counted": str(len(report.runset.runs)),
        "report.runs_left_out": str(len(report.runset.excluded)),
        "mlflow.note.content": report.sections()["accuracy"][:5000],
    }
    run = client.create_run(experiment_id, run_name=f"report-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags)
    run_id = run.info.run_id
    try:
        for path in report.files:
            client.log_artifact(run_id, str(path), "figures" if path.suffix == ".png" else None)
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return run_id


MARKER = re.compile(r"(<!-- report:(?P<name>[\w-]+) -->)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S)


def fill_writeup(path: Path, sections: dict[str, str]) -> list[str]:
    """Replace the body of each ``<!-- report:NAME -->`` ... ``<!-- /report:NAME -->`` block."""
    text = path.read_text()
    filled: list[str] = []

    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in sections:
            return match.group(0)
        filled.append(name)
        return f"{match.group(1)}\n{sections[name].strip()}\n{match.group(4)}"

    path.write_text(MARKER.sub(replace, text))
    return filled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", action="append", required=True, help="MLflow experiment (repeatable)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="keep runs whose param or tag KEY equals VALUE (params.KEY / tags.KEY to say which; "
                             "repeat a key for alternatives)")  # fmt: skip
    parser.add_argument(
        "--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db"
    )
    parser.add_argument("--no-summary-run", action="store_true", help="do not log the summary run to MLflow")
    parser.add_argument("--summary-experiment", default=None, help="experiment of the summary run (default: the first)")
    parser.add_argument("--writeup", type=Path, default=None, help="Markdown file whose report:NAME sections to fill")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    try:
        filters = [Filter.parse(f) for f in args.filter]
    except ValueError as error:
        parser.error(str(error))
    uri = args.tracking_uri or default_tracking_uri()
    client = MlflowClient(uri)
    started = time.time()
    try:
        report = build_report(client, args.experiment, args.out, filters)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    title = args.title or f"Report: {', '.join(args.experiment)}"
    (args.out / "report.md").write_text(report.markdown(title))
    report.files.append(args.out / "report.md")

    print(f"tracking URI: {uri}")
    print(report.runs_markdown())
    if report.runset.excluded:
        print("\nLeft out of the means:")
        for e in report.runset.excluded:
            print(f"  {e.run.experiment}/{e.run.name} ({e.run.run_id}): {e.reason}")
    for table in report.accuracy:
        print(f"\n{table.title}\n\n{table.markdown()}")
    print()
    for claim in report.claims:
        print(f"claim {claim.claim} [{claim.dataset}, {claim.setting}]: {claim.verdict}")
    if not args.no_summary_run:
        report.summary_run_id = log_summary_run(client, report, args.experiment, filters, args.summary_experiment)
        print(f"\nsummary run {report.summary_run_id} (tag {SUMMARY_TAG}=true) in {uri}")
    if args.writeup:
        filled = fill_writeup(args.writeup, report.sections(relative_to=args.writeup.parent))
        print(f"filled {', '.join(filled) or 'no'} sections of {args.writeup}")
    print(f"wrote {len(report.files)} files to {args.out} in {time.time() - started:.1f}s "
          f"({report.history_calls} metric histories read)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
