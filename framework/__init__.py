"""Gradient integration for multimodal and multi-task learning.

``framework.backward`` and ``framework.IntegratedBackward`` are the library API for a training loop
of your own; ``python -m framework.main`` is the experiment runner.
"""

from .integrated_backward import IntegratedBackward, backward

__all__ = ["IntegratedBackward", "backward"]
