"""Integrators: turn the per-loss gradients on one parameter group into one update.

>>> from framework.integrators import get_integrator
>>> integrator = get_integrator("mmpareto", gamma=1.5)
>>> update, decision = integrator(grads, segments=sizes)  # grads: (k, d), one row per loss
>>> decision.weights, decision.cosine

A new method is one file here (a subclass of :class:`Integrator` with ``weights(gram)``, and a
:class:`MagnitudeRule` if it needs one), registered with ``@register("name")`` and imported below,
plus one config file ``conf/integrator/<name>.yaml``.
"""

# Each module registers itself; the registration order is the order of rows in reports.
from . import (  # noqa: F401
    sum,
    pcgrad,
    mgda,
    mmpareto,
    upgrad,
    dualproj,
    cagrad,
    nash_mtl,
    imtl_g,
    aligned_mtl,
    gradvac,
    _config,
    graddrop,
    fairgrad,
    excess_mtl,
    pcd,
    trimmed_mean,
    random,
    mean,
    cr_mogm,
    modo,
    sdmgrad,
)
from .base import Decision, Integration, Integrator, MagnitudeRule, cosine_from_gram
from .registry import INTEGRATORS, get_integrator, register

__all__ = [
    "INTEGRATORS",
    "Decision",
    "Integration",
    "Integrator",
    "MagnitudeRule",
    "cosine_from_gram",
    "get_integrator",
    "register",
]
