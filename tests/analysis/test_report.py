"""``python -m analysis.report`` on a small MLflow store with known values."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis.claim_checks import claim_checks
from analysis.claims import HELD, NOT_HELD
from analysis.report import build_report, fill_writeup, main
from analysis.loading import Filter, Histories, load_runs
from analysis.tables import accuracy_table, conflict_table, noise_table, tables_per_block, write_tables


EXPERIMENT, EPOCHS, STEPS, SEEDS = "toy", 4, 12, (0, 1, 2)  # as in conftest.py
FIGURES = ("cosine", "grad_norm_hist", "accuracy_bars", "conflict_rate", "cov_trace")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> str:
    """A second store (``<dir>/mlflow.db``) for tests that write their own runs, each in its own
    experiment: creating an MLflow database takes seconds."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('scratch') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


def run_report(store, tmp_path: Path, *args: str, summary: bool = False) -> Path:
    out = tmp_path / "report"
    argv = ["--experiment", EXPERIMENT, "--out", str(out), "--tracking-uri", store.uri, *args]
    assert main(argv + ([] if summary else ["--no-summary-run"])) == 0
    return out


@pytest.fixture(scope="module")
def report_dir(store, tmp_path_factory) -> Path:
    """One full report of the toy store, with its summary run, shared by the tests that read it;
    its stdout is in ``stdout.txt`` beside it."""
    out = tmp_path_factory.mktemp("shared")
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        report = run_report(store, out, summary=True)
    (out / "stdout.txt").write_text(stdout.getvalue())
    return report


def accuracy(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "accuracy.csv", keep_default_na=False, na_values=[""]).set_index("label")


def test_mean_and_std_match_numpy(store, report_dir, toy):
    table = accuracy(report_dir)
    assert list(table.index) == list(toy.MULTIMODAL_ACC)  # one_joint, sum, controls beside their method...
    for label in toy.MULTIMODAL_ACC:
        for kind in ("best", "last"):
            for head in ("multimodal", "strong", "weak"):
                values = np.array([100 * store.values[(label, s)][f"{kind}/test/acc/{head}"] for s in SEEDS])
                assert table.loc[label, f"{kind}_{head}_mean"] == pytest.approx(values.mean(), rel=1e-5)
                assert table.loc[label, f"{kind}_{head}_std"] == pytest.approx(values.std(ddof=1), rel=1e-5)
        assert table.loc[label, "n"] == 3


def test_failed_and_unfinished_runs_are_listed_and_left_out(store, report_dir):
    out = report_dir
    stdout = (out.parent / "stdout.txt").read_text()
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    left_out = runs[~runs["counted"]]
    assert set(left_out["run_id"]) == {*store.failed, *store.unfinished}
    assert set(left_out["status"]) == {"FAILED", "RUNNING"}
    report = (out / "report.md").read_text()
    for run_id in (*store.failed, *store.unfinished):
        assert run_id in stdout and run_id in report
    assert "RuntimeError: boom" in report
    # The FAILED run's 99% is not in MMPareto's mean.
    expected = np.mean([100 * store.values[("mmpareto", s)]["best/test/acc/multimodal"] for s in SEEDS])
    assert accuracy(out).loc["mmpareto", "best_multimodal_mean"] == pytest.approx(expected, rel=1e-5)


def test_best_entry_per_column_is_marked(report_dir):
    out = report_dir
    table = accuracy(out)
    for column in ("best_multimodal", "best_weak", "last_strong"):
        winner = table[f"{column}_mean"].idxmax()
        assert table[f"{column}_best"].tolist() == [label == winner for label in table.index]
    md = (out / "accuracy.md").read_text()
    winner = table["best_multimodal_mean"].idxmax()
    row = next(line for line in md.splitlines() if line.startswith(f"| {winner} |"))
    assert f"**{table.loc[winner, 'best_multimodal_mean']:.2f} ± " in row
    tex = (out / "accuracy.tex").read_text()
    assert "\\textbf{" in tex and "sum(scale=1.5)" in tex and "one\\_joint" in tex


def rows(store, *filters: str) -> dict[str, int]:
    runset = load_runs(MlflowClient(store.uri), [EXPERIMENT], [Filter.parse(f) for f in filters])
    return {key[0]: len(runs) for key, runs in runset.rows("synthetic").items()}


