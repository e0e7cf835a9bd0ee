"""Entry point: ``python -m framework.main [overrides]`` (``-m`` for sweeps)."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from .config import build
from .integrators import get_integrator
from .tracking import RunTracker, flatten
from .training.trainer import Trainer, TrainerSettings, resolve_device, seed_everything

log = logging.getLogger("framework")

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, TypeError)


def run_label(cfg: DictConfig) -> str:
    """``<integrator>[(non-default params)]`` or ``one_joint``, for run names and tables."""
    if cfg.loss.get("detach_unimodal", False):
        return "one_joint"
    integrator = get_integrator(**cfg.integrator)
    defaults = type(integrator)().hparams() if cfg.integrator.name != "pcgrad" else integrator.hparams()
    changed = {k: v for k, v in integrator.hparams().items() if defaults.get(k) != v}
    suffix = ",".join(f"{k}={v}" for k, v in changed.items())
    return f"{integrator.name}({suffix})" if suffix else integrator.name


def train(cfg: DictConfig) -> dict[str, float]:
    """Train once as ``cfg`` says, tracked in MLflow; return the final metrics."""
    seed_everything(int(cfg.seed))
    checkpoint_path = Path(to_absolute_path(cfg.checkpoint.dir)) / "checkpoint.pt"
    resumable = None
    if cfg.resume and checkpoint_path.is_file():
        resumable = torch.load(checkpoint_path, map_location="cpu", weights_only=False).get("run_id")
    try:
        label = run_label(cfg)
    except USER_ERRORS:
        label = str(cfg.integrator.get("name", "unknown"))  # the error is raised and recorded below
    tracker = RunTracker(
        experiment=cfg.tracking.experiment,
        run_name=f"{label}-seed{cfg.seed}",
        tracking_uri=cfg.tracking.uri,
        tags={"integrator": str(cfg.integrator.name), "label": label, "seed": str(cfg.seed), **cfg.tracking.tags},
        run_id=resumable,
    )
    try:
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
        if cfg.resume and trainer.resume():
            log.info("resumed from %s at epoch %d", checkpoint_path, trainer.state.epoch)
        results = trainer.fit()
        tracker.log_metrics(results, step=trainer.state.epoch)
        tracker.end("FINISHED")
    except KeyboardInterrupt:
        tracker.set_tags({"error": "interrupted (KeyboardInterrupt)"})
        tracker.end("KILLED")
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
