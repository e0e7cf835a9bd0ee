"""What a multimodal-imbalance method is: a few named hooks the trainer calls, never a branch.

The methods of the imbalanced-multimodal-learning literature act in different places. The
trainer gives each one of these extension points, and calls them for every method alike:

=========================  ==========================================================  ===================
hook                       when, and what the method sees                              used by
=========================  ==========================================================  ===================
``check_config``           before anything runs: the loss and the integrator           all (one-line error)
``prepare``                once, before the optimizer is built: the model               MMCosine, MLA, checks
``phases``                 each step: the sub-steps (each its own forward, backward,    MLA (one per modality)
                           update); default one
``forward``                each (sub-)step: the model and the inputs -> features and    MLA (the phase's
                           logits; default every encoder and every head                 encoder alone)
``training_logits``        each (sub-)step, after the forward pass: features, logits    AGM, MLA
``losses``                 each (sub-)step: the per-head losses -> the losses the       PMR, G-Blending,
                           gradient engine integrates (reweighted, extended, dropped)   GradNorm, UME, MLA
``after_backward``         each (sub-)step, after the integrated gradient is in         OGM-GE, AGM, MLA
                           ``.grad``, before the optimizer step: the parameter groups
``on_epoch_start``         before each training epoch: an ``EpochView`` (model, data)   PMR, G-Blending
``predict``                at evaluation: the heads' logits -> the reported logits      MLA, UME
``decisions``              after each logged step: what it decided, as metrics          all
``state_dict``             checkpoints: everything a resume needs                       stateful ones
=========================  ==========================================================  ===================

A method's decisions are metrics named like the gradient statistics (``framework.metric_names``):
``grad/<group>/coeff`` for a coefficient applied to a parameter group's gradient (beside that
group's cosines), ``grad/method/<kind>/<name>`` for method-wide decisions (loss weights, the
imbalance ratio, scores).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..losses import head_labels
from ..models.base import MULTIMODAL, MultimodalModel

if TYPE_CHECKING:
    from ..data.base import MultimodalDataset, Splits
    from ..integrators import Integrator


class MethodError(ValueError):
    """A method that cannot run with this model, loss or integrator; one line saying why."""


@dataclass(frozen=True)
class EpochView:
    """What a method sees before a training epoch: the model, the data, and how the trainer batches."""

    model: MultimodalModel
    splits: Splits
    epoch: int
    batch_size: int
    eval_batch_size: int
    device: torch.device


@dataclass
class StepView:
    """What a method sees on one (sub-)step. ``phase`` is the sub-step's name (``None``: the step)."""

    model: MultimodalModel
    features: dict[str, Tensor]
    logits: dict[str, Tensor]
    labels: Tensor
    epoch: int
    step: int
    index: int  # batch index within the epoch
    steps_per_epoch: int
    phase: str | None = None
    groups: Mapping[str, list[Tensor]] | None = None