def test_filters_on_tags_and_params(store, tmp_path):
    table = accuracy(run_report(store, tmp_path, "--filter", "tags.label=mgda", "--filter", "tags.label=pcgrad"))
    assert list(table.index) == ["pcgrad", "mgda"]  # repeated key: alternatives
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert set(runs["label"]) == {"pcgrad", "mgda"}, "runs outside the filter are not listed either"
    assert rows(store, "label=mmpareto") == {"mmpareto": 3}
    assert rows(store, "integrator.gamma=1.0") == {"mmpareto(gamma=1.0)": 3}
    assert rows(store, "params.integrator.name=sum", "seed=0") == {"sum": 1, "sum(scale=1.5)": 1}
    assert rows(store, "params.label=sum") == {}, "label is a tag, not a param"
    runset = load_runs(MlflowClient(store.uri), [EXPERIMENT], [Filter.parse("label=mmpareto")])
    assert {e.run.run_id for e in runset.excluded} == {*store.failed, *store.unfinished}


def test_outputs_and_summary_run_with_artifacts(store, report_dir):
    out = report_dir
    for stem in ("accuracy", "conflicts", "gradient_noise"):
        for ext in ("md", "tex", "csv"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0
    for name in FIGURES:
        assert (out / f"synthetic_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = MlflowClient(store.uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (summary,) = client.search_runs([experiment.experiment_id], "tags.summary = 'true'")
    assert summary.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(summary.info.run_id)}
    assert {"accuracy.md", "accuracy.tex", "accuracy.csv", "claims.md", "report.md", "runs.csv"} <= artifacts
    figures = {a.path for a in client.list_artifacts(summary.info.run_id, "figures")}
    assert {f"figures/synthetic_{name}.png" for name in FIGURES} <= figures
    # Reading again: the summary run is neither counted nor listed as left out.
    runset = load_runs(client, [EXPERIMENT])
    assert summary.info.run_id not in {r.run_id for r in runset.runs} | {e.run.run_id for e in runset.excluded}
    assert len(runset.runs) == 21


def test_conflicts_early_and_late(report_dir):
    out = report_dir
    table = pd.read_csv(out / "conflicts.csv").set_index("label")
    assert "one_joint" not in table.index, "one-joint-loss has no shared group to conflict on"
    # Conflicts on every other step of epoch 0 of 4: early third = steps 0..15, 6 of 16 conflict.
    early = 100 * 6 / 16
    assert table.loc["mmpareto", "encoder.weak:early_mean"] == pytest.approx(early)
    assert table.loc["mmpareto", "encoder.weak:late_mean"] == 0.0
    assert table.loc["mmpareto", "encoder.weak:all_mean"] == pytest.approx(100 * 6 / (EPOCHS * STEPS))
    assert table.loc["mmpareto", "encoder.weak:first_half_mean"] == 100.0


def test_claims_are_computed_from_the_data(store):
    client = MlflowClient(store.uri)
    runset = load_runs(client, [EXPERIMENT])
    md, results = claim_checks(runset, Histories(client))
    verdicts = {r.claim: r for r in results}
    # MMPareto (80%) beats sum (75%) but not sum(scale=1.5) (80%): the magnitude explains it.
    assert verdicts[1].comparisons[0].verdict == HELD
    assert verdicts[1].comparisons[1].verdict != HELD
    assert verdicts[1].verdict.startswith("not ") and "against the control" in verdicts[1].verdict
    assert verdicts[2].verdict == HELD  # mgda 65% < sum 75%
    assert verdicts[3].verdict == HELD  # norm 0.225 vs 1.25, spread 0.015 vs 0.15, tr Cov 0.1 vs 2
    assert verdicts[4].verdict == HELD  # conflicts only in epoch 0
    assert verdicts[5].verdict == HELD  # weak: 55% vs sum 45%, one_joint 40%
    assert "weaker modality: weak" in md
    assert "MMPareto's conflict branch fired on encoder.weak in 37.5% of steps early, 0.0% late" in md
    diff = verdicts[2].comparisons[0].diff
    expected = np.mean([100 * store.values[("sum", s)]["best/test/acc/multimodal"] for s in SEEDS]) - np.mean(
        [100 * store.values[("mgda", s)]["best/test/acc/multimodal"] for s in SEEDS]
    )
    assert diff == pytest.approx(expected)


def test_claim_not_held_when_data_says_so(scratch, toy):
    uri, experiment = scratch, "claim_not_held_when_data_says_so"
    rng = np.random.default_rng(1)
    for label, acc in (("sum", 0.80), ("mmpareto", 0.70), ("mgda", 0.85)):
        for seed in SEEDS:
            final = toy.final_metrics("sum", rng)
            final["best/test/acc/multimodal"] = acc + 0.01 * rng.standard_normal()
            toy.make_run(uri, label, seed, final, histories=False, experiment=experiment)
    client = MlflowClient(uri)
    _, results = claim_checks(load_runs(client, [experiment]), Histories(client))
    assert results[0].verdict == NOT_HELD and results[1].verdict == NOT_HELD


def test_swept_parameters_split_rows_and_bookkeeping_does_not(scratch, toy):
    uri, experiment = scratch, "swept_parameters_split_rows_and_bookkeeping_does_not"
    rng = np.random.default_rng(2)
    for lr in ("0.01", "0.1"):
        for label in ("sum", "pcgrad"):
            for seed in (0, 1):
                toy.make_run(uri, label, seed, toy.final_metrics(label, rng), histories=False, experiment=experiment,
                         extra_params={"optimizer.lr": lr, "device": "cpu" if seed else "cuda"})  # fmt: skip
    runset = load_runs(MlflowClient(uri), [experiment])
    # integrator.seed repeats the seed, checkpoint.dir and device are bookkeeping.
    assert runset.swept == {"synthetic": ["optimizer.lr"]}
    assert [k for k in runset.rows("synthetic")] == [
        ("sum", "0.01"),
        ("sum", "0.1"),
        ("pcgrad", "0.01"),
        ("pcgrad", "0.1"),
    ]
    assert "| Integrator | optimizer.lr | n |" in accuracy_table(runset, "synthetic").markdown()


def test_epochs_swept_with_their_alias_shows_one_column(scratch, toy):
    uri, experiment = scratch, "epochs_swept_with_their_alias_shows_one_column"
    rng = np.random.default_rng(3)
    for epochs in ("4", "8"):
        toy.make_run(uri, "sum", 0, toy.final_metrics("sum", rng), histories=False, experiment=experiment,
                 extra_params={"trainer.epochs": epochs, "scheduler.T_max": epochs})  # fmt: skip
    runset = load_runs(MlflowClient(uri), [experiment])
    assert runset.swept == {"synthetic": ["trainer.epochs"]}
    assert runset.aliases["synthetic"] == {"trainer.epochs": ["scheduler.T_max"]}


def test_rerun_of_the_same_seed_supersedes_the_older(scratch, toy):
    uri, experiment = scratch, "rerun_of_the_same_seed_supersedes_the_older"
    rng = np.random.default_rng(4)
    old = toy.make_run(uri, "sum", 0, toy.final_metrics("sum", rng), histories=False, experiment=experiment)
    new = toy.make_run(uri, "sum", 0, toy.final_metrics("sum", rng), histories=False, experiment=experiment)
    runset = load_runs(MlflowClient(uri), [experiment])
    assert [r.run_id for r in runset.runs] == [new]
    assert [e.run.run_id for e in runset.excluded] == [old] and "superseded" in runset.excluded[0].reason


def test_default_tracking_uri_is_the_embedded_store(scratch, tmp_path, monkeypatch, capsys, toy):
    store_dir = Path(scratch.removeprefix("sqlite:///")).parent
    monkeypatch.chdir(store_dir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    toy.make_run(scratch, "sum", 0, toy.final_metrics("sum", np.random.default_rng(5)), histories=False,
                 experiment="embedded")  # fmt: skip
    assert main(["--experiment", "embedded", "--out", str(tmp_path / "out"), "--no-summary-run"]) == 0
    assert f"tracking URI: {scratch}" in capsys.readouterr().out
    assert (tmp_path / "out" / "accuracy.csv").is_file()


def test_unknown_experiment_and_bad_filter_are_user_errors(store, tmp_path, capsys):
    assert main(["--experiment", "nope", "--out", str(tmp_path), "--tracking-uri", store.uri]) == 2
    assert "no MLflow experiment named 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--experiment", EXPERIMENT, "--out", str(tmp_path), "--filter", "novalue"])
    assert Filter.parse("a.b=c=d") == Filter("a.b", "c=d")


