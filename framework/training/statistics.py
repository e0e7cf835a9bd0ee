"""Gradient-conflict statistics per parameter group, under one naming scheme.

``G`` is a parameter group (``encoder.<modality>`` for late fusion), ``i, j`` are loss names
(``multimodal``, then one per modality). Every integrator logs the same names
(built by :mod:`framework.metric_names`).

Per step, every ``statistics.log_every`` steps (the metric's step is the global training step)::

    grad/G/cos/i.j        cosine between the per-loss gradients g_i and g_j (i before j)
    grad/G/conflict       1 if any pair has cosine < 0, else 0
    grad/G/norm/i         |g_i|
    grad/G/norm_ratio/j   |g_multimodal| / |g_j| for each other loss j
    grad/G/update_to_sum  |update| / |sum_i g_i|: what the integrator did to the magnitude
    grad/G/weight/i       the integrator's weight on g_i (before any magnitude rule)

Every ``statistics.noise_every`` steps, on a fixed probe batch of ``statistics.probe_size`` train
samples (model in eval mode; see :mod:`framework.training.noise`)::

    grad/G/cov_trace/i    tr Cov of loss i's per-sample gradients on G: mean_s |g_s - mean g|^2

The probe never fails a run: :attr:`GradientStatistics.probe_status` says how it computes the
per-sample gradients (``vmap``, or ``loop`` where the model cannot be vmapped, e.g. RNN encoders)
or that it is ``off`` (no probe, or it raised: logged once, then no more traces);
:meth:`GradientStatistics.check_probe` decides it before training on two probe samples, and the
caller tags the run with it (:data:`NOISE_PROBE_TAG`).

Per epoch (the metric's step is the epoch), over the steps where statistics were recorded::

    grad/G/conflict_rate  fraction of those steps with a conflict
    grad/G/norm_mean/i    mean of the per-batch |g_i|
    grad/G/norm_std/i     spread (population standard deviation) of the per-batch |g_i|

Integrators other than ``sum`` compute the per-loss gradients on every step, so the per-epoch
summaries cover every step; ``sum`` computes them only on the steps where it logs. Step metrics are
handed to :class:`~framework.tracking.RunTracker` as one mapping per step, which buffers them and
sends them in batches.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sized
from typing import cast

import torch
from torch import Tensor

from ..config.schema import StatisticsSettings as StatisticsSettings  # the schema node of trainer.statistics
from ..metric_names import (
    CONFLICT,
    CONFLICT_RATE,
    EVENTS,
    NORM,
    NORM_MEAN,
    NORM_RATIO,
    NORM_STD,
    UPDATE_TO_SUM,
    WEIGHT,
    cosine,
    grad,
)
from ..data.base import MultimodalDataset
from ..integrators import get_integrator
from ..integrators.base import fetch_decisions
from ..models.base import MultimodalModel
from .gradients import GradientEngine
from .noise import LossFn, covariance_trace_metrics, covariance_traces, probe_method
from .plan import GradientPlan, GroupDecision

log = logging.getLogger("framework")

NOISE_PROBE_TAG = "framework.noise_probe"
"""Run tag with the probe's :attr:`GradientStatistics.probe_status` (``vmap``, ``loop`` or ``off``)."""
PROBE_OFF, PROBE_UNCHECKED = "off", "unchecked"
CHECK_SAMPLES = 2
"""Probe samples :meth:`GradientStatistics.check_probe` uses."""


