"""Explicit registry of multimodal-imbalance methods: a dict filled by the :func:`register` decorator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..registry import Registry, parameters_of
from .base import Method, MethodError

METHODS: Registry[type[Method]] = Registry("method", error=MethodError)
METHODS.add("none", Method)

T = TypeVar("T", bound=type[Method])


def register(name: str) -> Callable[[T], T]:
    """Register a :class:`Method` subclass as ``name`` (and set its ``name``)."""
    add = METHODS.register(name, set_name=True)

    def decorate(cls: T) -> T:
        add(cls)
        return cls

    return decorate


def get_method(name: str = "none", **params: Any) -> Method:
    """Build the method registered as ``name``; one-line :class:`MethodError` for a bad name or parameter."""
    cls = METHODS.lookup(name, what=f"method.name={name!r}: unknown method")
    METHODS.check_parameters(name, params, parameters_of(cls))
    return cls(**params)
