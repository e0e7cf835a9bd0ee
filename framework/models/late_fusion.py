"""One encoder per modality, a fusion module with a linear head, a linear head per modality."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from ..data.base import DatasetSpec
from .base import MultimodalModel, fusion_and_unimodal_logits, int_attribute

EncoderFactory = Callable[..., nn.Module]


class LateFusionModel(MultimodalModel):
    """Built for any number of modalities from one encoder factory (``encoder``), optionally
    overridden per modality (``encoders``); each factory is called with ``input_shape=``.

    Parameter groups are the encoders, named ``encoder.<modality>``.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        encoder: EncoderFactory,
        fusion: Callable[..., nn.Module],
        encoders: Mapping[str, EncoderFactory] | None = None,
    ) -> None:
        super().__init__()
        overrides = dict(encoders or {})
        unknown = sorted(set(overrides) - set(spec.modalities))
        if unknown:
            raise ValueError(f"encoders given for unknown modalities {unknown}; dataset has {list(spec.modalities)}")
        self.modalities = tuple(spec.modalities)
        self.encoders = nn.ModuleDict(
            {m: overrides.get(m, encoder)(input_shape=tuple(shape)) for m, shape in spec.modalities.items()}
        )
        dims = {m: int_attribute(e, "out_dim") for m, e in self.encoders.items()}
        self.fusion = fusion(in_dims=dims)
        self.fusion_head = nn.Linear(int_attribute(self.fusion, "out_dim"), spec.num_classes)
        self.unimodal_heads = nn.ModuleDict({m: nn.Linear(d, spec.num_classes) for m, d in dims.items()})

    def encode(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {m: self.encoders[m](inputs[m]) for m in self.modalities}

    def classify(self, features: dict[str, Tensor], detach_unimodal: bool = False) -> dict[str, Tensor]:
        return fusion_and_unimodal_logits(features, self.fusion, self.fusion_head, self.unimodal_heads, detach_unimodal)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {f"encoder.{m}": [p for p in e.parameters() if p.requires_grad] for m, e in self.encoders.items()}
