"""The training settings of a config: ``trainer.*`` (sizes, counts, loader settings, precision, what a
non-finite loss does) with ``trainer.statistics.*``, and ``optimizer``, ``scheduler`` and ``loss``."""

from __future__ import annotations

from omegaconf import DictConfig

from .errors import check_int, check_number, fail
from .schema import ON_NONFINITE, PRECISIONS


def check_trainer(trainer: DictConfig) -> None:
    for key in ("epochs", "batch_size", "eval_batch_size", "checkpoint_every"):
        check_int(trainer, key, "trainer.", 1)
    check_int(trainer, "num_workers", "trainer.", 0, optional=True)
    check_int(trainer, "prefetch_factor", "trainer.", 1, optional=True)
    for key in ("pin_memory", "persistent_workers"):
        if trainer.get(key) is not None and not isinstance(trainer.get(key), bool):
            raise fail(f"trainer.{key}", trainer.get(key), "must be true, false or null")
    check_int(trainer, "max_steps_per_epoch", "trainer.", 1, optional=True)
    choice = trainer.get("on_nonfinite", "stop")
    if choice not in ON_NONFINITE:
        raise fail("trainer.on_nonfinite", choice, f"valid values: {' | '.join(ON_NONFINITE)}")
    precision = str(trainer.get("precision", "32"))
    if precision not in PRECISIONS:
        raise fail("trainer.precision", trainer.get("precision"), f"valid values: {' | '.join(PRECISIONS)}")
    statistics = trainer.statistics
    for key in ("log_every", "noise_every", "probe_size", "probe_seed"):
        check_int(statistics, key, "trainer.statistics.", 0)
    check_int(statistics, "probe_chunk", "trainer.statistics.", 1, optional=True)
    if statistics.noise_every and statistics.probe_size < 2:
        raise fail(
            "trainer.statistics.probe_size", statistics.probe_size,
            "the covariance traces need a probe of >= 2 samples (or trainer.statistics.noise_every=0)",
        )  # fmt: skip


def check_optimizer(optimizer: DictConfig) -> None:
    check_number(optimizer, "lr", "optimizer.", positive=True)
    check_number(optimizer, "weight_decay", "optimizer.", positive=False)
    check_number(optimizer, "momentum", "optimizer.", positive=False)


def check_scheduler(scheduler: DictConfig | None) -> None:
    if scheduler is None:
        return
    for key in ("T_max", "step_size"):
        if key in scheduler:
            check_int(scheduler, key, "scheduler.", 1)
    for key in ("gamma", "factor"):
        check_number(scheduler, key, "scheduler.", positive=False)


def check_loss(loss: DictConfig) -> None:
    value = loss.get("detach_unimodal", False)
    if not isinstance(value, bool):
        raise fail("loss.detach_unimodal", value, "must be true or false")
