"""Every check of a composed config that types alone cannot make, in one place: :func:`validate`.

Types are checked while Hydra composes (:mod:`framework.config.schema`); here come the ranges and
cross-field rules: sizes and counts, a finite positive learning rate, an available device, a
registered integrator whose parameters it accepts, a tracking URI with a known scheme, dataset
files where a loader's inputs can be checked cheaply, trusted and importable ``_target_``\\ s, no
unknown key in the groups the schema lists in full, a ``name`` that is one folder name, and a
checkpoint folder that can be created and written (the one check that leaves something: the folder).
``framework.main.train`` calls it before any data is loaded or any MLflow run is opened, so a bad
config leaves nothing behind. Each failure is a :class:`ConfigError` (a ``ValueError``) of one line
that names the key, the value given and what is valid.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import math
import os
import re
import tempfile
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig, ListConfig, OmegaConf

from .targets import DEFAULT_TRUSTED_TARGETS, FRAMEWORK_KEYS, REQUIRED_TRUSTED_TARGET, trusted_targets
from .schema import (
    PRECISIONS,
    ON_NONFINITE,
    CheckpointSchema,
    DistributedSchema,
    StatisticsSchema,
    TrackingSchema,
    TrainerSchema,
)

TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "databricks", "postgresql", "mysql", "mssql")
"""URI schemes of MLflow tracking stores (a plain path is a file store)."""

STRING_KEYS = ("name", "device", "tracking.experiment", "tracking.uri", "objective", "integrator.name", "method.name")
"""Keys that must be strings: a command-line value Hydra reads as another type (``name=nan``,
``name=true``, ``name=1e3``) is refused rather than silently turned into a string."""

OBJECTIVE = re.compile(r"(best/epoch|best/val/acc/.+|best/test/acc/.+|last/test/acc/.+)")
TARGET_GROUPS = ("dataset", "model", "loss", "optimizer", "scheduler")
CLOSED_GROUPS = {
    "trainer": TrainerSchema,
    "trainer.statistics": StatisticsSchema,
    "tracking": TrackingSchema,
    "checkpoint": CheckpointSchema,
    "distributed": DistributedSchema,
}
"""Config groups whose keys the schema lists in full (``tracking.tags`` itself stays open)."""

# dataset targets whose inputs live in the prepared data directory (framework/data/sources.py)
DATA_FILES = {
    "framework.data.cgmnist.cgmnist_splits": ("mnist/digits.npz",),
    "framework.data.avmnist.avmnist_splits": ("mnist/digits.npz", "fsdd/mfcc.npz"),
    "framework.data.multitask.multi_mnist_splits": ("mnist/digits.npz",),
    "framework.data.multitask.multi_fashion_splits": ("fashion_mnist/items.npz",),
    "framework.data.multitask.multi_fashion_mnist_splits": ("mnist/digits.npz", "fashion_mnist/items.npz"),
}


class ConfigError(ValueError):
    """A config value that cannot run; the message is one line naming the key."""


def fail(key: str, value: Any, valid: str) -> ConfigError:
    return ConfigError(f"{key}={_show(value)}: {valid}")


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) or value is None else str(value)


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
        valid = [f.name for f in dataclasses.fields(schema)]
        for key in node:
            if key not in valid:
                value = OmegaConf.to_container(node, resolve=False)[key]  # type: ignore[index]
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


def valid_devices() -> list[str]:
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: str) -> None:
    import torch

    valid = valid_devices()
    if device in valid:
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise fail("device", device, f"not a device; valid values here: {', '.join(valid)}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise fail("device", device, f"CUDA is not available on this machine; valid values here: {', '.join(valid)}")
    raise fail("device", device, f"not available on this machine; valid values here: {', '.join(valid)}")


def _int(node: DictConfig, key: str, prefix: str, minimum: int, optional: bool = False) -> None:
    value = node.get(key)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or null" if optional else ""
        raise fail(f"{prefix}{key}", value, f"must be an integer >= {minimum}{extra}")


def check_trainer(trainer: DictConfig) -> None:
    for key in ("epochs", "batch_size", "eval_batch_size", "checkpoint_every"):
        _int(trainer, key, "trainer.", 1)
    _int(trainer, "num_workers", "trainer.", 0, optional=True)
    _int(trainer, "prefetch_factor", "trainer.", 1, optional=True)
    for key in ("pin_memory", "persistent_workers"):
        if trainer.get(key) is not None and not isinstance(trainer.get(key), bool):
            raise fail(f"trainer.{key}", trainer.get(key), "must be true, false or null")
    _int(trainer, "max_steps_per_epoch", "trainer.", 1, optional=True)
    choice = trainer.get("on_nonfinite", "stop")
    if choice not in ON_NONFINITE:
        raise fail("trainer.on_nonfinite", choice, f"valid values: {' | '.join(ON_NONFINITE)}")
    precision = str(trainer.get("precision", "32"))
    if precision not in PRECISIONS:
        raise fail("trainer.precision", trainer.get("precision"), f"valid values: {' | '.join(PRECISIONS)}")
    statistics = trainer.statistics
    for key in ("log_every", "noise_every", "probe_size", "probe_seed"):
        _int(statistics, key, "trainer.statistics.", 0)
    _int(statistics, "probe_chunk", "trainer.statistics.", 1, optional=True)
    if statistics.noise_every and statistics.probe_size < 2:
        raise fail(
            "trainer.statistics.probe_size", statistics.probe_size,
            "the covariance traces need a probe of >= 2 samples (or trainer.statistics.noise_every=0)",
        )  # fmt: skip


def _targets(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    """``(path, node)`` of every node with a ``_target_`` under ``node``."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            if key != "_target_" and isinstance(node._get_node(key), (DictConfig, ListConfig)):
                yield from _targets(node[key], f"{path}.{key}")
    elif isinstance(node, ListConfig):
        for index, item in enumerate(node):
            yield from _targets(item, f"{path}[{index}]")


