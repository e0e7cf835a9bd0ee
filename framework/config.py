"""Building components from Hydra config nodes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

DEFAULT_TRUSTED_TARGETS = ("framework.*", "torch.optim.*", "torch.nn.*")

FRAMEWORK_KEYS = frozenset({"sync_bn"})
"""Keys of a ``_target_`` node that the framework reads itself and never passes to the target
(``model.sync_bn``: convert BatchNorm to SyncBatchNorm on several ranks)."""


def build(node: Any, trusted: Sequence[str] = DEFAULT_TRUSTED_TARGETS, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` restricted to ``trusted`` targets (add your own package there)."""
    if isinstance(node, DictConfig) and FRAMEWORK_KEYS & set(node):
        container = OmegaConf.to_container(node, resolve=True)
        assert isinstance(container, dict)
        node = OmegaConf.create({k: v for k, v in container.items() if k not in FRAMEWORK_KEYS})
    return instantiate(node, _execution_whitelist_=list(trusted), **kwargs)
