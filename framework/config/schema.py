"""The schema of ``conf/train.yaml``: Hydra structured configs that type the composed config.

:func:`register` stores :class:`TrainSchema` in Hydra's ConfigStore as ``schema/train`` (package
``_global_``); ``conf/train.yaml`` lists it first in its defaults (``- optional schema: train``), so
every YAML file, experiment preset and command-line override is merged *into* it and OmegaConf
checks each typed key while Hydra composes: ``trainer.batch_size=abc`` or ``integrator.gamma=abc``
fail there, naming the key. Ranges and cross-field rules (``batch_size >= 1``, a registered
integrator, an available device, ...) are checked afterwards, in one place:
:func:`framework.config.validation.validate`.

The nodes of the config groups are *open*: they type the keys every option of the group has
(``integrator``: ``name``, ``magnitude``, ``gamma``, ``rescale``; ``optimizer``: ``lr``; every
``_target_`` node: ``_target_``) and accept any other key, because the options differ (each
integrator has its own parameters, each dataset and model its own constructor). OmegaConf
spells an open structured node as a dataclass that subclasses ``Dict[str, Any]``; it warns that
this is deprecated (omegaconf#663) but has no other spelling, so the warning is silenced here.
Struct mode still refuses a new key from the command line without ``+``; with ``+``, a key the
schema does not list under ``trainer``, ``tracking``, ``checkpoint`` or ``distributed`` is refused
by :func:`framework.config.validation.check_known_keys`.

``trainer`` and ``trainer.statistics`` are the settings the trainer takes, one field list each:
:class:`TrainerSettings` and :class:`StatisticsSettings` are defined here (torch-free) and
re-exported by :mod:`framework.training.settings` and :mod:`framework.training.statistics`. They are
plain (closed) dataclasses: ``trainer.x=1`` fails while Hydra composes (``framework.main`` prints it
on one line with the valid keys); ``+trainer.x=1`` is added by Hydra and refused by
``check_known_keys``, as for the open groups.

Registration happens when this module is imported (``framework.main`` imports it). Where it was
not imported, ``optional`` makes Hydra compose without the schema (no type checks, same values).
"""

# ruff: noqa: UP006, UP007, UP045 - OmegaConf reads these typing generics; keep its documented spelling
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union  # noqa: UP035

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .targets import DEFAULT_TRUSTED_TARGETS

warnings.filterwarnings("ignore", message=r"Class `\w+` subclasses `Dict`", category=UserWarning)

ON_NONFINITE = ("stop", "skip_step")
"""``trainer.on_nonfinite``: what a step with a non-finite loss or gradient does."""

PRECISIONS = ("32", "bf16", "16")
"""``trainer.precision``: float32, bfloat16 autocast, float16 autocast with loss scaling."""


@dataclass
class StatisticsSettings:
    """``log_every``: step statistics every N steps (0: never). ``noise_every``: the probe's
    covariance traces every N steps (0: never). ``probe_size``: samples in the fixed probe batch.
    ``probe_chunk``: per-sample gradients held at once (``None``: the whole probe).
    ``probe_seed``: which train samples form the probe.

    The schema of ``trainer.statistics`` and the settings :class:`framework.training.statistics.GradientStatistics`
    takes (re-exported by :mod:`framework.training.statistics`)."""

    log_every: int = 1
    noise_every: int = 200
    probe_size: int = 16
    probe_chunk: Optional[int] = 4
    probe_seed: int = 0  # ranges: framework.config.validation.check_trainer


