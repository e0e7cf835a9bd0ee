"""The ``mmpareto_stats`` variant: the trainer's own step with the default statistics settings,
tracked by a real :class:`~framework.tracking.RunTracker` on a temporary sqlite store.

Its ``step_ms`` is amortised: the median step (step statistics buffered every step) plus the time of
sending the buffered metrics per step plus one probe (per-sample gradient covariance traces) over
``noise_every``; its ``peak_mb`` is the larger of the step's and the probe's.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..data.base import Splits, TensorMultimodalDataset
from ..integrators import get_integrator
from ..losses import MultitaskLoss
from ..training.statistics import StatisticsSettings
from ..training.trainer import Trainer, TrainerSettings
from .cases import make_batch
from .measure import measure_peak_mb, timed
from .runner import Runner, Setup

ROOT = Path(__file__).resolve().parents[2]


def default_statistics() -> StatisticsSettings:
    """The statistics settings of ``conf/train.yaml`` (``trainer.statistics``)."""
    conf = OmegaConf.load(ROOT / "conf" / "train.yaml")
    settings = OmegaConf.to_object(OmegaConf.merge(StatisticsSettings, conf.trainer.statistics))  # typed by the schema
    assert isinstance(settings, StatisticsSettings)
    return settings


def stats_runner(setup: Setup) -> Runner:
    """The trainer's own step with default statistics settings, tracked by a real RunTracker."""
    from ..tracking import RunTracker

    case, device = setup.case, setup.device
    settings = default_statistics()
    if case.quick:  # a smoke test of the code path, not a measurement
        settings = dataclasses.replace(settings, probe_size=4)
    # the probe is drawn from the train split: here, samples of the same kind as the batch
    probe_inputs, probe_labels = make_batch(case, max(settings.probe_size, case.batch_size), seed=2)
    train = TensorMultimodalDataset(probe_inputs, probe_labels, case.spec)
    # trainer.precision (the variant is not run at bf16/16 by a trainer without it: variants.precision_unsupported)
    amp: dict[str, Any] = {"precision": setup.precision} if setup.precision != "32" else {}
    tracker = RunTracker("bench", setup.name, tracking_uri=f"sqlite:///{setup.workdir / f'{case.name}.db'}")
    trainer = Trainer(
        setup.model, Splits(train, train, train), MultitaskLoss(), get_integrator("mmpareto"), setup.optimizer, None,
        TrainerSettings(batch_size=case.batch_size, progress=False, statistics=settings, **amp), device, tracker=tracker,
    )  # fmt: skip
    sent = {"ms": 0.0}
    probe: dict[str, Any] = {"ms": [], "peak": 0.0}
    flush = tracker.flush

    def timed_flush(force: bool = False) -> bool:  # sending the buffered metrics is measured and amortised per step
        start = time.perf_counter()
        done = flush(force=force)
        sent["ms"] += (time.perf_counter() - start) * 1e3
        return done

    tracker.flush = timed_flush  # type: ignore[method-assign]

    def step() -> None:
        trainer.state.step += 1
        if trainer.statistics.wants_noise(trainer.state.step):  # the probe is amortised separately
            trainer.state.step += 1
        trainer.train_step(setup.inputs, setup.labels)

    def run_probe() -> None:
        plan = trainer.engine.plan
        assert plan is not None, "the engine finds its plan on the first step, run before the probe"
        trainer.statistics.noise(trainer.model, plan, trainer.loss)

    runner = setup.runner(step)
    runner.excluded_ms = lambda: sent["ms"]
    if trainer.statistics.probe is not None:
        runner.extra_held = [*trainer.statistics.probe[0].values(), trainer.statistics.probe[1]]

    def amortised() -> float:
        """Per step: metrics sent (all buffered ones, now) plus the probe over ``noise_every``."""
        timed_flush()
        if not probe["ms"] and settings.noise_every and trainer.statistics.probe is not None:
            probe["ms"] = [timed(run_probe, device)]  # one probe: seconds long on resnet18_av
        noise = statistics.median(probe["ms"]) / settings.noise_every if probe["ms"] else 0.0
        return sent["ms"] / max(trainer.state.step, 1) + noise

    def probe_peak() -> float:
        if trainer.statistics.probe is None or not settings.noise_every:
            return 0.0
        return measure_peak_mb(run_probe, runner.held_bytes, device)

    runner.amortised_ms = amortised
    runner.extra_peak_mb = probe_peak

    def close() -> None:
        tracker.end()

    runner.close = close
    return runner
