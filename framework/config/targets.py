"""Building components from Hydra config nodes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

DEFAULT_TRUSTED_TARGETS = ("framework.*", "torch.optim.*", "torch.nn.*")
"""The default ``trusted_targets``: ``fnmatch`` patterns of the ``_target_``\\ s a config may instantiate.
The one copy: the schema's default (:mod:`framework.config.schema`) is made from it and
``conf/train.yaml`` states it for readers (``tests/unit/test_trusted_targets.py`` checks both).
Users add their own packages with ``extra_trusted_targets``, never by restating this list."""

REQUIRED_TRUSTED_TARGET = "framework.*"
"""The pattern ``trusted_targets`` must keep: without it the framework's own datasets, models and
losses are refused (``framework.config.validation.check_trusted_targets``)."""

FRAMEWORK_KEYS = frozenset({"sync_bn"})
"""Keys of a ``_target_`` node that the framework reads itself and never passes to the target
(``model.sync_bn``: convert BatchNorm to SyncBatchNorm on several ranks)."""


def trusted_targets(cfg: Any) -> list[str]:
    """The ``_target_`` patterns ``cfg`` may instantiate: ``trusted_targets`` (default
    :data:`DEFAULT_TRUSTED_TARGETS`), then the user's ``extra_trusted_targets``."""
    base = cfg.get("trusted_targets")
    extra = cfg.get("extra_trusted_targets")
    return [*(DEFAULT_TRUSTED_TARGETS if base is None else base), *(extra or ())]


def build(node: Any, trusted: Sequence[str] = DEFAULT_TRUSTED_TARGETS, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` restricted to ``trusted`` targets (:func:`trusted_targets` of the config)."""
    if isinstance(node, DictConfig) and FRAMEWORK_KEYS & set(node):
        container = OmegaConf.to_container(node, resolve=True)
        assert isinstance(container, dict)
        node = OmegaConf.create({k: v for k, v in container.items() if k not in FRAMEWORK_KEYS})
    return instantiate(node, _execution_whitelist_=list(trusted), **kwargs)