PYTHONPATH_HINT = "is its folder on PYTHONPATH? (e.g. PYTHONPATH=/path/to/project python -m framework.main ...)"


def check_trusted_targets(cfg: DictConfig) -> None:
    """``trusted_targets`` keeps ``framework.*`` (users add packages with ``extra_trusted_targets``)."""
    for key in ("trusted_targets", "extra_trusted_targets"):
        patterns = cfg.get(key)
        if patterns is not None and (
            not isinstance(patterns, (ListConfig, list)) or not all(isinstance(p, str) and p for p in patterns)
        ):
            raise fail(key, patterns, "must be a list of _target_ patterns, e.g. [mydata.*]")
    patterns = cfg.get("trusted_targets")
    if patterns is not None and REQUIRED_TRUSTED_TARGET not in patterns:
        own = [p for p in patterns if p not in DEFAULT_TRUSTED_TARGETS] or ["mydata.*"]
        raise fail(
            "trusted_targets", list(patterns),
            f"drops {REQUIRED_TRUSTED_TARGET}, so the framework's own datasets, models and losses are refused; "
            f"keep the default trusted_targets and use extra_trusted_targets=[...] to add packages "
            f"(extra_trusted_targets=[{','.join(own)}])",
        )  # fmt: skip


def _package_pattern(target: str) -> str:
    """``mydata.*`` for ``mydata.splits.make`` (and for ``mydata.*``): the pattern that trusts its package."""
    return f"{target.split('.')[0]}.*"


