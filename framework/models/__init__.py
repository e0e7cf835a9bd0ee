"""Multimodal models, encoders and fusion modules (chosen by Hydra ``_target_``)."""

from .base import MULTIMODAL, MultimodalModel
from .late_fusion import LateFusionModel

__all__ = ["MULTIMODAL", "LateFusionModel", "MultimodalModel"]