def test_writeup_sections_are_filled_and_figures_linked_relative(store, tmp_path):
    doc = tmp_path / "docs" / "write.md"
    doc.parent.mkdir()
    doc.write_text("# Title\n\nprose\n\n<!-- report:accuracy -->\nold\n<!-- /report:accuracy -->\n\n"
                   "<!-- report:figures -->\n<!-- /report:figures -->\n\n<!-- report:unknown -->\nkeep\n<!-- /report:unknown -->\n")  # fmt: skip
    report = build_report(
        MlflowClient(store.uri), [EXPERIMENT], tmp_path / "docs" / "out", [Filter.parse("label=mmpareto")]
    )
    filled = fill_writeup(doc, report.sections(relative_to=doc.parent))
    text = doc.read_text()
    assert filled == ["accuracy", "figures"]
    assert "old" not in text and "| mmpareto |" in text and "prose" in text and "keep" in text
    assert "](out/synthetic_cosine.png)" in text
    claims = json.loads((tmp_path / "docs" / "out" / "claims.json").read_text())
    assert [c["claim"] for c in claims] == [1, 2, 3, 4, 5]
    assert all(c["measured"] for claim in claims for c in claim["comparisons"])
    assert not any(isinstance(v, float) and math.isnan(v) for c in claims for v in c.values())