def step_metrics(decisions: list[GroupDecision]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for group_decision in decisions:
        group, d, losses = group_decision.group, group_decision.decision, group_decision.losses
        norms, cosines, weights = d.norms.tolist(), d.cosine.tolist(), d.weights.tolist()
        conflict = False
        for i, a in enumerate(losses):
            metrics[grad(group, NORM, a)] = norms[i]
            metrics[grad(group, WEIGHT, a)] = weights[i]
            for j in range(i + 1, len(losses)):
                metrics[cosine(group, a, losses[j])] = cosines[i][j]
                conflict |= cosines[i][j] < 0
            if i > 0:
                metrics[grad(group, NORM_RATIO, a)] = norms[0] / norms[i] if norms[i] > 0 else math.nan
        metrics[grad(group, CONFLICT)] = float(conflict)
        sum_norm = d.sum_norm
        metrics[grad(group, UPDATE_TO_SUM)] = d.update_norm / sum_norm if sum_norm > 0 else math.nan
    return metrics


class EpochStatistics:
    """Accumulates per-step statistics into per-epoch summaries."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._grams: dict[tuple[str, tuple[str, ...]], list[Tensor]] = defaultdict(list)
        self._events: dict[tuple[str, str], int] = defaultdict(int)

    def observe(self, decisions: list[GroupDecision]) -> None:
        """Keep each step's Gram matrices where they are (no host read per step)."""
        for group_decision in decisions:
            gram = group_decision.decision.gram_on_device.detach()
            self._grams[(group_decision.group, group_decision.losses)].append(gram)
            for event, count in group_decision.decision.events.items():
                self._events[(group_decision.group, event)] += count

    def summary(self) -> dict[str, float]:
        """The epoch's conflict rate per group and each loss's mean and spread of gradient norm, from
        the kept Gram matrices, read to the host in one transfer per group and loss set."""
        conflicts: dict[str, list[float]] = defaultdict(list)
        norms: dict[tuple[str, str], list[float]] = defaultdict(list)
        for (group, losses), grams in self._grams.items():
            stacked = torch.stack([g.to(torch.float64) for g in grams]).cpu()
            k = len(losses)
            rows, cols = torch.triu_indices(k, k, offset=1).unbind()
            upper = stacked[:, rows, cols]
            # cosine < 0 exactly when the Gram entry is < 0 (zero gradients have cosine 0)
            conflicts[group] += (upper < 0).any(dim=1).double().tolist() if k > 1 else [0.0] * len(grams)
            for loss, column in zip(losses, stacked.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt().T, strict=True):
                norms[(group, loss)] += column.tolist()
        metrics = {grad(g, CONFLICT_RATE): sum(v) / len(v) for g, v in conflicts.items() if v}
        for (group, loss), values in norms.items():
            mean = sum(values) / len(values)
            metrics[grad(group, NORM_MEAN, loss)] = mean
            spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            metrics[grad(group, NORM_STD, loss)] = spread
        for (group, event), count in self._events.items():
            metrics[grad(group, EVENTS, event)] = float(count)
        return metrics


def probe_batch(dataset: MultimodalDataset, size: int, seed: int = 0) -> tuple[dict[str, Tensor], Tensor]:
    """A fixed batch of ``size`` train samples (a seeded choice, independent of the global RNG)."""
    length = len(cast(Sized, dataset))
    size = min(int(size), length)
    indices = torch.randperm(length, generator=torch.Generator().manual_seed(int(seed)))[:size]
    indices = indices.sort().values
    batch = getattr(dataset, "batch", None)
    if callable(batch):
        return batch(indices)
    items = [dataset[int(i)] for i in indices]
    inputs = {m: torch.stack([torch.as_tensor(x[m]) for x, _ in items]) for m in items[0][0]}
    return inputs, torch.as_tensor([int(y) for _, y in items])


class GradientStatistics:
    """What the trainer records: step metrics, per-epoch summaries and the probe's noise traces.

    ``probe`` is the fixed probe batch (already on the model's device) or ``None`` to disable the
    covariance traces (:meth:`for_training` builds it). Methods return metric mappings; the caller
    logs each mapping in one call.

    ``probe_status``: ``"vmap"`` or ``"loop"`` (:func:`~framework.training.noise.probe_method`)
    once a probe call succeeded, ``"unchecked"`` before, ``"off"`` without a probe or after a probe
    call raised (logged once; no more traces for the rest of the run).
    """

    def __init__(
        self,
        settings: StatisticsSettings,
        probe: tuple[Mapping[str, Tensor], Tensor] | None = None,
        detach_unimodal: bool = False,
    ) -> None:
        self.settings = settings
        self.probe = probe
        self.detach_unimodal = detach_unimodal
        self.epoch = EpochStatistics()
        self.probe_status = PROBE_UNCHECKED if probe is not None else PROBE_OFF

    @classmethod
    def for_training(
        cls, settings: StatisticsSettings, train: MultimodalDataset, device: torch.device, detach_unimodal: bool
    ) -> GradientStatistics:
        """Statistics for a training run on ``train``: with the fixed probe batch of
        ``settings.probe_size`` train samples on ``device`` when ``noise_every`` and ``probe_size``
        are set, else without a probe (no covariance traces)."""
        probe = None
        if settings.noise_every and settings.probe_size:
            inputs, labels = probe_batch(train, settings.probe_size, settings.probe_seed)
            probe = (
                {m: t.to(device, non_blocking=True) for m, t in inputs.items()},
                labels.to(device, non_blocking=True),
            )
        return cls(settings, probe, detach_unimodal=detach_unimodal)

    def wants_step(self, step: int) -> bool:
        every = self.settings.log_every
        return bool(every) and step % every == 0

    def wants_noise(self, step: int) -> bool:
        every = self.settings.noise_every
        on = self.probe is not None and self.probe_status != PROBE_OFF
        return on and bool(every) and bool(self.settings.probe_size) and step % every == 0

    def record_step(self, step: int, decisions: list[GroupDecision]) -> dict[str, float]:
        """Observe the step's decisions for the epoch summary; return its step metrics if this step logs."""
        if not decisions:
            return {}
        self.epoch.observe(decisions)
        if not self.wants_step(step):
            return {}
        fetch_decisions([d.decision for d in decisions])
        return step_metrics(decisions)

    def noise(self, model: MultimodalModel, plan: GradientPlan, loss_fn: LossFn) -> dict[str, float]:
        """Covariance traces on the probe batch, on the groups and packs of the engine's ``plan``
        (:attr:`GradientEngine.plan`, known after its first backward); ``{}`` without a probe, with
        the probe off, or when the probe raises (which turns it off)."""
        if self.probe is None or self.probe_status == PROBE_OFF:
            return {}
        traces = self._probe(model, plan, loss_fn, *self.probe)
        return covariance_trace_metrics(traces) if traces is not None else {}

    def check_probe(self, model: MultimodalModel, plan: GradientPlan | None, loss_fn: LossFn) -> str:
        """Run the probe once on its first :data:`CHECK_SAMPLES` samples (``plan``: the engine's, or
        ``None`` before training: one found here on those samples, in eval mode) and return
        :attr:`probe_status`: the probe's path is decided before training, a probe that cannot run
        is off from the start. Leaves the model, its buffers, ``.grad`` and the RNG untouched."""
        if self.probe is None or self.probe_status == PROBE_OFF:
            return self.probe_status
        inputs, labels = self.probe
        k = min(CHECK_SAMPLES, int(labels.shape[0]))
        inputs, labels = {m: t[:k] for m, t in inputs.items()}, labels[:k]
        try:
            if plan is None:
                plan = self._plan(model, loss_fn, inputs, labels)
        except Exception as error:
            self._turn_off(model, error)
            return self.probe_status
        self._probe(model, plan, loss_fn, inputs, labels)
        return self.probe_status

    def _plan(
        self, model: MultimodalModel, loss_fn: LossFn, inputs: Mapping[str, Tensor], labels: Tensor
    ) -> GradientPlan:
        """Who reaches which group, found as the engine finds it (in eval mode: no buffer updates)."""
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                features = model.encode(dict(inputs))
                logits = model.classify(features, detach_unimodal=self.detach_unimodal)
                engine = GradientEngine(model, get_integrator("sum"))
                return engine.make_plan(features, loss_fn(logits, labels))
        finally:
            model.train(was_training)

    def _probe(
        self,
        model: MultimodalModel,
        plan: GradientPlan,
        loss_fn: LossFn,
        inputs: Mapping[str, Tensor],
        labels: Tensor,
    ) -> dict[str, dict[str, float]] | None:
        """The traces, or ``None`` after turning the probe off if it raised."""
        try:
            traces = covariance_traces(
                model,
                loss_fn,
                inputs,
                labels,
                model.parameter_groups(),
                plan,
                chunk_size=self.settings.probe_chunk,
                forward_kwargs={"detach_unimodal": self.detach_unimodal},
            )
        except Exception as error:  # a statistic never fails a run
            self._turn_off(model, error)
            return None
        self.probe_status = probe_method(model) or self.probe_status
        return traces

    def _turn_off(self, model: MultimodalModel, error: Exception) -> None:
        first_line = next(iter(str(error).strip().splitlines()), "")
        log.warning(
            "noise probe: off for the rest of the run (no %s metrics), it failed on %s with %s: %s",
            "grad/*/cov_trace", type(model).__name__, type(error).__name__, first_line,
        )  # fmt: skip
        self.probe_status = PROBE_OFF

    def start_epoch(self) -> None:
        self.epoch.reset()

    def epoch_summary(self) -> dict[str, float]:
        return self.epoch.summary()
