"""Claims on multi-task runs: the tasks' mean is the headline accuracy, and claim 6 asks whether
MMPareto's gain over the sum grows with the difficulty gap measured between the tasks."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from analysis.claim_checks import claim_checks
from analysis.claims import HELD, NOT_HELD, NOT_MEASURED
from analysis.loading import Histories, load_runs

SEEDS = (0, 1, 2)
# (gap, label) -> (left, right) best-validation test accuracy before per-seed noise
BASE = {"none": (0.80, 0.80), "clear": (0.85, 0.65)}


def final(left: float, right: float) -> dict[str, float]:
    mean = (left + right) / 2
    out = {"best/epoch": 3.0, "best/val/acc/mean": mean}
    for kind in ("best", "last"):
        out |= {f"{kind}/test/acc/left": left, f"{kind}/test/acc/right": right, f"{kind}/test/acc/mean": mean}
    return out | {"train/loss/left": 0.4, "train/loss/right": 0.9}


def write(uri: str, experiment: str, toy, gain: dict[str, float]) -> dict[tuple[str, str], list[float]]:
    """sum at BASE, mmpareto ``gain[gap]`` higher on the right task; returns the mean accuracies (%)."""
    rng = np.random.default_rng(7)
    means: dict[tuple[str, str], list[float]] = {}
    for gap, (left, right) in BASE.items():
        for label, extra in (("sum", 0.0), ("mmpareto", gain[gap])):
            for seed in SEEDS:
                metrics = final(left + 0.003 * rng.standard_normal(), right + extra + 0.003 * rng.standard_normal())
                toy.make_run(uri, label, seed, metrics, histories=False, experiment=experiment,
                             extra_params={"gap": gap})  # fmt: skip
                means.setdefault((gap, label), []).append(100 * metrics["best/test/acc/mean"])
    return means


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('multitask') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


def checks(uri: str, experiment: str):
    client = MlflowClient(uri)
    return claim_checks(load_runs(client, [experiment]), Histories(client))


def test_gain_that_grows_with_the_measured_gap_is_held(uri, toy):
    means = write(uri, "grows", toy, {"none": 0.0, "clear": 0.06})
    md, results = checks(uri, "grows")
    by = {(r.claim, r.setting): r for r in results}
    first = by[(1, "gap=clear")]
    assert first.statement == "MMPareto beats the uniform sum on mean accuracy over the tasks"
    assert first.comparisons[0].diff == pytest.approx(
        np.mean(means["clear", "mmpareto"]) - np.mean(means["clear", "sum"])
    )
    assert first.comparisons[0].verdict == HELD
    assert by[(3, "gap=clear")].verdict == NOT_MEASURED  # no loss is the multimodal one
    assert by[(5, "gap=clear")].verdict == HELD and "weaker task: right" in md  # the harder task
    (grows,) = [r for r in results if r.claim == 6]
    # Ordered by the gap measured under sum (0 and 20 points), not by the settings' names.
    assert grows.setting.startswith("across settings: gap=none (gap ") and "to gap=clear (gap 19.9" in grows.setting
    gains = {g: np.mean(means[g, "mmpareto"]) - np.mean(means[g, "sum"]) for g in BASE}
    assert grows.comparisons[0].diff == pytest.approx(gains["clear"] - gains["none"])
    assert grows.verdict == HELD
    assert "### synthetic, across settings" in md


def test_gain_that_shrinks_with_the_gap_is_not_held(uri, toy):
    write(uri, "shrinks", toy, {"none": 0.04, "clear": 0.0})
    _, results = checks(uri, "shrinks")
    (grows,) = [r for r in results if r.claim == 6]
    assert grows.comparisons[0].diff == pytest.approx(-2.0, abs=0.5)  # mean gain: 2 points at none, 0 at clear
    assert grows.verdict == NOT_HELD


def test_every_run_group_is_compared_with_sum(uri, toy):
    means = write(uri, "versus", toy, {"none": 0.0, "clear": 0.06})
    md, _ = checks(uri, "versus")
    section = md.split("### synthetic (gap=clear): every run group against sum")[1].split("###")[0]
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ") for line in section.splitlines() if line.startswith("| ")
    }
    assert rows["sum"][2] == f"{np.mean(means['clear', 'sum']):.2f} ± {np.std(means['clear', 'sum'], ddof=1):.2f}"
    mm = rows["mmpareto"]
    gain = np.mean(means["clear", "mmpareto"]) - np.mean(means["clear", "sum"])
    assert float(mm[3]) == pytest.approx(gain, abs=0.006) and mm[5] == "held"
    assert float(mm[7].strip(" |")) == pytest.approx(6.0, abs=0.5)  # the right task carries the gain
    assert float(mm[6]) == pytest.approx(0.0, abs=0.5)
    none = md.split("### synthetic (gap=none): every run group against sum")[1].split("###")[0]
    assert "| mmpareto | 3 |" in none
