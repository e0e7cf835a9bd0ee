"""Integrators: turn the per-loss gradients on one parameter group into one update.

>>> from framework.integrators import get_integrator
>>> integrator = get_integrator("mmpareto", gamma=1.5)
>>> update = integrator(grads, segments=sizes)  # grads: (k, d), row 0 the multimodal loss
"""

from . import mgda, mmpareto, pcgrad, sum  # noqa: F401  (each registers itself)
from .base import Decision, Integrator, cosine_from_gram, tensor_grams
from .registry import INTEGRATORS, get_integrator, register

__all__ = ["INTEGRATORS", "Decision", "Integrator", "cosine_from_gram", "get_integrator", "register", "tensor_grams"]
