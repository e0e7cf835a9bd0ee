"""What is benchmarked: the model cases (model, batch shape and size, rounds, time budget) and the
pieces every variant builds from them (the initial model, the fixed batch, the optimizer).

Cases are registered by name with :func:`register_case`; :data:`MODELS` lists them in registration order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

from ..data.base import DatasetSpec
from ..models.base import MultimodalModel
from ..models.fusion import ConcatFusion
from ..models.late_fusion import LateFusionModel
from ..registry import Registry

REFERENCE_NEEDS_ENCODERS = "the reference code's step is written for one encoder per modality (two losses per group)"

AV_SPEC = DatasetSpec({"audio": (1, 128, 128), "visual": (2, 3, 112, 112)}, num_classes=6)
"""The audio-visual batch of the full benchmark: a CREMA-D-sized spectrogram and two frames."""

QUICK_AV_SPEC = DatasetSpec({"audio": (1, 32, 32), "visual": (2, 3, 32, 32)}, num_classes=6)
"""The tiny audio-visual batch of ``--quick``."""


@dataclass(frozen=True)
class ModelCase:
    name: str
    spec: DatasetSpec
    batch_size: int
    build: Callable[[DatasetSpec], MultimodalModel]
    rounds: int
    steps_per_round: int
    budget_s: float = math.inf  # stop adding rounds (after three) once the next would end past this
    quick: bool = False
    unsupported: dict[str, str] = field(default_factory=dict)  # variant -> why it does not apply

    def variants(self, requested: list[str]) -> list[str]:
        return [v for v in requested if v not in self.unsupported]


CaseFactory = Callable[[bool], ModelCase]
CASES: Registry[CaseFactory] = Registry("model")
"""Model name -> ``factory(quick)`` building its case, filled by :func:`register_case`."""
register_case = CASES.register


def late_fusion(encoder: Callable[..., nn.Module]) -> Callable[[DatasetSpec], MultimodalModel]:
    return lambda spec: LateFusionModel(spec, encoder, ConcatFusion)


# Time budgets of the full run (the rounds loop only; warmup, the memory step and the statistics
# probe come on top, about 80 s for the three models on 2 CPU cores): 20 + 110 + 60 = 190 s of
# rounds, about 270 s in all.


@register_case("cnn_cgmnist")
def cnn_cgmnist(quick: bool) -> ModelCase:
    from ..models.encoders import SmallCNN

    spec = DatasetSpec({"gray": (1, 28, 28), "color": (3, 28, 28)}, num_classes=10)
    build = late_fusion(partial(SmallCNN, channels=(16, 32), dim=64))
    if quick:
        return ModelCase("cnn_cgmnist", spec, 8, build, 1, 1, quick=True)
    return ModelCase("cnn_cgmnist", spec, 64, build, 60, 1, budget_s=20.0)


@register_case("resnet18_av")
def resnet18_av(quick: bool) -> ModelCase:
    from ..models.resnet import ResNet18Encoder

    if quick:  # same architecture family, tiny: seconds, for tests
        build = late_fusion(partial(ResNet18Encoder, width=8))
        return ModelCase("resnet18_av", QUICK_AV_SPEC, 4, build, 1, 1, quick=True)
    return ModelCase("resnet18_av", AV_SPEC, 16, late_fusion(ResNet18Encoder), 8, 1, budget_s=110.0)


@register_case("transformer_xmodal")
def transformer_xmodal(quick: bool) -> ModelCase:
    from ..models.transformer import CrossModalTransformer

    unsupported = {"mmpareto_reference_style": REFERENCE_NEEDS_ENCODERS}
    if quick:
        build = partial(CrossModalTransformer, dim=16, depth=2, heads=2, patch_size=8)
        return ModelCase("transformer_xmodal", QUICK_AV_SPEC, 4, build, 1, 1, quick=True, unsupported=unsupported)
    # the same batch as resnet18_av, the settings of conf/model/transformer_xmodal.yaml:
    # 16x16 patches, 64 spectrogram tokens and 2 x 49 frame tokens, 4 cross-modal layers of width 128
    build = partial(CrossModalTransformer, dim=128, depth=4, heads=4, mlp_ratio=2.0, patch_size=16)
    return ModelCase("transformer_xmodal", AV_SPEC, 16, build, 20, 1, budget_s=60.0, unsupported=unsupported)


MODELS = tuple(CASES)


def model_case(name: str, quick: bool) -> ModelCase:
    return CASES.lookup(name)(quick)


def build_model(case: ModelCase, seed: int = 0) -> MultimodalModel:
    torch.manual_seed(seed)
    return case.build(case.spec)


def make_batch(case: ModelCase, size: int, seed: int = 1) -> tuple[dict[str, Tensor], Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(size, *shape, generator=generator) for m, shape in case.spec.modalities.items()}
    return inputs, torch.randint(case.spec.num_classes, (size,), generator=generator)


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
