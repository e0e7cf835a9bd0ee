"""Explicit registry of multimodal-imbalance methods: a dict filled by the :func:`register` decorator."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from .base import Method, MethodError

METHODS: dict[str, type[Method]] = {"none": Method}

T = TypeVar("T", bound=type[Method])


def register(name: str) -> Callable[[T], T]:
    def decorate(cls: T) -> T:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorate


def get_method(name: str = "none", **params: Any) -> Method:
    """Build the method registered as ``name``; one-line :class:`MethodError` for a bad name or parameter."""
    if name not in METHODS:
        raise MethodError(f"method.name={name!r}: unknown method; valid choices: {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    signature = inspect.signature(cls.__init__)
    valid = [p for p in list(signature.parameters)[1:]]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise MethodError(
            f"method {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"valid parameters: {', '.join(valid) or 'none'}"
        )
    return cls(**params)
