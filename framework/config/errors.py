"""The error every config check raises (:class:`ConfigError`, built by :func:`fail`), and the range
checks of one integer or number key that several config groups share."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig


class ConfigError(ValueError):
    """A config value that cannot run; the message is one line naming the key."""


def fail(key: str, value: Any, valid: str) -> ConfigError:
    return ConfigError(f"{key}={_show(value)}: {valid}")


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) or value is None else str(value)


def check_int(node: DictConfig, key: str, prefix: str, minimum: int, optional: bool = False) -> None:
    value = node.get(key)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or null" if optional else ""
        raise fail(f"{prefix}{key}", value, f"must be an integer >= {minimum}{extra}")


def check_number(node: DictConfig, key: str, prefix: str, *, positive: bool) -> None:
    if key not in node:
        return
    value = node[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(f"{prefix}{key}", value, f"must be a finite number{' > 0' if positive else ' >= 0'}")
    if (positive and value <= 0) or (not positive and value < 0):
        raise fail(f"{prefix}{key}", value, f"must be {'> 0' if positive else '>= 0'}")
