"""The ``_target_``\\ s of the groups a run builds (dataset, model, loss, optimizer, scheduler): trusted
(``trusted_targets`` and ``extra_trusted_targets``), importable (a one-line reason when not), and
called with keys their signature takes, of the annotated scalar types."""

from __future__ import annotations

import fnmatch
import inspect
import os
import types
import typing
from collections.abc import Iterable, Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig

from .errors import fail
from .targets import DEFAULT_TRUSTED_TARGETS, FRAMEWORK_KEYS, REQUIRED_TRUSTED_TARGET, trusted_targets

TARGET_GROUPS = ("dataset", "model", "loss", "optimizer", "scheduler")


def _targets(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    """``(path, node)`` of every node with a ``_target_`` under ``node``."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in map(str, node):
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
    for key in map(str, node):
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
