"""PMR: prototypical modal rebalance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import metric_names as names
from ..data.base import iterate_batches, num_batches
from ..models.base import MULTIMODAL
from .base import EpochView, Method, MethodError, StepView, in_window, label_probability
from .registry import register


def prototype_logits(features: Tensor, prototypes: Tensor) -> Tensor:
    """``-||x_i - c_k||``: the negative Euclidean distance to each class prototype (``EU_dist``)."""
    return -torch.cdist(features, prototypes)


def pmr_coefficients(scores: dict[str, float], alpha: float) -> dict[str, float]:
    """The prototype loss weights: ``alpha`` for every modality but the one with the highest
    prototype score, 0 for that one (two modalities, the code: ``ratio_a_p > 1`` -> ``beta = 0``,
    ``lam = alpha``; ``< 1`` -> ``beta = alpha``, ``lam = 0``; equal -> both 0)."""
    best = max(scores.values())
    if all(s == best for s in scores.values()):
        return dict.fromkeys(scores, 0.0)
    return {m: 0.0 if s == best else alpha for m, s in scores.items()}


@register("pmr")
class PMR(Method):
    """PMR (Fan, Xu, Wei, Hu, Yuan: "PMR: Prototypical Modal Rebalance for Multimodal Learning",
    CVPR 2023; code fanyunfeng-bit/Modal-Imbalance-PMR, ``main_Prototype_grad.py``).

    Before each epoch, each modality's class prototypes are the mean feature of each class over
    the first tenth of the (shuffled) training batches, in eval mode (``calculate_prototype``);
    from the third epoch on they are smoothed, ``(1 - momentum_coef) * new + momentum_coef * old``
    (the code's ``epoch <= 0`` test after epoch 0). Each step, the prototype cross-entropy
    ``PCE_u = CE(-||x_u - c||, y)`` and the prototype score ``sum_i softmax(-||x_u - c||)_i[y_i]``;
    the weaker modality's ``PCE`` is added to the multimodal loss with weight ``alpha``
    (:func:`pmr_coefficients`), in epochs ``modulation_starts <= epoch <= modulation_ends``.

    Parameters (the code's defaults): ``alpha`` 1.0, ``momentum_coef`` 0.2, ``modulation_starts`` 0,
    ``modulation_ends`` 100, ``proto_fraction`` 0.1 (the tenth of the batches). The paper's
    prototypical entropy regulariser (maximise the dominant modality's prototype entropy early in
    training) is not in the public code: ``entropy_weight`` (mu, 0 = off as in the code) and
    ``entropy_epochs`` (how many first epochs) turn it on.
    """

    native_loss = "one_joint"

    def __init__(
        self, alpha: float = 1.0, momentum_coef: float = 0.2, modulation_starts: int = 0, modulation_ends: int = 100,
        proto_fraction: float = 0.1, entropy_weight: float = 0.0, entropy_epochs: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        if not 0 <= momentum_coef <= 1:
            raise MethodError(f"method.momentum_coef={momentum_coef}: must be in [0, 1]")
        if not 0 < proto_fraction <= 1:
            raise MethodError(f"method.proto_fraction={proto_fraction}: must be in (0, 1]")
        self.alpha, self.momentum_coef = float(alpha), float(momentum_coef)
        self.modulation_starts, self.modulation_ends = int(modulation_starts), int(modulation_ends)
        self.proto_fraction = float(proto_fraction)
        self.entropy_weight, self.entropy_epochs = float(entropy_weight), int(entropy_epochs)
        self.prototypes: dict[str, Tensor] = {}
        self.generator = torch.Generator()
        self._seeded = False

    @torch.no_grad()
    def compute_prototypes(self, view: EpochView) -> dict[str, Tensor]:
        model, dataset = view.model, view.splits.train
        classes = view.splits.spec.num_classes
        if not self._seeded:
            self.generator.manual_seed(self.seed)
            self._seeded = True
        limit = max(1, int(num_batches(dataset, view.batch_size) * self.proto_fraction))
        was_training = model.training
        model.eval()
        sums: dict[str, Tensor] = {}
        counts = torch.zeros(classes, device=view.device)
        for index, (inputs, labels) in enumerate(iterate_batches(dataset, view.batch_size, True, self.generator)):
            if index >= limit:
                break
            inputs = {m: t.to(view.device) for m, t in inputs.items()}
            labels = labels.to(view.device)
            features = model.encode(inputs)
            onehot = F.one_hot(labels, classes).to(next(iter(features.values())).dtype)
            for m, f in features.items():
                sums[m] = sums.get(m, 0) + onehot.T @ f.flatten(1)
            counts += onehot.sum(0)
        model.train(was_training)
        return {m: s / counts.clamp_min(1).unsqueeze(1) for m, s in sums.items()}

    def on_epoch_start(self, view: EpochView) -> None:
        new = self.compute_prototypes(view)
        if view.epoch >= 2 and self.prototypes:
            new = {
                m: (1 - self.momentum_coef) * p + self.momentum_coef * self.prototypes[m].to(p.device)
                for m, p in new.items()
            }
        self.prototypes = new

    def losses(self, view: StepView, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        if not self.prototypes:
            raise MethodError("method=pmr: no prototypes yet (on_epoch_start was not called)")
        sims = {m: prototype_logits(f.flatten(1), self.prototypes[m].to(f.device)) for m, f in view.features.items()}
        scores = {m: float(label_probability(s.detach(), view.labels).sum()) for m, s in sims.items()}
        first, second = list(scores)[:2]
        self._decisions = {names.method_decision(names.RATIO, first): scores[first] / max(scores[second], 1e-12)}
        self._decisions.update(
            {names.method_decision(names.SCORE, m): s / view.labels.shape[0] for m, s in scores.items()}
        )
        total = losses[MULTIMODAL]
        coefficients = dict.fromkeys(scores, 0.0)
        if in_window(view.epoch, self.modulation_starts, self.modulation_ends):
            coefficients = pmr_coefficients(scores, self.alpha)
            for m, c in coefficients.items():
                if c:
                    total = total + c * F.cross_entropy(sims[m], view.labels)
        if self.entropy_weight and view.epoch < self.entropy_epochs:
            dominant = max(scores, key=scores.__getitem__)
            p = F.softmax(sims[dominant], dim=1)
            total = total - self.entropy_weight * -(p * torch.log(p.clamp_min(1e-12))).sum(1).mean()
        self._decisions.update(
            {names.method_decision(names.LOSS_WEIGHT, f"prototype_{m}"): c for m, c in coefficients.items()}
        )
        return {**losses, MULTIMODAL: total}

    def state_dict(self) -> dict[str, Any]:
        return {"prototypes": {m: p.cpu() for m, p in self.prototypes.items()},
                "generator": self.generator.get_state(), "seeded": self._seeded}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        device = next(iter(self.prototypes.values())).device if self.prototypes else None
        self.prototypes = {m: p.to(device) if device else p for m, p in state["prototypes"].items()}
        self.generator.set_state(state["generator"])
        self._seeded = bool(state["seeded"])
