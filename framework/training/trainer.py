"""The training loop: one forward pass per step, integrated gradients, evaluation per epoch.

With a :class:`~framework.training.distributed.DataParallel` (several ranks), each rank trains on
its shard of every global batch (:mod:`framework.data.sharding`), the gradients are averaged across
ranks before the integrator runs, evaluation is split across ranks and its counts summed, and only
rank 0 logs and writes checkpoints. Without one, nothing of that runs.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from .. import metric_names as names
from ..data.base import BatchSource, LoaderSettings, MultimodalDataset, Splits, num_batches, splits_to
from ..data.sharding import batch_source
from ..integrators import Integrator
from ..losses import MultitaskLoss
from ..methods import EpochView, Method, StepView
from ..models.base import MultimodalModel
from ..tracking import RunTracker
from . import termination
from .checkpoint import rng_state, save_checkpoint, set_rng_state
from .distributed import DataParallel
from .gradients import GradientEngine
from .console import epoch_line
from .evaluation import evaluate
from .precision import Precision, all_finite
from .settings import NonFiniteError, TrainerSettings, TrainingState
from .statistics import NOISE_PROBE_TAG, GradientStatistics

log = logging.getLogger("framework")


def _to(batch: dict[str, Tensor], labels: Tensor, device: torch.device) -> tuple[dict[str, Tensor], Tensor]:
    return {m: t.to(device, non_blocking=True) for m, t in batch.items()}, labels.to(device, non_blocking=True)


class Trainer:
    """Trains ``model`` on ``splits`` with ``integrator``; reports to ``tracker`` if given.

    ``method`` (a :class:`~framework.methods.Method`, default the no-op one) is called at its
    hooks: ``on_epoch_start`` before each epoch; per step its ``phases`` (sub-steps), and in each
    ``training_logits``, ``losses``, ``after_backward``; ``predict`` at evaluation; its
    ``decisions`` are logged with the step statistics and its state is checkpointed.
    """

    def __init__(
        self,
        model: MultimodalModel,
        splits: Splits,
        loss: MultitaskLoss,
        integrator: Integrator,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        settings: TrainerSettings,
        device: torch.device,
        seed: int = 0,
        tracker: RunTracker | None = None,
        checkpoint_path: str | Path | None = None,
        method: Method | None = None,
        parallel: DataParallel | None = None,
    ) -> None:
        self.model, self.splits, self.loss = model.to(device), splits_to(splits, device), loss
        self.integrator, self.optimizer, self.scheduler = integrator, optimizer, scheduler
        self.settings, self.device, self.tracker = settings, device, tracker
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.method = method if method is not None else Method()
        self.parallel = parallel
        self.main = parallel is None or parallel.context.is_main  # logs, checkpoints, shows progress
        self.world_size = 1 if parallel is None else parallel.world_size
        self.engine = GradientEngine(model, integrator, reducer=parallel.reducer if parallel else None)
        self.precision = Precision(settings.precision, device)
        self.loader = LoaderSettings(
            settings.num_workers, settings.pin_memory, settings.persistent_workers, settings.prefetch_factor
        )
        self._sources: dict[tuple[int, bool], BatchSource] = {}  # kept across epochs: persistent workers
        self.statistics = GradientStatistics.for_training(
            settings.statistics, splits.train, device, detach_unimodal=loss.detach_unimodal
        )
        self.shuffle = torch.Generator().manual_seed(seed)
        self.state = TrainingState()
        self.heads = list(model.heads)
        self.selection = model.selection_head
        self.skipped_steps = 0  # steps of the current epoch skipped for non-finite values (skip_step)
        self.overflow_steps: int | Tensor = 0  # steps of this epoch the fp16 scaler skipped (on the device)
        self._skipped = False  # whether the last train_step was skipped
        self._probe_tagged = ""
        if self.main and settings.batch_size > len(splits.train):
            log.warning(
                "trainer.batch_size=%d is larger than the train split (%d samples): each epoch is one "
                "full-batch step, as with trainer.batch_size=%d",
                settings.batch_size, len(splits.train), len(splits.train),
            )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "integrator": self.engine.state_dict(),
            "precision": self.precision.state_dict(),
            "method": self.method.state_dict(),
            "shuffle": self.shuffle.get_state(),
            "rng": rng_state(),
            "state": self.state.__dict__.copy(),
            "run_id": self.tracker.run_id if self.tracker else None,
        }

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint["scheduler"] is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.engine.load_state_dict(checkpoint["integrator"])
        self.precision.load_state_dict(checkpoint.get("precision") or {})
        self.method.load_state_dict(checkpoint.get("method") or {})
        self.shuffle.set_state(checkpoint["shuffle"])
        set_rng_state(checkpoint["rng"])
        self.state = TrainingState(**checkpoint["state"])

    def save(self) -> None:
        """Write the checkpoint (rank 0 only; every rank reads it on a resume)."""
        if self.checkpoint_path is not None and self.main:
            save_checkpoint(self.state_dict(), self.checkpoint_path)

    def fit(self) -> dict[str, float]:
        self._tag_probe(self.statistics.check_probe(self.model, self.engine.plan, self.loss) if self.main else "")
        if self.state.epoch == 0 and self.state.step == 0:
            self.save()  # the start is resumable too: an interrupted first epoch resumes into the same run
        with termination.deferred():  # a SIGTERM stops at a step boundary, or after a due checkpoint
            while self.state.epoch < self.settings.epochs:
                started = time.perf_counter()
                train_metrics = self.train_epoch()
                if self.parallel is not None:
                    self.parallel.sync_buffers()  # every rank evaluates (and rank 0 saves) rank 0's buffers
                val = self.evaluate(self.splits.val)
                test = self.evaluate(self.splits.test)
                epoch = self.state.epoch
                if val[self.selection] > self.state.best_val:
                    self.state.best_val, self.state.best_epoch, self.state.best_test = val[self.selection], epoch, test
                self.state.last_test = test
                metrics = {**train_metrics, **{names.accuracy("val", h): v for h, v in val.items()}}
                metrics.update({names.accuracy("test", h): v for h, v in test.items()})
                metrics[names.LR] = self.optimizer.param_groups[0]["lr"]
                metrics.update({names.skipped(split): float(n) for split, n in self._skipped_samples().items()})
                if self.scheduler is not None:
                    self.scheduler.step()
                self.state.epoch += 1
                self._log(metrics, epoch)
                if self.main:
                    seconds = time.perf_counter() - started
                    log.info(epoch_line(epoch, self.settings.epochs, train_metrics, val[self.selection], seconds))
                if self.tracker:
                    self.tracker.flush()
                if self.state.epoch % self.settings.checkpoint_every == 0 or self.state.epoch == self.settings.epochs:
                    self._check_parameters()  # never checkpoint a diverged model
                    self.save()
                termination.stop_point()
        if self.statistics.probe_status != self._probe_tagged:  # the probe turned itself off
            self._tag_probe(self.statistics.probe_status)
        return self.results()

    def _tag_probe(self, status: str) -> None:
        """Tag the run with how the covariance probe runs: vmap, loop (an RNN), or off. The tag is
        journaled first; a store that cannot take it now does not fail the run (replay sends it)."""
        self._probe_tagged = status
        if not self.main or self.tracker is None:
            return
        try:
            self.tracker.set_tags({NOISE_PROBE_TAG: status})
        except Exception as error:  # a statistic never fails a run
            log.warning("tag %s=%s not sent (%s); it is in the run's journal", NOISE_PROBE_TAG, status, type(error))

    def results(self) -> dict[str, float]:
        out = {
            names.BEST_EPOCH: float(self.state.best_epoch),
            names.accuracy("best/val", self.selection): self.state.best_val,
        }
        out.update({names.best_test_accuracy(h): v for h, v in self.state.best_test.items()})
        out.update({names.last_test_accuracy(h): v for h, v in self.state.last_test.items()})
        return out

    def epoch_view(self) -> EpochView:
        settings = self.settings
        return EpochView(
            self.model, self.splits, self.state.epoch, settings.batch_size, settings.eval_batch_size, self.device
        )

    def train_epoch(self) -> dict[str, float]:
        self.method.on_epoch_start(self.epoch_view())
        self.model.train()
        self.statistics.start_epoch()
        dataset = self.splits.train
        total = num_batches(dataset, self.settings.batch_size)
        if self.settings.max_steps_per_epoch:
            total = min(total, self.settings.max_steps_per_epoch)
        sums: dict[str, Any] = defaultdict(float)  # device tensors: read once per epoch
        count = 0
        self.skipped_steps = self.overflow_steps = 0
        batches = self._source(dataset, train=True)
        show = self.main and (sys.stderr.isatty() if self.settings.progress is None else self.settings.progress)
        bar = tqdm(total=total, desc=f"epoch {self.state.epoch}", disable=not show, leave=False)
        for index, (inputs, labels) in enumerate(batches):
            if index >= total:
                break
            inputs, labels = _to(inputs, labels, self.device)
            losses = self.train_step(inputs, labels, index, total)
            size = labels.shape[0] * self.world_size  # the global batch (equal shards)
            if self._skipped:  # skip_step: no update, not in the epoch's mean loss
                self.skipped_steps += 1
            else:
                for name, value in losses.items():
                    sums[name] += value * size
                count += size
            self.state.step += 1
            bar.update(1)
            if show:  # a host read per step, for the bar only
                bar.set_postfix(loss=f"{float(sum(losses.values())):.3f}")
            termination.stop_point()
        bar.close()
        metrics = {names.train_loss(objective): float(value) / max(count, 1) for objective, value in sums.items()}
        metrics.update(self.statistics.epoch_summary())
        if self.precision.scaler is not None:
            metrics[names.OVERFLOW_STEPS] = float(self.overflow_steps)
            metrics[names.LOSS_SCALE] = self.precision.scaler.get_scale()
        if self.settings.on_nonfinite == "skip_step":
            metrics[names.SKIPPED_STEPS] = float(self.skipped_steps)
            if total and self.skipped_steps >= total:  # nothing left to skip to: the run diverged
                raise NonFiniteError(
                    f"every step of epoch {self.state.epoch} ({self.skipped_steps}) had a non-finite loss "
                    "or gradient (trainer.on_nonfinite=skip_step): the run diverged"
                )
        return metrics

    def _source(self, dataset: MultimodalDataset, train: bool) -> BatchSource:
        """The batches of ``dataset`` (this rank's shard), kept across epochs."""
        key = (id(dataset), train)
        if key not in self._sources:
            size = self.settings.batch_size if train else self.settings.eval_batch_size
            rank, world = (self.parallel.rank, self.world_size) if self.parallel is not None else (0, 1)
            generator = self.shuffle if train else None
            self._sources[key] = batch_source(dataset, size, train, generator, self.loader, self.device, rank, world)
        return self._sources[key]

    def _skipped_samples(self) -> dict[str, int]:
        skipped = self.splits.skipped()
        if self.parallel is None or not skipped:
            return skipped
        return dict(zip(skipped, (int(n) for n in self.parallel.context.sum(list(skipped.values()))), strict=True))

    def train_step(self, inputs: dict[str, Tensor], labels: Tensor, index: int = 0, total: int = 1) -> dict[str, Any]:
        """One optimisation step at ``state.step``, with its statistics (logged in one call each).

        The method's phases are sub-steps, each with its own forward pass (the method's ``forward``),
        backward and update (one, ``None``, unless the method alternates). The returned per-head
        losses are the plain losses of the first sub-step (before the method reweights them); on
        several ranks, their means over the ranks, reduced with the gradients (a non-finite loss on
        any rank then shows there after the shared backward). The probe's covariance traces, when due, are taken after
        the update (parameters as the next step sees them, this step's gradients already freed)
        and logged at this step (by rank 0 alone: the ranks' parameters are identical).
        """
        step = self.state.step
        need = self.statistics.wants_step(step)
        self._skipped = False
        plain: dict[str, Any] | None = None  # floats, or detached device scalars (no host read)
        decisions = []
        engine = self.engine
        scaled = self.precision.scaler is not None  # the scaler skips non-finite steps itself
        for phase in self.method.phases(self.state.epoch):
            if self.parallel is not None and engine.summed_step(need) and self.precision.name == "32":  # DDP
                plain = self.parallel.summed_step(inputs, labels, self.loss, self.loss.detach_unimodal)
                engine.scale_summed()
            else:
                with self.precision.autocast():
                    features, logits = self.method.forward(self.model, inputs, phase, self.loss.detach_unimodal)
                    view = StepView(self.model, features, logits, labels, self.state.epoch, step, index, total, phase)
                    logits = self.method.training_logits(view)
                    losses = self.loss(logits, labels)
                if plain is None:
                    plain = {name: value.detach().to(torch.float64) for name, value in losses.items()}
                losses = self.method.losses(view, losses)
                if self.parallel is None and not scaled and not all_finite(losses.values()):
                    self._nonfinite(step, losses, "loss")
                    return plain
                decisions += engine.backward(features, losses, need, self.precision.loss_scale())
                if engine.mean_losses is not None:
                    plain = engine.mean_losses
                view.groups = engine.groups
                self.precision.unscale_(self.optimizer)
                self.method.after_backward(view)
            if self.parallel is not None and not all(math.isfinite(v) for v in plain.values()):
                self._nonfinite(step, plain, "loss")
                return plain
            if not scaled and not all_finite(p.grad for p in self.model.parameters() if p.grad is not None):
                self._nonfinite(step, plain, "gradient")
                return plain
            overflowed = self.precision.step(self.optimizer)
            if overflowed is not None:
                self.overflow_steps = self.overflow_steps + overflowed
            self.optimizer.zero_grad(set_to_none=True)
        metrics = self.statistics.record_step(step, decisions)
        if need:
            metrics.update(self.method.decisions())
        if self.main and self.statistics.wants_noise(step) and engine.plan is not None:
            metrics.update(self.statistics.noise(self.model, engine.plan, self.loss))
        self._log(metrics, step)
        return plain or {}

    def _nonfinite(self, step: int, losses: dict[str, Tensor] | dict[str, float], what: str) -> None:
        """``stop``: raise :class:`NonFiniteError`; ``skip_step``: drop the gradients, no update."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.settings.on_nonfinite == "skip_step":
            self._skipped = True
            return
        values = ", ".join(f"{name}={float(torch.as_tensor(value).detach()):.6g}" for name, value in losses.items())
        raise NonFiniteError(
            f"non-finite {what} at step {step} (epoch {self.state.epoch}): losses {values}; "
            "the last checkpoint is from before it (trainer.on_nonfinite=skip_step skips such steps)"
        )

    def _check_parameters(self) -> None:
        if not all_finite(p for p in self.model.parameters()):
            raise NonFiniteError(
                f"non-finite parameters after step {self.state.step - 1} (epoch {self.state.epoch - 1}): "
                "the run diverged; the last checkpoint is from before it"
            )

    def evaluate(self, dataset: MultimodalDataset) -> dict[str, float]:
        batches = (_to(inputs, labels, self.device) for inputs, labels in self._source(dataset, train=False))
        context = self.parallel.context if self.parallel is not None else None
        return evaluate(self.model, self.method, batches, self.precision, self.heads, self.selection, context)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.tracker is not None and metrics:
            self.tracker.log_metrics(metrics, step)
