"""Explicit registry of integrators: a dict filled by the :func:`register` decorator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..registry import Registry, parameters_of
from .base import Integrator

MAGNITUDE_PARAMS = ("magnitude", "gamma", "rescale")
"""Parameters every integrator takes: its magnitude rule (:mod:`.magnitude`)."""

INTEGRATORS: Registry[type[Integrator]] = Registry("integrator")

T = TypeVar("T", bound=type[Integrator])


def register(name: str) -> Callable[[T], T]:
    """Register an :class:`Integrator` subclass as ``name`` (and set its ``name``)."""
    add = INTEGRATORS.register(name, set_name=True)

    def decorate(cls: T) -> T:
        add(cls)
        return cls

    return decorate


def get_integrator(name: str, **params: Any) -> Integrator:
    """Build the integrator registered as ``name`` with keyword ``params``.

    ``magnitude``, ``gamma`` and ``rescale`` choose the magnitude rule of any integrator (default:
    the method's published one).

    Raises ``ValueError`` naming the valid choices for an unknown name or parameter.
    """
    cls = INTEGRATORS.lookup(name)
    own = parameters_of(cls)
    INTEGRATORS.check_parameters(name, params, own + [p for p in MAGNITUDE_PARAMS if p not in own])
    magnitude = {p: params.pop(p) for p in MAGNITUDE_PARAMS if p in params and p not in own}
    integrator = cls(**params)
    integrator.set_magnitude(**magnitude)
    return integrator


__all__ = ["INTEGRATORS", "MAGNITUDE_PARAMS", "get_integrator", "parameters_of", "register"]