def import_failure(target: str, error: BaseException) -> str:
    """Why ``_target_`` ``target`` could not be imported, in one line: the exception under Hydra's
    ``Error loading`` (``ModuleNotFoundError: No module named 'mydata'``), with a PYTHONPATH hint
    for a module that is not found. Where Hydra looked for a missing attribute of an existing
    module as a submodule, the ``AttributeError`` it met first is the answer."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    hydra_wrapper = isinstance(error, ImportError) and str(error).startswith("Error loading")
    causes = chain[1:] if hydra_wrapper and len(chain) > 1 else chain
    root = causes[0]
    prefixes = {".".join(target.split(".")[:n]) for n in range(2, target.count(".") + 2)}
    if isinstance(root, ModuleNotFoundError) and root.name in prefixes:  # a submodule or an attribute
        missing = [c for c in causes if isinstance(c, AttributeError) and "'__path__'" not in str(c)]
        if missing:
            root = missing[-1]
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    message = f"{type(root).__name__}: {lines[0]}" if lines else type(root).__name__
    if isinstance(root, ImportError):
        message += f"; {PYTHONPATH_HINT}"
    return message


def check_targets(cfg: DictConfig) -> None:
    """Every ``_target_`` of the groups that are built: trusted (``trusted_targets`` and
    ``extra_trusted_targets``) and importable."""
    from hydra._internal.utils import _locate

    check_trusted_targets(cfg)
    trusted: Iterable[str] = trusted_targets(cfg)
    for group in TARGET_GROUPS:
        if cfg.get(group) is None:
            continue
        for path, node in _targets(cfg[group], group):
            key, target = f"{path}._target_", node._target_
            if not isinstance(target, str) or not target:
                raise fail(key, target, "must be a dotted import path")
            if not any(fnmatch.fnmatchcase(target, pattern) for pattern in trusted):
                raise fail(
                    key, target,
                    f"not trusted; trusted patterns: {', '.join(trusted)} "
                    f"(add its package with extra_trusted_targets=[{_package_pattern(target)}])",
                )  # fmt: skip
            try:
                obj = _locate(target)
            except (ImportError, ValueError) as error:
                raise fail(key, target, f"cannot be imported: {import_failure(target, error)}") from None
            check_call(path, obj, node, positive=group == "model")


HYDRA_KEYS = frozenset({"_target_", "_partial_", "_convert_", "_recursive_", "_args_"})
SIMPLE_TYPES: dict[Any, tuple[type, ...]] = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}
POSITIVE_MODEL_KEYS = frozenset({"dim", "width", "depth", "heads", "patch_size", "vector_tokens", "pooled"})


def _accepted(hint: Any) -> tuple[type, ...] | None:
    """The Python types a parameter annotated ``hint`` takes when it is a plain scalar type (or an
    optional/union of them, Path counting as str); None when the hint is anything else."""
    if hint in SIMPLE_TYPES:
        return SIMPLE_TYPES[hint]
    if hint is type(None):
        return (type(None),)
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return (str,)
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and args:
        accepted: tuple[type, ...] = ()
        for arg in args:
            one = _accepted(arg)
            if one is None:
                return None
            accepted += one
        return accepted
    return None


def check_call(path: str, obj: Any, node: DictConfig, positive: bool = False) -> None:
    """The keys of a ``_target_`` node against the target's signature: each a parameter it takes,
    scalar values of the annotated scalar type; in models, sizes (``dim``, ``depth``, ...) >= 1."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return
    params = signature.parameters
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # unresolvable annotations: check names only
        hints = {}
    name = getattr(obj, "__qualname__", str(obj))
    for key in node:
        if key in HYDRA_KEYS or key in FRAMEWORK_KEYS:
            continue
        if key not in params:
            if open_kwargs:
                continue
            valid = ", ".join(p for p, v in params.items() if v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD))
            raise fail(f"{path}.{key}", node[key], f"{name}() has no parameter {key!r}; valid parameters: {valid}")
        if isinstance(node._get_node(key), (DictConfig, ListConfig)):
            continue
        value = node[key]
        accepted = _accepted(hints.get(key))
        if accepted is not None and (
            not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted)
        ):
            names = " | ".join(sorted({"null" if t is type(None) else t.__name__ for t in accepted}))
            raise fail(f"{path}.{key}", value, f"{name}() takes {names} here, got {type(value).__name__}")
        if positive and key in POSITIVE_MODEL_KEYS and isinstance(value, int) and value < 1:
            raise fail(f"{path}.{key}", value, "must be >= 1")
        if path.startswith("dataset"):
            if key.endswith("_size") and isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise fail(f"{path}.{key}", value, "must be >= 1 (or null where the dataset allows it)")
            if key.endswith("_fraction") and isinstance(value, (int, float)) and not 0 <= value < 1:
                raise fail(f"{path}.{key}", value, "must be in [0, 1)")