@pytest.mark.slow
def test_report_on_runs_trained_by_the_framework(compose_cfg, tracking_uri, tmp_path):
    """Real runs (synthetic data, two epochs) carry every metric the report reads."""
    from framework.main import train

    for integrator in ("sum", "mmpareto"):
        for seed in (0, 1):
            train(compose_cfg("experiment=smoke", f"integrator={integrator}", f"seed={seed}",
                              "trainer.statistics.noise_every=4"))  # fmt: skip
    train(compose_cfg("experiment=smoke", "loss=one_joint"))
    out = tmp_path / "out"
    assert main(["--experiment", "smoke", "--out", str(out)]) == 0
    table = accuracy(out)
    assert list(table.index) == ["one_joint", "sum", "mmpareto"]
    assert table.loc["sum", "n"] == 2 and not math.isnan(table.loc["sum", "best_weak_std"])
    for name in FIGURES:
        assert (out / f"synthetic_{name}.png").is_file(), name
    noise = pd.read_csv(out / "gradient_noise.csv").set_index("label")
    assert noise.loc["mmpareto", "encoder.weak:cov_trace:weak_mean"] > 0
    conflicts = pd.read_csv(out / "conflicts.csv").set_index("label")
    assert 0 <= conflicts.loc["mmpareto", "encoder.weak:all_mean"] <= 100
    assert "### synthetic" in (out / "claims.md").read_text()


def test_runs_of_two_models_split_by_the_model_class_not_by_a_parameter_only_one_has(scratch, toy):
    """Presets with different models (avmnist_cnn and avmnist_transformer) in one report: the column
    is the model, named by its class, not e.g. ``model.dim`` that the CNN runs lack ("-")."""
    uri, experiment = scratch, "runs_of_two_models_split_by_the_model_class"
    rng = np.random.default_rng(5)
    models = {
        "framework.models.LateFusionModel": {"model.encoder.dim": "64"},
        "framework.models.transformer.CrossModalTransformer": {"model.dim": "64", "model.depth": "2"},
    }
    for target, own in models.items():
        for seed in (0, 1):
            toy.make_run(uri, "sum", seed, toy.final_metrics("sum", rng), histories=False, experiment=experiment,
                         extra_params={"model._target_": target, **own})  # fmt: skip
    runset = load_runs(MlflowClient(uri), [experiment])
    assert runset.swept == {"synthetic": ["model._target_"]}
    assert sorted(runset.aliases["synthetic"]["model._target_"]) == ["model.depth", "model.dim", "model.encoder.dim"]
    assert [k for k in runset.rows("synthetic")] == [("sum", "CrossModalTransformer"), ("sum", "LateFusionModel")]
    assert "| Integrator | model | n |" in accuracy_table(runset, "synthetic").markdown()


