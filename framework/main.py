"""Entry point: ``python -m framework.main [overrides]`` (``-m`` for sweeps)."""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from .config import schema  # noqa: F401 - registers the config schema (conf/train.yaml: schema: train)
from . import metric_names as names
from .config import build, trusted_targets
from .integrators import get_integrator
from .methods import get_method
from .tracking import (
    Resumption,
    RunSpec,
    RunTracker,
    TrackingUnavailable,
    failing_with,
    flatten,
    run_status,
    tracked_run,
)
from .training import distributed
from .training.checkpoint import CheckpointWriteError, checkpoint_to_resume, restart_count, seed_everything
from .training.job_lock import JobLock, JobLocked
from .training.termination import EXIT_CODE as TERMINATED_EXIT_CODE
from .training.termination import Terminated, sigterm_stops
from .training.settings import NonFiniteError, TrainerSettings, resolve_device
from .training.trainer import Trainer
from .config.validation import validate

log = logging.getLogger("framework")

# Hydra 1.4.0rc3 instantiates ``hydra.callbacks`` itself, with no way to pass an execution
# whitelist, and warns about it on every run; our own callback is trusted code.
warnings.filterwarnings(
    "ignore",
    message=r"hydra\.utils\.instantiate\(\) resolved _target_='framework\.tracking\.PrepareTrackingStore' with no",
    category=UserWarning,
)

USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    KeyError,
    TypeError,
    NonFiniteError,
    JobLocked,
    TrackingUnavailable,
    CheckpointWriteError,
)
ONE_JOINT = "one_joint"


def run_label(cfg: DictConfig) -> str:
    """``one_joint`` for the one-joint-loss baseline, else the integrator's label, e.g. ``sum(scale=1.5)``.

    With a method (``method.name`` not ``none``): the method's label, then ``+<integrator label>``
    unless the integrator is ``sum``, then ``+<loss>`` when the loss is not the method's own
    (``ogm_ge``, ``ogm_ge+mmpareto+multitask``, ``pmr(alpha=2.0)``).
    """
    method_cfg = cfg.get("method") or {}
    joint = bool(cfg.loss.get("detach_unimodal", False))
    try:
        integrator = get_integrator(**cfg.integrator).label()
    except USER_ERRORS:  # the same error is raised, and recorded in the run, when the trainer is built
        integrator = str(cfg.integrator.get("name", "unknown"))
    if method_cfg.get("name", "none") != "none":
        try:
            method = get_method(**method_cfg)
        except USER_ERRORS:
            return str(method_cfg.get("name"))
        label = method.label()
        if integrator != "sum":
            label += f"+{integrator}"
        loss = ONE_JOINT if joint else "multitask"
        own = loss == method.native_loss or (loss == "multitask" and method.needs_multitask_loss)
        return label if own else f"{label}+{loss}"
    return ONE_JOINT if joint else integrator


def run_spec(cfg: DictConfig, label: str) -> RunSpec:
    method = str((cfg.get("method") or {}).get("name", "none"))
    tags = {
        "integrator": str(cfg.integrator.name),
        "method": method,
        "label": label,
        "seed": str(cfg.seed),
        "world_size": str(distributed.world_size()),  # ranks of one data-parallel run (1: one process)
    }
    tags.update(cfg.tracking.tags)
    return RunSpec(cfg.tracking.experiment, f"{label}-seed{cfg.seed}", cfg.tracking.uri, tags)


def build_trainer(
    cfg: DictConfig,
    tracker: RunTracker | None,
    checkpoint_path: Path | None,
    context: distributed.DistributedContext | None = None,
) -> Trainer:
    """Data, model, optimizer, scheduler, loss, integrator and method from ``cfg``, in one :class:`Trainer`.

    The method prepares the model (checks it, may change its heads) before the optimizer is built
    and before, on several ranks, the model moves to this rank's device, becomes SyncBatchNorm if
    ``model.sync_bn``, and takes rank 0's weights."""
    trusted = trusted_targets(cfg)
    splits = build(cfg.dataset, trusted)
    model = build(cfg.model, trusted, spec=splits.spec)
    device = resolve_device(cfg.device) if context is None else context.device
    loss = build(cfg.loss, trusted)
    integrator = get_integrator(**cfg.integrator)
    method = get_method(**OmegaConf.to_container(cfg.get("method") or {"name": "none"}, resolve=True))  # type: ignore[arg-type]
    method.check_config(loss.detach_unimodal, integrator)
    model = method.prepare(model, seed=int(cfg.seed))
    parallel = None
    if context is not None:
        if cfg.model.get("sync_bn", False):
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(device)
        parallel = distributed.DataParallel(context, model)
    model.to(device)
    optimizer = build(cfg.optimizer, trusted)(params=model.parameters())
    return Trainer(
        model=model,
        splits=splits,
        loss=loss,
        integrator=integrator,
        method=method,
        optimizer=optimizer,
        scheduler=build(cfg.scheduler, trusted)(optimizer=optimizer) if cfg.scheduler else None,
        settings=TrainerSettings(**cfg.trainer),
        device=device,
        seed=int(cfg.seed),
        tracker=tracker,
        checkpoint_path=checkpoint_path,
        parallel=parallel,
    )