class Method:
    """The no-op method: every hook leaves the step as the integrator and the loss make it.

    Subclasses set :attr:`name` (by :func:`~.registry.register`), :attr:`native_loss` (the loss
    the authors train with: ``one_joint`` for one cross-entropy on the fusion head, ``multitask``
    when the unimodal heads' losses train the encoders too) and override the hooks they need.
    Constructor parameters are the config's keys (``conf/method/<name>.yaml``).
    """

    name: ClassVar[str] = "none"
    native_loss: ClassVar[str] = "multitask"
    needs_multitask_loss: ClassVar[bool] = False
    """The method trains the unimodal heads' losses into the encoders (no one-joint loss)."""
    needs_sum: ClassVar[bool] = False
    """No parameter group is reached by two of the method's losses: an integrator has nothing to do."""
    data_parallel: ClassVar[bool] = True
    """Whether the method is exact on several ranks. Only the no-op method is: the others decide from
    the rank's shard (logits, losses, prototypes), so the ranks would diverge. A subclass is
    ``False`` unless it declares ``data_parallel = True`` (after reducing what it decides from)."""

    needs_multimodal_model: ClassVar[bool] = False
    """The method needs a fusion head and two or more modalities (every imbalance method does; the
    no-op one runs on any model, multi-task ones included). ``True`` for a subclass unless it says
    otherwise."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.data_parallel = bool(cls.__dict__.get("data_parallel", False))
        cls.needs_multimodal_model = bool(cls.__dict__.get("needs_multimodal_model", True))

    def __init__(self) -> None:
        self.seed = 0
        self._decisions: dict[str, float] = {}

    # ---- configuration -------------------------------------------------------------------
    def hparams(self) -> dict[str, Any]:
        import inspect

        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self" and hasattr(self, k)}

    def label(self) -> str:
        """``name`` or ``name(p=v,...)`` with the parameters that differ from their defaults."""
        import inspect

        defaults = {
            k: p.default for k, p in inspect.signature(type(self).__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }  # fmt: skip
        changed = {k: v for k, v in self.hparams().items() if k in defaults and defaults[k] != v}
        suffix = ",".join(f"{k}={v}" for k, v in changed.items())
        return f"{self.name}({suffix})" if suffix else self.name

    def check_config(self, detach_unimodal: bool, integrator: Integrator) -> None:
        """Raise :class:`MethodError` (one line) when this loss or integrator makes no sense here."""
        if self.needs_multitask_loss and detach_unimodal:
            raise MethodError(
                f"method={self.name} trains each encoder with its unimodal head's loss; "
                "loss=one_joint detaches those (use loss=multitask)"
            )
        if self.needs_sum and not _is_plain_sum(integrator):
            raise MethodError(
                f"method={self.name} with integrator={integrator.name}: no parameter group is reached by two of "
                "its losses, so there is nothing to integrate (use integrator=sum)"
            )

    def prepare(self, model: MultimodalModel, seed: int = 0) -> MultimodalModel:
        """Check the model (and change it, e.g. its heads) before the optimizer is built."""
        self.seed = int(seed)
        if self.needs_multimodal_model and (MULTIMODAL not in model.heads or len(model.modalities) < 2):
            raise MethodError(
                f"method={self.name} needs a multimodal model (a fusion head and >= 2 modalities); "
                f"this model's heads are {list(model.heads)}"
            )
        return model

    # ---- the step ---------------------------------------------------------------------------
    def phases(self, epoch: int) -> tuple[str | None, ...]:
        return (None,)

    def forward(
        self, model: MultimodalModel, inputs: dict[str, Tensor], phase: str | None, detach_unimodal: bool
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The (sub-)step's features and logits; a method that trains part of the model in a
        sub-step may run only that part."""
        features = model.encode(inputs)
        return features, model.classify(features, detach_unimodal=detach_unimodal)

    def training_logits(self, view: StepView) -> dict[str, Tensor]:
        return view.logits

    def losses(self, view: StepView, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        return losses

    def after_backward(self, view: StepView) -> None:
        return None

    def on_epoch_start(self, view: EpochView) -> None:
        return None

    def predict(self, logits: dict[str, Tensor]) -> dict[str, Tensor]:
        return logits

    def decisions(self) -> dict[str, float]:
        """The metrics of the last step's decisions (names from :mod:`framework.metric_names`)."""
        return dict(self._decisions)

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None


# ---- helpers shared by the methods -----------------------------------------------------------


def fusion_logits(model: MultimodalModel, features: Mapping[str, Tensor]) -> Tensor:
    """The fusion head's logits for ``features`` (the unimodal heads are not evaluated)."""
    return model.classify(dict(features))[MULTIMODAL]


def padded(features: Mapping[str, Tensor], keep: Iterable[str], pad: str = "zero") -> dict[str, Tensor]:
    """``features`` with every modality not in ``keep`` replaced by zeros (``pad=zero``) or by its
    batch mean (``pad=mean``, detached)."""
    keep = set(keep)
    out = {}
    for m, f in features.items():
        if m in keep:
            out[m] = f
        elif pad == "zero":
            out[m] = torch.zeros_like(f)
        else:
            out[m] = f.detach().mean(dim=0, keepdim=True).expand_as(f)
    return out


def modality_logits(model: MultimodalModel, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Each modality's share of the fusion head's logits, ``f(x_m, 0) - (M-1)/M * f(0)``.

    For concatenation fusion with a linear head this is ``W_m x_m + b / M``: exactly the
    ``out_a``/``out_v`` of OGM-GE's and PMR's code (``fc_out.weight[:, half] @ x + fc_out.bias / 2``).
    For other fusions it is the same construction, affine only where the fusion is.
    """
    modalities = list(features)
    empty = fusion_logits(model, padded(features, ()))
    share = (len(modalities) - 1) / len(modalities)
    return {m: fusion_logits(model, padded(features, (m,))) - share * empty for m in modalities}


def label_probability(logits: Tensor, labels: Tensor) -> Tensor:
    """``softmax(logits)[i, y_i]`` per sample."""
    return F.softmax(logits, dim=1).gather(1, labels.view(-1, 1)).squeeze(1)


def modality_of_group(group: str, modalities: Iterable[str]) -> str | None:
    """The modality a parameter group belongs to (``encoder.audio``, ``layer0.audio``: ``audio``);
    ``None`` for a group shared by modalities."""
    for m in modalities:
        if group == m or group.endswith(f".{m}"):
            return m
    return None


@torch.no_grad()
def mean_head_losses(
    model: MultimodalModel, dataset: MultimodalDataset, batch_size: int, device: torch.device,
    max_batches: int | None = None, predict: Any = None,
) -> dict[str, float]:  # fmt: skip
    """Mean cross-entropy of every head on ``dataset`` (eval mode; the first ``max_batches``)."""
    from ..data.base import iterate_batches

    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    seen = 0
    for index, (inputs, labels) in enumerate(iterate_batches(dataset, batch_size, False)):
        if max_batches is not None and index >= max_batches:
            break
        inputs = {m: t.to(device) for m, t in inputs.items()}
        labels = labels.to(device)
        logits = model(inputs)
        targets = head_labels(labels, tuple(logits))
        for head, value in logits.items():
            sums[head] = sums.get(head, 0.0) + float(F.cross_entropy(value, targets[head], reduction="sum"))
        seen += labels.shape[0]
    model.train(was_training)
    return {head: total / max(seen, 1) for head, total in sums.items()}


def in_window(epoch: int, starts: int, ends: int) -> bool:
    """``starts <= epoch <= ends`` (0-based epochs, both ends included, as the authors' code)."""
    return starts <= epoch <= ends


def _is_plain_sum(integrator: Integrator) -> bool:
    """Whether ``integrator``'s update is the plain sum of the gradients (weights 1, no magnitude rule)."""
    weights = integrator.fixed_combination(2)
    return weights is not None and bool((weights == 1).all())