def test_targets_with_the_same_class_name_stay_apart(scratch, toy):
    uri, experiment = scratch, "targets_with_the_same_class_name_stay_apart"
    rng = np.random.default_rng(6)
    for target in ("mine.models.Net", "theirs.models.Net"):
        toy.make_run(uri, "sum", 0, toy.final_metrics("sum", rng), histories=False, experiment=experiment,
                     extra_params={"model._target_": target})  # fmt: skip
    runset = load_runs(MlflowClient(uri), [experiment])
    assert [k for k in runset.rows("synthetic")] == [("sum", "mine.models.Net"), ("sum", "theirs.models.Net")]


def test_models_with_different_parameter_groups_get_one_conflict_and_noise_table_each(scratch, toy, tmp_path):
    """Mixing a late-fusion and a transformer model in one report: each model's table has its own
    groups' columns, named by what sets it apart, instead of one table with every group of both."""
    uri, experiment = scratch, "models_with_different_parameter_groups"
    rng = np.random.default_rng(7)
    models = {
        "framework.models.LateFusionModel": "encoder",
        "framework.models.transformer.CrossModalTransformer": "embed",
    }
    for target, prefix in models.items():
        for label in ("sum", "mmpareto"):
            for seed in (0, 1):
                toy.make_run(uri, label, seed, toy.final_metrics(label, rng), experiment=experiment, rng=rng,
                             extra_params={"model._target_": target}, group_prefix=prefix)  # fmt: skip
    runset = load_runs(MlflowClient(uri), [experiment])
    histories = Histories(MlflowClient(uri))
    conflicts = tables_per_block(conflict_table, runset, histories, "synthetic")
    assert [t.block for t in conflicts] == ["model=CrossModalTransformer", "model=LateFusionModel"]
    transformer, late = conflicts
    assert late.title.startswith("synthetic (model=LateFusionModel): conflict rate")
    assert {s.split(":")[0] for s in late.stats} == {"encoder.strong", "encoder.weak"}
    assert {s.split(":")[0] for s in transformer.stats} == {"embed.strong", "embed.weak"}
    assert list(late.frame["model._target_"]) == ["LateFusionModel"] * 2
    assert list(transformer.frame["model._target_"]) == ["CrossModalTransformer"] * 2
    # the toy's conflicts: cos < 0 on half the steps of the first of its epochs, in every group
    first = {s: late.frame[f"{s}_mean"].iloc[0] for s in late.stats}
    assert first["encoder.weak:all"] == pytest.approx(100 / (2 * EPOCHS))
    assert transformer.frame["embed.weak:all_mean"].iloc[0] == pytest.approx(first["encoder.weak:all"])
    noise = tables_per_block(noise_table, runset, histories, "synthetic")
    assert [t.block for t in noise] == ["model=CrossModalTransformer", "model=LateFusionModel"]
    assert all(s.startswith("embed.") for s in noise[0].stats) and all(s.startswith("encoder.") for s in noise[1].stats)
    paths = write_tables(conflicts, str(tmp_path / "conflicts"))
    csv = pd.read_csv(paths["csv"])
    assert list(csv["block"]) == ["model=CrossModalTransformer"] * 2 + ["model=LateFusionModel"] * 2


def test_one_model_keeps_a_single_unnamed_table(scratch, toy):
    uri, experiment = scratch, "one_model_keeps_a_single_unnamed_table"
    rng = np.random.default_rng(8)
    for label in ("sum", "mmpareto"):
        toy.make_run(uri, label, 0, toy.final_metrics(label, rng), experiment=experiment, rng=rng)
    runset = load_runs(MlflowClient(uri), [experiment])
    (table,) = tables_per_block(conflict_table, runset, Histories(MlflowClient(uri)), "synthetic")
    assert table.block == "" and table.title.startswith("synthetic: conflict rate")
