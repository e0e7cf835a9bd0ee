"""Building components from Hydra config nodes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.utils import instantiate

DEFAULT_TRUSTED_TARGETS = ("framework.*", "torch.optim.*", "torch.nn.*")


def build(node: Any, trusted: Sequence[str] = DEFAULT_TRUSTED_TARGETS, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` restricted to ``trusted`` targets (add your own package there)."""
    return instantiate(node, _execution_whitelist_=list(trusted), **kwargs)
