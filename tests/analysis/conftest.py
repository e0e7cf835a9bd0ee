"""A small MLflow store with known values, written the way ``framework.main`` writes runs.

Helpers are handed to tests through the ``toy`` fixture (this directory is not a package, so
that ``analysis`` keeps naming the package under test).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from framework.tracking import RunTracker

EXPERIMENT = "toy"
EPOCHS, STEPS = 4, 12  # steps per epoch
MODALITIES = ("strong", "weak")
SEEDS = (0, 1, 2)

# Best-validation test accuracy of the multimodal head per label, before per-seed noise.
MULTIMODAL_ACC = {
    "one_joint": 0.70,
    "sum": 0.75,
    "sum(scale=1.5)": 0.80,
    "pcgrad": 0.76,
    "mgda": 0.65,
    "mmpareto": 0.80,
    "mmpareto(gamma=1.0)": 0.74,
}
WEAK_ACC = {"one_joint": 0.40, "sum": 0.45, "sum(scale=1.5)": 0.46, "pcgrad": 0.45, "mgda": 0.35, "mmpareto": 0.55,
            "mmpareto(gamma=1.0)": 0.50}  # fmt: skip


def integrator_params(label: str) -> dict[str, str]:
    if label == "one_joint":
        return {"integrator.name": "mmpareto", "integrator.gamma": "1.5", "loss.detach_unimodal": "True"}
    base = label.split("(")[0]
    params = {"integrator.name": base, "loss.detach_unimodal": "False"}
    if base == "sum":
        params["integrator.scale"] = "1.5" if "scale" in label else "1.0"
    if base == "mmpareto":
        params["integrator.gamma"] = "1.0" if "gamma" in label else "1.5"
        params["integrator.rescale"] = "tensor"
    if base == "pcgrad":
        params["integrator.seed"] = "SEED"
    return params


@dataclass
class Store:
    uri: str
    client: MlflowClient
    values: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    """(label, seed) -> final metrics of each counted run."""
    failed: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)


def make_run(uri: str, label: str, seed: int, final: dict[str, float], status: str = "FINISHED",
             extra_params: dict[str, str] | None = None, experiment: str = EXPERIMENT, histories: bool = True,
             rng: np.random.Generator | None = None, group_prefix: str = "encoder") -> str:  # fmt: skip
    rng = rng or np.random.default_rng(seed)
    tracker = RunTracker(experiment, f"{label}-seed{seed}", uri, tags={"integrator": label.split("(")[0], "label": label,
                                                                       "seed": str(seed)})  # fmt: skip
    params = {
        "seed": str(seed),
        "name": experiment,
        "dataset._target_": "framework.data.synthetic.synthetic_splits",
        "optimizer.lr": "0.01",
        "trainer.epochs": str(EPOCHS),
        "scheduler.T_max": str(EPOCHS),
        "checkpoint.dir": f"checkpoints/{experiment}/integrator={label},seed={seed}",
        **{k: (str(seed) if v == "SEED" else v) for k, v in integrator_params(label).items()},
        **(extra_params or {}),
    }
    tracker.log_params(params)
    multitask = label != "one_joint"
    if histories:
        for step in range(EPOCHS * STEPS):
            metrics: dict[str, float] = {}
            for m in MODALITIES:
                g = f"grad/{group_prefix}.{m}"
                metrics[f"{g}/norm/multimodal"] = 0.2 + 0.05 * rng.random()
                if multitask:
                    # Conflicts in the first epoch only: cos < 0 on even steps of epoch 0.
                    cos = -0.3 if (step < STEPS and step % 2 == 0) else 0.4
                    metrics[f"{g}/cos/multimodal.{m}"] = cos
                    metrics[f"{g}/conflict"] = float(cos < 0)
                    metrics[f"{g}/norm/{m}"] = 1.0 + 0.5 * rng.random()
            tracker.log_metrics(metrics, step)
            if step % 10 == 0 and multitask:
                tracker.log_metrics({f"grad/{group_prefix}.{m}/cov_trace/{loss}": v for m in MODALITIES
                                     for loss, v in (("multimodal", 0.1), (m, 2.0))}, step)  # fmt: skip
        for epoch in range(EPOCHS):
            epoch_metrics = {"lr": 0.01, "val/acc/multimodal": 0.5 + 0.01 * epoch}
            for m in MODALITIES:
                g = f"grad/{group_prefix}.{m}"
                if multitask:
                    epoch_metrics[f"{g}/conflict_rate"] = 0.5 if epoch == 0 else 0.0
                    epoch_metrics[f"{g}/norm_mean/{m}"] = 1.25
                    epoch_metrics[f"{g}/norm_std/{m}"] = 0.15 + 0.01 * rng.random()
                epoch_metrics[f"{g}/norm_mean/multimodal"] = 0.225
                epoch_metrics[f"{g}/norm_std/multimodal"] = 0.015 + 0.001 * rng.random()
            tracker.log_metrics(epoch_metrics, epoch)
    tracker.log_metrics(final, EPOCHS)
    tracker.end(status) if status != "RUNNING" else tracker.flush()
    return tracker.run_id


def final_metrics(label: str, rng: np.random.Generator) -> dict[str, float]:
    mm = MULTIMODAL_ACC[label] + 0.01 * rng.standard_normal()
    weak = WEAK_ACC[label] + 0.01 * rng.standard_normal()
    strong = 0.9 + 0.01 * rng.standard_normal()
    return {
        "best/epoch": float(rng.integers(0, EPOCHS)),
        "best/val/acc/multimodal": mm + 0.02,
        "best/test/acc/multimodal": mm,
        "best/test/acc/strong": strong,
        "best/test/acc/weak": weak,
        "last/test/acc/multimodal": mm - 0.01,
        "last/test/acc/strong": strong,
        "last/test/acc/weak": weak - 0.005,
        "train/loss/multimodal": 0.3,
        "train/loss/strong": 0.2,
        "train/loss/weak": 1.1 if label == "one_joint" else 0.8,
    }


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Seven labels x three seeds finished, plus one FAILED and one unfinished (RUNNING) run."""
    path: Path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{path}"
    result = Store(uri, MlflowClient(uri))
    rng = np.random.default_rng(0)
    for label in MULTIMODAL_ACC:
        for seed in SEEDS:
            final = final_metrics(label, rng)
            make_run(uri, label, seed, final, rng=rng)
            result.values[(label, seed)] = final
    # Would pull MMPareto's mean far up if it were mixed in.
    crash = {"best/test/acc/multimodal": 0.99, "best/test/acc/strong": 0.99, "best/test/acc/weak": 0.99}
    result.failed.append(make_run(uri, "mmpareto", 3, crash, status="FAILED", histories=False))
    result.client.set_tag(result.failed[0], "error", "RuntimeError: boom")
    result.unfinished.append(
        make_run(uri, "mmpareto", 4, {"val/acc/multimodal": 0.99}, status="RUNNING", histories=False)
    )
    return result


@pytest.fixture(scope="session")
def toy() -> SimpleNamespace:
    """Constants and run writers of the toy store, for tests that build their own."""
    return SimpleNamespace(EXPERIMENT=EXPERIMENT, EPOCHS=EPOCHS, STEPS=STEPS, SEEDS=SEEDS, MULTIMODAL_ACC=MULTIMODAL_ACC,
                           final_metrics=final_metrics, make_run=make_run)  # fmt: skip