def train(cfg: DictConfig) -> dict[str, float]:
    """Train once as ``cfg`` says, tracked in MLflow; return the final metrics.

    Resumes from the job's checkpoint (``checkpoint.dir``) when ``resume=true``, or when this
    process is a requeue of the job that wrote it (preemption, time limit): the same MLflow run
    continues. Ctrl-C and SIGTERM (and submitit's exit after it requeued a job) mark the run
    KILLED; its last checkpoint stays, so ``resume=true`` continues it. One process per job
    (:class:`~framework.training.job_lock.JobLock`): a second one for the same job refuses to start.
    """
    validate(cfg, job_overrides())  # before any data is loaded or any run is opened
    context = distributed.init(distributed.DistributedSettings(**cfg.distributed), str(cfg.device))
    checkpoint_path = Path(to_absolute_path(cfg.checkpoint.dir)) / "checkpoint.pt"
    with one_process_per_job(checkpoint_path.parent, context):
        return _train(cfg, context, checkpoint_path)


@contextmanager
def one_process_per_job(folder: Path, context: distributed.DistributedContext | None) -> Iterator[None]:
    """The job's lock (taken by rank 0 for all ranks) and, in a single process, SIGTERM as a stop
    (:mod:`~framework.training.termination`; under torchrun SIGTERM stays its agent's signal)."""
    if context is not None and not context.is_main:
        yield
        return
    with JobLock(folder), sigterm_stops() if context is None else nullcontext():
        yield


def _train(cfg: DictConfig, context: distributed.DistributedContext | None, checkpoint_path: Path) -> dict[str, float]:
    seed_everything(int(cfg.seed))  # the same on every rank: identical models, identical draws
    checkpoint, requeued = checkpoint_to_resume(checkpoint_path, bool(cfg.resume))
    resume = None
    if checkpoint is not None:
        requeue_tags = {"slurm_restart_count": str(restart_count())} if requeued and restart_count() else {}
        resume = Resumption(checkpoint.get("run_id"), checkpoint["state"]["epoch"], requeue_tags)
    label = run_label(cfg)
    if checkpoint is not None and context is None and checkpoint["state"]["epoch"] >= cfg.trainer.epochs:
        uri = cfg.tracking.uri or None
        if run_status(uri, checkpoint.get("run_id")) == "FINISHED":  # nothing to resume: change nothing
            log.warning(
                "run %s is already FINISHED (epoch %d of %d, checkpoint %s): nothing to resume",
                checkpoint.get("run_id"),
                checkpoint["state"]["epoch"],
                cfg.trainer.epochs,
                checkpoint_path,
            )
            finished = build_trainer(cfg, None, None, context)
            finished.load_state_dict(checkpoint)
            return finished.results()
    trainer: Trainer | None = None

    def where() -> str:
        epoch = f" in epoch {trainer.state.epoch}" if trainer is not None else ""
        return f"{epoch}; resume=true continues from {checkpoint_path}"

    spec = run_spec(cfg, label)
    if context is not None and not context.is_main:  # rank 0 logs; this rank fails the run if it fails
        run_id = context.broadcast_object(None)  # after every rank has read the checkpoint
        with failing_with(spec, run_id, f"rank {context.rank}"):
            trainer = build_trainer(cfg, None, checkpoint_path, context)
            if checkpoint is not None:
                trainer.load_state_dict(checkpoint)
                del checkpoint
            return trainer.fit()
    with tracked_run(spec, resume, where) as tracker:
        if context is not None:
            context.broadcast_object(tracker.run_id)
        tracker.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))  # type: ignore[arg-type]
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        trainer = build_trainer(cfg, tracker, checkpoint_path, context)
        if checkpoint is not None:
            trainer.load_state_dict(checkpoint)
            why = "requeued job" if requeued and not cfg.resume else "resume=true"
            log.info(
                "%s: resuming run %s from %s at epoch %d", why, tracker.run_id, checkpoint_path, trainer.state.epoch
            )
            del checkpoint
        results = trainer.fit()
        tracker.log_metrics(results, step=trainer.state.epoch)
    summary = ", ".join(f"{head} {results[names.best_test_accuracy(head)]:.4f}" for head in names.heads_of(results))
    log.info("[%s] test accuracy at best validation epoch %d: %s", label, trainer.state.best_epoch, summary)
    log.info("MLflow: %s (open with: mlflow ui --backend-store-uri %s)", tracker.url_hint, tracker.tracking_uri)
    return results


