"""Multi-task models: one shared trunk on one input modality, one head per task.

The heads are the dataset's tasks (:attr:`framework.data.multitask.MultitaskSpec.tasks`), so the
losses are one cross-entropy per task and :attr:`~MultitaskModel.heads` are the task names; the
best epoch is chosen by the mean accuracy over them (``selection_head = MEAN``). Parameter groups
(``group_by``): ``trunk``, the whole trunk as one group, or ``stage``, each stage of the trunk its
own group (``trunk.<stage>``). Every task loss reaches every group; each head is reached by its own
task loss only (heads are in no group). There is no fusion head and no unimodal head, so the
one-joint-loss baseline (``loss=one_joint``) does not apply: asking for it is an error.

Trunks take ``input_shape`` (one sample, ``(C, H, W)``), expose ``out_dim`` and ``stages()``, the
named stages in order (what ``group_by=stage`` groups).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from torch import Tensor, nn

from ..data.base import DatasetSpec
from .base import MEAN, MultimodalModel, int_attribute
from .resnet import ResNet18Encoder

GROUP_BY = ("trunk", "stage")
TRUNK = "trunk"


class LeNetTrunk(nn.Module):
    """The multi-task LeNet of the Pareto MTL literature (Sener & Koltun 2018; Lin et al. 2019):
    conv 10 5x5, max-pool 2, ReLU, conv 20 5x5, max-pool 2, ReLU, fc ``dim`` (50), ReLU."""

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int] = (10, 20), dim: int = 50) -> None:
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3:
            raise ValueError(f"LeNetTrunk expects (C, H, W) inputs, got shape {shape}")
        first, second = (int(c) for c in channels)
        self.conv1 = nn.Sequential(nn.Conv2d(shape[0], first, 5), nn.MaxPool2d(2), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(first, second, 5), nn.MaxPool2d(2), nn.ReLU())
        side_h, side_w = _lenet_side(shape)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(second * side_h * side_w, dim), nn.ReLU())
        self.out_dim = int(dim)

    def stages(self) -> dict[str, nn.Module]:
        return {"conv1": self.conv1, "conv2": self.conv2, "fc": self.fc}

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv2(self.conv1(x)))


def _lenet_side(shape: tuple[int, ...]) -> tuple[int, int]:
    sides = tuple(((s - 4) // 2 - 4) // 2 for s in shape[1:])
    if min(sides) < 1:
        raise ValueError(f"LeNetTrunk needs images of at least 16x16, got {shape[1:]}")
    return sides  # type: ignore[return-value]


class ResNet18Trunk(ResNet18Encoder):
    """The ResNet-18 of :mod:`framework.models.resnet` as a multi-task trunk (features ``8 * width``),
    its stages being the stem and the four stages of basic blocks."""

    def stages(self) -> dict[str, nn.Module]:
        return {"stem": self.trunk.stem, **{f"stage{i + 1}": s for i, s in enumerate(self.trunk.stages)}}


class MultitaskModel(MultimodalModel):
    """A shared ``trunk`` (a factory called with ``input_shape=``) and one head per task.

    ``head_hidden``: null for a linear head, or the width of one hidden ReLU layer (the LeNet
    literature's task heads are fc 50, ReLU, fc classes).
    """

    selection_head = MEAN

    def __init__(
        self,
        spec: DatasetSpec,
        trunk: Callable[..., nn.Module],
        group_by: str = "trunk",
        head_hidden: int | None = None,
    ) -> None:
        super().__init__()
        tasks = dict(getattr(spec, "tasks", None) or {})
        if not tasks:
            raise ValueError(
                "a multi-task model needs a multi-task dataset (dataset=multi_mnist, multi_fashion, "
                f"multi_fashion_mnist); this one has modalities {list(spec.modalities)} and one label"
            )
        if len(spec.modalities) != 1:
            raise ValueError(f"a multi-task model takes one input modality, the dataset has {list(spec.modalities)}")
        if group_by not in GROUP_BY:
            raise ValueError(f"model.group_by={group_by!r}: valid choices: {', '.join(GROUP_BY)}")
        if head_hidden is not None and head_hidden < 1:
            raise ValueError(f"model.head_hidden={head_hidden}: must be >= 1 or null (a linear head)")
        ((modality, shape),) = spec.modalities.items()
        self.modalities = (modality,)
        self.tasks = tuple(tasks)
        self.group_by = group_by
        self.trunk = trunk(input_shape=tuple(shape))
        if group_by == "stage":
            if not callable(getattr(self.trunk, "stages", None)):
                raise ValueError(f"model.group_by='stage': the trunk {type(self.trunk).__name__} has no stages()")
            staged = {id(p) for stage in _stages(self.trunk).values() for p in stage.parameters()}
            if staged != {id(p) for p in self.trunk.parameters()}:
                name = type(self.trunk).__name__
                raise ValueError(f"model.group_by='stage': the stages of {name} miss some of its parameters")
        dim = int_attribute(self.trunk, "out_dim")
        self.task_heads = nn.ModuleDict({t: _head(dim, classes, head_hidden) for t, classes in tasks.items()})

    @property
    def heads(self) -> tuple[str, ...]:
        """The tasks, in the dataset's label-column order."""
        return self.tasks

    def encode(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        (modality,) = self.modalities
        return {modality: self.trunk(inputs[modality])}

    def classify(self, features: dict[str, Tensor], detach_unimodal: bool = False) -> dict[str, Tensor]:
        """Logits per task. There are no unimodal heads to detach, so ``detach_unimodal`` (the
        one-joint-loss baseline) is refused."""
        if detach_unimodal:
            raise ValueError(
                "loss=one_joint needs a fusion head and unimodal heads; "
                "a multi-task model has one head per task: use loss=multitask"
            )
        (feature,) = features.values()
        return {t: head(feature) for t, head in self.task_heads.items()}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        if self.group_by == TRUNK:
            return {TRUNK: [p for p in self.trunk.parameters() if p.requires_grad]}
        return {
            f"{TRUNK}.{name}": [p for p in stage.parameters() if p.requires_grad]
            for name, stage in _stages(self.trunk).items()
        }


def _stages(trunk: nn.Module) -> dict[str, nn.Module]:
    """``trunk.stages()``, the trunk's parameter groups in order (checked to exist at construction)."""
    # nn.Module's attribute lookup types the method as Tensor | Module
    return cast(Callable[[], dict[str, nn.Module]], trunk.stages)()


def _head(dim: int, classes: int, hidden: int | None) -> nn.Module:
    if hidden is None:
        return nn.Linear(dim, classes)
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))


__all__ = ["GROUP_BY", "LeNetTrunk", "MultitaskModel", "ResNet18Trunk"]