@dataclass
class TrainerSettings:
    """The schema of ``trainer`` and the settings :class:`framework.training.trainer.Trainer` takes
    (re-exported by :mod:`framework.training.settings`); ranges: ``framework.config.validation.check_trainer``."""

    epochs: int = 8
    batch_size: int = 64
    eval_batch_size: int = 512
    num_workers: Optional[int] = None  # data loading (disk datasets); None: 0 on CPU, min(8, CPUs) on CUDA
    pin_memory: Optional[bool] = None  # None: on CUDA
    persistent_workers: Optional[bool] = None  # None: on CUDA, with workers
    prefetch_factor: Optional[int] = None  # None: 4 on CUDA, with workers
    max_steps_per_epoch: Optional[int] = None
    checkpoint_every: int = 1
    progress: Optional[bool] = None
    on_nonfinite: str = "stop"  # a non-finite loss or gradient: stop (NonFiniteError) | skip_step
    precision: str = "32"  # 32 | bf16 | 16 (framework/training/precision.py)
    statistics: StatisticsSettings = field(default_factory=StatisticsSettings)

    def __post_init__(self) -> None:
        self.precision = str(self.precision)  # YAML's precision: 16 is an int
        if not isinstance(self.statistics, StatisticsSettings):  # a dict or a DictConfig node
            self.statistics = StatisticsSettings(**dict(self.statistics))


@dataclass
class TrackingSchema(Dict[str, Any]):
    uri: Optional[str] = None
    experiment: str = MISSING
    tags: Dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckpointSchema(Dict[str, Any]):
    dir: str = MISSING


@dataclass
class TargetSchema(Dict[str, Any]):
    """A node that ``hydra.utils.instantiate`` builds: ``_target_`` and the target's own keys."""

    _target_: str = MISSING


@dataclass
class ModelSchema(TargetSchema):
    sync_bn: bool = False  # BatchNorm -> SyncBatchNorm on several ranks (framework/training/distributed.py)


@dataclass
class DistributedSettings:
    """``distributed.*``: ``backend`` (``auto``: ``nccl`` on CUDA, ``gloo`` on CPU; ``gloo``,
    ``nccl``), ``timeout_s`` (a collective that waits longer fails the run), ``bucket_mb`` (the
    per-loss gradients' all-reduce buckets). Used by :mod:`framework.training.launch`; checked by
    :func:`framework.config.validation.validate`."""

    backend: str = "auto"
    timeout_s: float = 300.0
    bucket_mb: float = 25.0


@dataclass
class OptimizerSchema(TargetSchema):
    lr: float = MISSING


@dataclass
class IntegratorSchema(Dict[str, Any]):
    """The keys every integrator takes; its own parameters stay open (``get_integrator`` checks them)."""

    name: str = MISSING
    magnitude: str = "none"
    gamma: Union[int, float] = 1.5  # a number, kept as given (gamma=2 stays 2 in labels and errors)
    rescale: str = "tensor"


@dataclass
class MethodSchema(Dict[str, Any]):
    """A multimodal-imbalance method (``conf/method/``): ``name`` (``none``: the integrator alone); its
    own parameters stay open (``get_method`` checks them)."""

    name: str = "none"


@dataclass
class TrainSchema(Dict[str, Any]):
    name: str = MISSING
    seed: int = 0
    device: str = "auto"
    data_dir: str = "data"
    resume: bool = False
    objective: str = "best/val/acc/multimodal"
    trusted_targets: List[str] = field(default_factory=lambda: list(DEFAULT_TRUSTED_TARGETS))
    extra_trusted_targets: List[str] = field(default_factory=list)  # the user's packages, added to trusted_targets
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    tracking: TrackingSchema = field(default_factory=TrackingSchema)
    checkpoint: CheckpointSchema = field(default_factory=CheckpointSchema)
    dataset: TargetSchema = field(default_factory=TargetSchema)
    model: ModelSchema = field(default_factory=ModelSchema)
    loss: TargetSchema = field(default_factory=TargetSchema)
    optimizer: OptimizerSchema = field(default_factory=OptimizerSchema)
    scheduler: Optional[TargetSchema] = None
    integrator: IntegratorSchema = field(default_factory=IntegratorSchema)
    method: MethodSchema = field(default_factory=MethodSchema)
    distributed: DistributedSettings = field(default_factory=DistributedSettings)


def register() -> None:
    """Store the schema as ``schema/train`` (idempotent)."""
    ConfigStore.instance().store(group="schema", name="train", node=TrainSchema, package="_global_")


register()