def _number(node: DictConfig, key: str, prefix: str, *, positive: bool) -> None:
    if key not in node:
        return
    value = node[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(f"{prefix}{key}", value, f"must be a finite number{' > 0' if positive else ' >= 0'}")
    if (positive and value <= 0) or (not positive and value < 0):
        raise fail(f"{prefix}{key}", value, f"must be {'> 0' if positive else '>= 0'}")


def check_optimizer(optimizer: DictConfig) -> None:
    _number(optimizer, "lr", "optimizer.", positive=True)
    _number(optimizer, "weight_decay", "optimizer.", positive=False)
    _number(optimizer, "momentum", "optimizer.", positive=False)


def check_scheduler(scheduler: DictConfig | None) -> None:
    if scheduler is None:
        return
    for key in ("T_max", "step_size"):
        if key in scheduler:
            _int(scheduler, key, "scheduler.", 1)
    for key in ("gamma", "factor"):
        _number(scheduler, key, "scheduler.", positive=False)


def check_loss(loss: DictConfig) -> None:
    value = loss.get("detach_unimodal", False)
    if not isinstance(value, bool):
        raise fail("loss.detach_unimodal", value, "must be true or false")


def check_integrator(integrator: DictConfig) -> None:
    """A finite ``gamma > 0``, then ``get_integrator``'s own one-line errors: an unknown name, parameter
    or parameter value."""
    from ..integrators import get_integrator

    _number(integrator, "gamma", "integrator.", positive=True)

    params = OmegaConf.to_container(integrator, resolve=True)
    assert isinstance(params, dict)
    try:
        get_integrator(**params)  # type: ignore[arg-type]
    except ValueError as error:
        raise ConfigError(" ".join(str(error).split())) from None
    except TypeError as error:
        raise ConfigError(f"integrator: {' '.join(str(error).split())}") from None


def check_method(method: DictConfig | None, loss: DictConfig, integrator: DictConfig) -> None:
    """``get_method``'s one-line errors (an unknown method or parameter, a bad value), and whether the
    method makes sense with this loss and integrator (``Method.check_config``)."""
    if method is None:
        return
    from ..integrators import get_integrator
    from ..methods import get_method

    params = OmegaConf.to_container(method, resolve=True)
    assert isinstance(params, dict)
    try:
        built = get_method(**params)  # type: ignore[arg-type]
        built.check_config(bool(loss.get("detach_unimodal", False)), get_integrator(**integrator))  # type: ignore[arg-type]
    except (ValueError, TypeError) as error:
        raise ConfigError(" ".join(str(error).split())) from None


def check_tracking(tracking: DictConfig) -> None:
    experiment = tracking.experiment
    if not isinstance(experiment, str) or not experiment.strip():
        raise fail("tracking.experiment", experiment, "must be a non-empty string")
    uri, key = tracking.uri, "tracking.uri"
    if uri is None:
        uri, key = os.environ.get("MLFLOW_TRACKING_URI") or None, "MLFLOW_TRACKING_URI"
    if uri is None:
        return
    scheme = urlparse(uri).scheme
    if len(scheme) <= 1:  # a plain path (or a Windows drive letter): a file store
        return
    if scheme not in TRACKING_SCHEMES:
        raise fail(key, uri, f"unknown scheme {scheme!r}; valid: {', '.join(TRACKING_SCHEMES)}, or a path")
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise fail(key, uri, "an embedded store is sqlite:///<path to the .db file>")
        database = Path(uri[len("sqlite:///") :])
        if not database.parent.is_dir():
            raise fail(key, uri, f"the folder {database.parent} does not exist")


def check_dataset(dataset: DictConfig) -> None:
    """Cheap checks only: a dataset's ``root`` folder, the prepared files of the cached datasets."""
    from ..data.sources import _resolve

    if "root" in dataset:
        root = dataset.root
        if not isinstance(root, str) or not Path(root).is_dir():
            raise fail("dataset.root", root, "no such folder: point it at the dataset (see conf/dataset/)")
    target = dataset.get("_target_")
    if target in DATA_FILES and "data_dir" in dataset:
        data_dir = dataset.data_dir
        for rel in DATA_FILES[target]:
            try:
                _resolve(data_dir, Path(rel))
            except FileNotFoundError as error:
                raise fail("dataset.data_dir", data_dir, str(error)) from None


def check_checkpoint_dir(directory: Any) -> None:
    """``checkpoint.dir`` is created now (as the first checkpoint would) and a file written in it, so
    a folder that cannot be created or written fails here rather than after the first epoch."""
    from hydra.utils import to_absolute_path

    if not isinstance(directory, str) or not directory.strip():
        raise fail("checkpoint.dir", directory, "must be a folder path")
    folder = Path(to_absolute_path(directory))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = f"[Errno {error.errno}] {error.strerror}: {error.filename}" if error.errno else str(error)
        raise fail("checkpoint.dir", directory, f"the folder cannot be created or written ({reason})") from None


def check_distributed(cfg: DictConfig) -> None:
    """``distributed.*`` and ``model.sync_bn``, and what several ranks need: a global batch that
    splits into equal shards, a device each rank can take, a backend that runs on it."""
    import torch

    from ..training.distributed import BACKENDS, world_size

    node = cfg.get("distributed") or {}
    backend = node.get("backend", "auto")
    if backend not in BACKENDS:
        raise fail("distributed.backend", backend, f"valid values: {' | '.join(BACKENDS)}")
    for key in ("timeout_s", "bucket_mb"):
        _number(node, key, "distributed.", positive=True)
    sync_bn = cfg.model.get("sync_bn", False)
    if not isinstance(sync_bn, bool):
        raise fail("model.sync_bn", sync_bn, "must be true or false")
    world = world_size()
    if world == 1:
        return
    batch = cfg.trainer.batch_size
    if batch % world:
        raise fail(
            "trainer.batch_size", batch,
            f"the global batch must split into {world} equal shards (one per rank): a multiple of {world}",
        )  # fmt: skip
    device = str(cfg.device)
    if device not in ("auto", "cuda", "cpu"):
        raise fail("device", device, f"with {world} ranks: auto, cuda or cpu (each rank takes cuda:<local rank>)")
    on_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if backend == "nccl" and not on_cuda:
        raise fail("distributed.backend", backend, "nccl needs CUDA devices; use gloo (or auto) on CPU")
    if sync_bn and not on_cuda:
        raise fail("model.sync_bn", sync_bn, "torch's SyncBatchNorm runs on CUDA only; set false on CPU")
    method = cfg.get("method") or {}
    name = method.get("name", "none")
    from ..methods import METHODS

    if name in METHODS and not METHODS[name].data_parallel:
        raise fail(
            "method.name", name,
            f"not supported on {world} ranks: its decisions use the rank's shard of the batch, so the ranks "
            "would diverge; run it in one process",
        )  # fmt: skip
