"""Entry point: ``python -m framework.main [overrides]`` (``-m`` for sweeps)."""

from __future__ import annotations

import logging
import os
import random
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from .config import build
from .integrators import get_integrator
from .tracking import RunTracker, flatten
from .training.checkpoint import current_job, is_requeue_of, load_checkpoint, restart_count
from .training.trainer import Trainer, TrainerSettings, resolve_device, seed_everything

log = logging.getLogger("framework")

# Hydra 1.4.0rc3 instantiates ``hydra.callbacks`` itself, with no way to pass an execution
# whitelist, and warns about it on every run; our own callback is trusted code.
warnings.filterwarnings(
    "ignore",
    message=r"hydra\.utils\.instantiate\(\) resolved _target_='framework\.tracking\.PrepareTrackingStore' with no",
    category=UserWarning,
)

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, TypeError)
TRACKER_ATTEMPTS = 6


def run_label(cfg: DictConfig) -> str:
    """``<integrator>[(non-default params)]`` or ``one_joint``, for run names and tables."""
    if cfg.loss.get("detach_unimodal", False):
        return "one_joint"
    integrator = get_integrator(**cfg.integrator)
    defaults = type(integrator)().hparams() if cfg.integrator.name != "pcgrad" else integrator.hparams()
    changed = {k: v for k, v in integrator.hparams().items() if defaults.get(k) != v}
    suffix = ",".join(f"{k}={v}" for k, v in changed.items())
    return f"{integrator.name}({suffix})" if suffix else integrator.name


def open_tracker(cfg: DictConfig, label: str, run_id: str | None) -> RunTracker:
    """The job's MLflow run: ``run_id``'s when resuming, else a new one.

    Jobs of a sweep that start together may race to create the store's tables (a fresh sqlite
    file) or the experiment; a failed first attempt is retried after a random pause (drawn
    from the OS, never from the seeded RNGs, so training stays deterministic).
    """
    kwargs: dict[str, Any] = {
        "experiment": cfg.tracking.experiment,
        "run_name": f"{label}-seed{cfg.seed}",
        "tracking_uri": cfg.tracking.uri,
        "tags": {"integrator": str(cfg.integrator.name), "label": label, "seed": str(cfg.seed), **cfg.tracking.tags},
    }
    if run_id is not None:
        try:
            return RunTracker(**kwargs, run_id=run_id)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            log.warning("run %s of the checkpoint is not in this store: resuming into a new run", run_id)
    jitter = random.Random(os.urandom(8))
    for attempt in range(1, TRACKER_ATTEMPTS + 1):
        try:
            return RunTracker(**kwargs)
        except Exception as error:  # noqa: BLE001 - retried, then raised
            if attempt == TRACKER_ATTEMPTS:
                raise
            log.warning("opening the MLflow run failed (%s), retrying (concurrent jobs?)", str(error).splitlines()[0])
            time.sleep(jitter.uniform(0.2, 1.0) * attempt)
    raise AssertionError("unreachable")


def train(cfg: DictConfig) -> dict[str, float]:
    """Train once as ``cfg`` says, tracked in MLflow; return the final metrics.

    Resumes from the job's checkpoint (``checkpoint.dir``) when ``resume=true``, or when this
    process is a requeue of the job that wrote it (preemption, time limit): the same MLflow run
    continues. Ctrl-C (and submitit's exit after it requeued a job) marks the run KILLED; its
    last checkpoint stays, so ``resume=true`` continues it.
    """
    seed_everything(int(cfg.seed))
    checkpoint_path = Path(to_absolute_path(cfg.checkpoint.dir)) / "checkpoint.pt"
    checkpoint = load_checkpoint(checkpoint_path) if cfg.resume or current_job() is not None else None
    requeued = is_requeue_of(checkpoint)
    if not (cfg.resume or requeued):
        checkpoint = None
    try:
        label = run_label(cfg)
    except USER_ERRORS:
        label = str(cfg.integrator.get("name", "unknown"))  # the error is raised and recorded below
    tracker = open_tracker(cfg, label, checkpoint.get("run_id") if checkpoint else None)
    trainer: Trainer | None = None
    try:
        if checkpoint is not None:
            tags = tracker.client.get_run(tracker.run_id).data.tags
            if "interrupted" in tags:
                tracker.client.delete_tag(tracker.run_id, "interrupted")
            tracker.set_tags({
                "resumes": int(tags.get("resumes", 0)) + 1,
                "resumed_from_epoch": checkpoint["state"]["epoch"],
                **({"slurm_restart_count": restart_count()} if requeued and restart_count() else {}),
            })
        tracker.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))  # type: ignore[arg-type]
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        trusted = list(cfg.trusted_targets)
        splits = build(cfg.dataset, trusted)
        model = build(cfg.model, trusted, spec=splits.spec)
        device = resolve_device(cfg.device)
        model.to(device)
        optimizer = build(cfg.optimizer, trusted)(params=model.parameters())
        scheduler = build(cfg.scheduler, trusted)(optimizer=optimizer) if cfg.scheduler else None
        trainer = Trainer(
            model=model,
            splits=splits,
            loss=build(cfg.loss, trusted),
            integrator=get_integrator(**cfg.integrator),
            optimizer=optimizer,
            scheduler=scheduler,
            settings=TrainerSettings(**cfg.trainer),
            device=device,
            seed=int(cfg.seed),
            tracker=tracker,
            checkpoint_path=checkpoint_path,
        )
        if checkpoint is not None:
            trainer.load_state_dict(checkpoint)
            why = "requeued job" if requeued and not cfg.resume else "resume=true"
            log.info("%s: resuming run %s from %s at epoch %d", why, tracker.run_id, checkpoint_path, trainer.state.epoch)
            del checkpoint
        results = trainer.fit()
        tracker.log_metrics(results, step=trainer.state.epoch)
        tracker.end("FINISHED")
    except (KeyboardInterrupt, SystemExit) as stop:
        # Ctrl-C, or submitit leaving a job it checkpointed and requeued (preemption, time
        # limit). The last checkpoint is whole (atomic writes); metrics of the unfinished epoch
        # are not sent, as a resume redoes that epoch.
        reason = "KeyboardInterrupt" if isinstance(stop, KeyboardInterrupt) else f"SystemExit({stop.code})"
        epoch = f" in epoch {trainer.state.epoch}" if trainer is not None else ""
        tracker.set_tags({"interrupted": f"{reason}{epoch}; resume=true continues from {checkpoint_path}"})
        tracker.client.set_terminated(tracker.run_id, status="KILLED")
        raise
    except BaseException as error:
        tracker.set_tags({"error": f"{type(error).__name__}: {error}"[:5000]})
        tracker.log_text(traceback.format_exc(), "error.txt")
        tracker.end("FAILED")
        raise
    summary = ", ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in results.items() if k.startswith("best/test/acc/"))
    log.info("[%s] test accuracy at best validation epoch %d: %s", label, trainer.state.best_epoch, summary)
    log.info("MLflow: %s (open with: mlflow ui --backend-store-uri %s)", tracker.url_hint, tracker.tracking_uri)
    return results


@hydra.main(config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> Any:
    try:
        results = train(cfg)
    except USER_ERRORS as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        raise SystemExit(f"error: {error}") from None
    return results.get(cfg.get("objective", "best/val/acc/multimodal"))


if __name__ == "__main__":
    main()
