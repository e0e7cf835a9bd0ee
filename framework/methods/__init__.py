"""Multimodal-imbalance methods (OGM-GE, AGM, PMR, G-Blending, MMCosine, MLA, GradNorm, UME).

Each is one file here, a :class:`Method` subclass registered with ``@register("name")`` and
imported below, plus one config file ``conf/method/<name>.yaml``; the trainer calls its hooks
(:mod:`.base` lists them) and never tests its name.
"""

from . import ogm_ge, agm, pmr, gblending, mmcosine, mla, gradnorm, ume  # noqa: F401
from .base import EpochView, Method, MethodError, StepView
from .registry import METHODS, get_method, register

__all__ = ["METHODS", "EpochView", "Method", "MethodError", "StepView", "get_method", "register"]
