"""Every MLflow metric name the framework logs, in one place.

The trainer, the gradient statistics, the noise probe and ``analysis/`` build and parse names
with these functions only, so a name is written once. ``G`` is a parameter group
(``encoder.<modality>`` for late fusion), ``i``/``j`` are loss names, ``h`` a head::

    train/loss/i                 per epoch: mean training loss of objective i
    val/acc/h, test/acc/h        per epoch: accuracy of head h (``multimodal`` is the fusion head)
    best/test/acc/h              at the end: test accuracy at the best validation epoch
    best/epoch, best/val/acc/multimodal
    last/test/acc/h              at the end: test accuracy at the last epoch
    lr                           per epoch: learning rate of the first optimizer group
    data/skipped/<split>         per epoch: corrupt samples skipped by a disk dataset
    train/skipped_steps          per epoch: steps skipped for a non-finite loss or gradient
                                 (only with trainer.on_nonfinite=skip_step)
    grad/G/cos/i.j               per step: cosine between g_i and g_j (i before j)
    grad/G/conflict              per step: 1 if any pair has cosine < 0
    grad/G/norm/i                per step: |g_i|
    grad/G/norm_ratio/j          per step: |g_first| / |g_j| for each later loss j
    grad/G/update_to_sum         per step: |update| / |sum_i g_i|
    grad/G/weight/i              per step: the integrator's weight on g_i
    grad/G/conflict_rate         per epoch: fraction of recorded steps with a conflict
    grad/G/norm_mean/i           per epoch: mean of the per-batch |g_i|
    grad/G/norm_std/i            per epoch: population std of the per-batch |g_i|
    grad/G/cov_trace/i           every N steps: trace of the per-sample gradient covariance
    grad/G/events/<event>        per epoch: recorded steps on which the integrator reported <event>,
                                 e.g. solver_fallback (Nash-MTL kept its previous weights)
    grad/G/coeff                 per step: a method's coefficient on group G's gradient (OGM-GE, AGM)
    grad/method/<kind>/<name>    per step: a method's method-wide decision, e.g. loss_weight/<loss>,
                                 ratio/<modality>, score/<modality> (framework/methods/)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

MULTIMODAL = "multimodal"
MEAN = "mean"  # the mean accuracy over a model's heads (multi-task models select epochs by it)
LR = "lr"
BEST_EPOCH = "best/epoch"
SKIPPED_STEPS = "train/skipped_steps"
OVERFLOW_STEPS = "train/overflow_steps"  # steps the fp16 gradient scaler skipped (trainer.precision=16)
LOSS_SCALE = "train/loss_scale"  # the fp16 gradient scaler's scale at the end of the epoch
GRAD_PREFIX = "grad/"

# per-loss kinds under grad/G/<kind>/<loss>, and per-group kinds under grad/G/<kind>
NORM = "norm"
NORM_RATIO = "norm_ratio"
WEIGHT = "weight"
NORM_MEAN = "norm_mean"
NORM_STD = "norm_std"
COV_TRACE = "cov_trace"
STEP_LOSS_KINDS = (NORM, NORM_RATIO, WEIGHT)
EPOCH_LOSS_KINDS = (NORM_MEAN, NORM_STD)
PROBE_LOSS_KINDS = (COV_TRACE,)
COSINE = "cos"
CONFLICT = "conflict"
CONFLICT_RATE = "conflict_rate"
UPDATE_TO_SUM = "update_to_sum"
EVENTS = "events"
COEFF = "coeff"  # a method's coefficient on a group's gradient
METHOD_GROUP = "method"  # the pseudo-group of a method's method-wide decisions
LOSS_WEIGHT = "loss_weight"
RATIO = "ratio"
SCORE = "score"


def train_loss(objective: str) -> str:
    return f"train/loss/{objective}"


def accuracy(split: str, head: str) -> str:
    """``<split>/acc/<head>``; ``split`` is ``val``, ``test``, ``best/test`` or ``last/test``."""
    return f"{split}/acc/{head}"


def best_test_accuracy(head: str) -> str:
    return accuracy("best/test", head)


def last_test_accuracy(head: str) -> str:
    return accuracy("last/test", head)


def final_accuracy(head: str, at: Literal["best", "last"]) -> str:
    """Test accuracy logged at the end: :func:`best_test_accuracy` (``at="best"``) or
    :func:`last_test_accuracy` (``at="last"``). (Not ``test_...``: pytest would collect it.)"""
    return best_test_accuracy(head) if at == "best" else last_test_accuracy(head)


BEST_VAL_MULTIMODAL = accuracy("best/val", MULTIMODAL)
FINAL_MULTIMODAL = best_test_accuracy(MULTIMODAL)


def skipped(split: str) -> str:
    return f"data/skipped/{split}"


def grad(group: str, kind: str, loss: str | None = None) -> str:
    """``grad/<group>/<kind>`` or ``grad/<group>/<kind>/<loss>``."""
    return f"{GRAD_PREFIX}{group}/{kind}" if loss is None else f"{GRAD_PREFIX}{group}/{kind}/{loss}"


def cosine(group: str, a: str, b: str) -> str:
    return grad(group, COSINE, f"{a}.{b}")


def coefficient(group: str) -> str:
    """``grad/<group>/coeff``: the coefficient a method put on ``group``'s gradient this step."""
    return grad(group, COEFF)


def method_decision(kind: str, name: str) -> str:
    """``grad/method/<kind>/<name>``: a method-wide decision (a loss weight, a ratio, a score)."""
    return grad(METHOD_GROUP, kind, name)


def heads_of(metric_keys: Iterable[str], split: str = "best/test") -> list[str]:
    """The heads ``h`` of the metrics ``<split>/acc/<h>`` among ``metric_keys``, sorted."""
    prefix = accuracy(split, "")
    return sorted(k[len(prefix) :] for k in metric_keys if k.startswith(prefix))


def parse_grad(key: str, kind: str) -> tuple[str, str] | None:
    """``(group, loss)`` for a key ``grad/<group>/<kind>/<loss>``; ``None`` if it is not one."""
    match = re.fullmatch(rf"{re.escape(GRAD_PREFIX)}(.+)/{re.escape(kind)}/([^/]+)", key)
    return (match.group(1), match.group(2)) if match else None
