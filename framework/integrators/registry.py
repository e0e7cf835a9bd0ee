"""Explicit registry of integrators: a dict filled by the :func:`register` decorator."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from .base import Integrator

MAGNITUDE_PARAMS = ("magnitude", "gamma", "rescale")
"""Parameters every integrator takes: its magnitude rule (:mod:`.magnitude`)."""

INTEGRATORS: dict[str, type[Integrator]] = {}

T = TypeVar("T", bound=type[Integrator])


def register(name: str) -> Callable[[T], T]:
    def decorate(cls: T) -> T:
        if name in INTEGRATORS:
            raise ValueError(f"integrator {name!r} is registered twice")
        cls.name = name
        INTEGRATORS[name] = cls
        return cls

    return decorate


def parameters_of(cls: type[Integrator]) -> list[str]:
    """The keyword parameters of ``cls``'s constructor."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    signature = inspect.signature(cls.__init__)
    return [p.name for p in list(signature.parameters.values())[1:] if p.kind in kinds]


def get_integrator(name: str, **params: Any) -> Integrator:
    """Build the integrator registered as ``name`` with keyword ``params``.

    ``magnitude``, ``gamma`` and ``rescale`` choose the magnitude rule of any integrator (default:
    the method's published one).

    Raises ``ValueError`` naming the valid choices for an unknown name or parameter.
    """
    if name not in INTEGRATORS:
        raise ValueError(f"unknown integrator {name!r}; valid choices: {', '.join(sorted(INTEGRATORS))}")
    cls = INTEGRATORS[name]
    own = parameters_of(cls)
    valid = own + [p for p in MAGNITUDE_PARAMS if p not in own]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"integrator {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"valid parameters: {', '.join(valid)}"
        )
    magnitude = {p: params.pop(p) for p in MAGNITUDE_PARAMS if p in params and p not in own}
    integrator = cls(**params)
    integrator.set_magnitude(**magnitude)
    return integrator
