"""Every check of a composed config that types alone cannot make, run in one pass: :func:`validate`.

Types are checked while Hydra composes (:mod:`framework.config.schema`); here come the ranges and
cross-field rules: sizes and counts, a finite positive learning rate, an available device, a
registered integrator whose parameters it accepts, a tracking URI with a known scheme, dataset
files where a loader's inputs can be checked cheaply, trusted and importable ``_target_``\\ s, no
unknown key in the groups the schema lists in full, a ``name`` that is one folder name, and a
checkpoint folder that can be created and written (the one check that leaves something: the folder).
``framework.main.train`` calls it before any data is loaded or any MLflow run is opened, so a bad
config leaves nothing behind. Each failure is a :class:`ConfigError` (a ``ValueError``) of one line
that names the key, the value given and what is valid.

The checks live by concern: :mod:`~framework.config.checks_training` (trainer, statistics,
optimizer, scheduler, loss), :mod:`~framework.config.checks_targets` (trusted and importable
``_target_``\\ s and their keys), :mod:`~framework.config.checks_methods` (integrator and method),
:mod:`~framework.config.checks_environment` (device, tracking, dataset files, checkpoint folder,
distributed); :mod:`~framework.config.errors` holds :class:`ConfigError` and :func:`fail`. This
module runs them in order and gathers their public names.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from .checks_environment import (
    DATA_FILES,
    TRACKING_SCHEMES,
    check_checkpoint_dir,
    check_dataset,
    check_device,
    check_distributed,
    check_tracking,
    valid_devices,
)
from .checks_methods import check_integrator, check_method
from .checks_targets import (
    HYDRA_KEYS,
    POSITIVE_MODEL_KEYS,
    PYTHONPATH_HINT,
    SIMPLE_TYPES,
    TARGET_GROUPS,
    check_call,
    check_targets,
    check_trusted_targets,
    import_failure,
)
from .checks_training import check_loss, check_optimizer, check_scheduler, check_trainer
from .errors import ConfigError, fail
from .schema import (
    CheckpointSchema,
    DistributedSettings,
    StatisticsSettings,
    TrackingSchema,
    TrainerSettings,
)

__all__ = [
    "CLOSED_GROUPS",
    "DATA_FILES",
    "HYDRA_KEYS",
    "OBJECTIVE",
    "POSITIVE_MODEL_KEYS",
    "PYTHONPATH_HINT",
    "SIMPLE_TYPES",
    "STRING_KEYS",
    "TARGET_GROUPS",
    "TRACKING_SCHEMES",
    "ConfigError",
    "check_call",
    "check_checkpoint_dir",
    "check_dataset",
    "check_device",
    "check_distributed",
    "check_integrator",
    "check_known_keys",
    "check_loss",
    "check_method",
    "check_optimizer",
    "check_scheduler",
    "check_string_overrides",
    "check_targets",
    "check_top_level",
    "check_tracking",
    "check_trainer",
    "check_trusted_targets",
    "fail",
    "import_failure",
    "valid_devices",
    "validate",
]

STRING_KEYS = ("name", "device", "tracking.experiment", "tracking.uri", "objective", "integrator.name", "method.name")
"""Keys that must be strings: a command-line value Hydra reads as another type (``name=nan``,
``name=true``, ``name=1e3``) is refused rather than silently turned into a string."""

OBJECTIVE = re.compile(r"(best/epoch|best/val/acc/.+|best/test/acc/.+|last/test/acc/.+)")

CLOSED_GROUPS = {
    "trainer": TrainerSettings,
    "trainer.statistics": StatisticsSettings,
    "tracking": TrackingSchema,
    "checkpoint": CheckpointSchema,
    "distributed": DistributedSettings,
}
"""Config groups whose keys the schema lists in full (``tracking.tags`` itself stays open)."""


def validate(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """Raise :class:`ConfigError` for the first value of ``cfg`` that cannot run.

    ``overrides``: the job's command-line overrides (``HydraConfig.get().overrides.task``), to
    refuse a non-string value given to a string key (``name=nan``).
    """
    check_string_overrides(overrides)
    check_known_keys(cfg)
    check_top_level(cfg)
    check_device(str(cfg.device))
    check_trainer(cfg.trainer)
    check_targets(cfg)
    check_optimizer(cfg.optimizer)
    check_scheduler(cfg.get("scheduler"))
    check_loss(cfg.loss)
    check_integrator(cfg.integrator)
    check_method(cfg.get("method"), cfg.loss, cfg.integrator)
    check_tracking(cfg.tracking)
    check_dataset(cfg.dataset)
    check_distributed(cfg)
    check_checkpoint_dir(cfg.checkpoint.dir)  # last: it creates the folder, once everything else is valid


def check_string_overrides(overrides: Sequence[str]) -> None:
    if not overrides:
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key in STRING_KEYS and not override.is_sweep_override() and not override.is_delete():
            value = override.value()
            if value is not None and not isinstance(value, str):
                raise fail(
                    key, value,
                    f"read as a {type(value).__name__}, but {key} is a string: "
                    f"quote it ({key}=\"'{value}'\") or choose another",
                )  # fmt: skip


def check_known_keys(cfg: DictConfig) -> None:
    """The groups whose keys the schema fixes (:data:`CLOSED_GROUPS`) take no other key: ``+trainer.x=1``
    is refused here, naming the valid keys, rather than where the settings are built."""
    for path, schema in CLOSED_GROUPS.items():
        node = OmegaConf.select(cfg, path)
        if not isinstance(node, DictConfig):
            continue
        valid = [f.name for f in dataclasses.fields(cast(Any, schema))]
        for key in map(str, node):
            if key not in valid:
                value = cast(dict, OmegaConf.to_container(node, resolve=False))[key]
                raise fail(f"{path}.{key}", value, f"unknown key under {path}; valid keys: {', '.join(valid)}")


def check_top_level(cfg: DictConfig) -> None:
    name = cfg.name
    if not isinstance(name, str) or not name.strip():
        raise fail("name", name, "the MLflow experiment's name must be a non-empty string")
    if name in (".", "..") or "/" in name or "\\" in name:
        raise fail(
            "name", name,
            "names the checkpoint folder (checkpoints/<name>/...), so no path separator and not . or ..; "
            "for an MLflow experiment name with '/', set tracking.experiment",
        )  # fmt: skip
    seed = cfg.seed
    if not 0 <= int(seed) < 2**32:
        raise fail("seed", seed, "must be an integer in [0, 2**32 - 1]")
    if not OBJECTIVE.fullmatch(str(cfg.objective)):
        raise fail(
            "objective", cfg.objective,
            "must be a final metric: best/epoch, best/val/acc/<head>, best/test/acc/<head> or last/test/acc/<head>",
        )  # fmt: skip
