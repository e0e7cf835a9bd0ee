"""Multimodal and multi-task models, encoders and fusion modules (chosen by Hydra ``_target_``)."""

from .base import MEAN, MULTIMODAL, MultimodalModel
from .late_fusion import LateFusionModel
from .multitask import MultitaskModel

__all__ = ["MEAN", "MULTIMODAL", "LateFusionModel", "MultimodalModel", "MultitaskModel"]