def job_overrides() -> list[str]:
    """This job's command-line overrides (none outside a Hydra job)."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def one_line(error: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line composition errors as one line that names the key."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else None
    if cause is None and isinstance(error, OmegaConfBaseException):
        cause = error
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if any(line.startswith("Available options in") for line in lines):  # an unknown choice of a group
        head = lines[0].removeprefix("In 'train': ")
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options in"))
        group = lines[start].removeprefix("Available options in ").strip("':")
        choices = [line for line in lines[start + 1 :] if not line.startswith(("Config search path", "provider="))]
        return f"{group}: {head}; valid choices: {', '.join(choices)}"
    if cause is not None:
        key = getattr(cause, "full_key", None)
        message = " ".join(
            line.strip() for line in str(cause).splitlines()
            if line.strip() and not line.strip().startswith(("full_key:", "reference_type=", "object_type="))
        )  # fmt: skip
        schema = getattr(cause, "object_type", None)
        if isinstance(cause, ConfigAttributeError | ConfigKeyError) and dataclasses.is_dataclass(schema):
            message += f"; valid keys: {', '.join(f.name for f in dataclasses.fields(schema))}"  # a closed node
        where = f" (in: {lines[0]})" if lines and lines[0] != message else ""
        return f"{key}: {message}{where}" if key else f"{message}{where}"
    return " ".join(lines)


def _report_composition_errors() -> None:
    """Hydra prints a composition error (a bad type, an unknown choice) on several lines, and
    points at HYDRA_FULL_ERROR; print it as one ``error: ...`` line instead (unless
    ``HYDRA_FULL_ERROR`` is set). Errors of the task itself keep Hydra's report."""
    from hydra._internal import utils as hydra_utils
    from hydra.errors import CompactHydraException
    from omegaconf.errors import OmegaConfBaseException

    original = hydra_utils.run_and_report

    def run_and_report(func: Any) -> Any:
        try:
            return func()
        except (CompactHydraException, OmegaConfBaseException) as error:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            sys.stderr.write(f"error: {one_line(error)}{os.linesep}")
            sys.exit(1)
        except Exception as error:
            failed = error

            def rethrow() -> Any:
                raise failed

            return original(rethrow)  # Hydra's own report

    hydra_utils.run_and_report = run_and_report


def search_as_multirun(argv: list[str]) -> list[str]:
    """``argv`` with ``--multirun`` when it chooses an ``hparams_search``: a search always sweeps.
    (Hydra takes ``hydra.mode`` from the primary config and the command line only, so the group's
    own file cannot set it.)"""
    choices = [a.split("=", 1)[1] for a in argv[1:] if a.lstrip("+~").startswith("hparams_search=")]
    if choices and choices[-1] != "null" and not {"-m", "--multirun"} & set(argv[1:]):
        return [argv[0], "--multirun", *argv[1:]]
    return argv


@hydra.main(config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> Any:
    try:
        results = train(cfg)
    except Terminated:  # the run ended KILLED (tag interrupted); exit as SIGTERM's default would
        raise SystemExit(TERMINATED_EXIT_CODE) from None
    except USER_ERRORS as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        raise SystemExit(f"error: {error}") from None
    return results.get(cfg.get("objective", names.BEST_VAL_MULTIMODAL))


if __name__ == "__main__":
    gc.freeze()  # the imports' ~650k objects live as long as the process: no collection scans them again
    _report_composition_errors()
    sys.argv = search_as_multirun(sys.argv)
    main()
