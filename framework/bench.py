"""Step-time benchmark: this framework's integrators against the reference code's way and torchjd.

    python -m framework.bench --json bench.json          # full run (a few minutes on 2 CPU cores)
    python -m framework.bench --quick --json quick.json  # tiny shapes, seconds (tests)

For each model, every variant trains its own copy of the same initial model on one fixed batch,
all in one process. A step is everything a training step does: forward, per-loss gradients,
integration, optimizer step (SGD, momentum 0.9, weight decay 1e-4, as the paper), ``zero_grad``.
Variants are interleaved in rounds (the order rotates every round), so slow drifts of the machine
hit every variant alike; ``step_ms`` is the median over all timed steps of the variant and
``ratio_to_sum`` is ``step_ms / step_ms(sum)`` on the same model.

``peak_mb`` (MiB) is the peak of live tensor memory during one step: what the variant holds between
steps (parameters, buffers, optimizer state, the batch) plus the highest point the step's own
allocations reach above it. On CPU the step is run once under ``torch.profiler`` with
``profile_memory=True`` and its allocation and free events are replayed in time order; on CUDA it
is ``torch.cuda.max_memory_allocated``. This counts tensors only (not allocator caching or the
Python heap), which is what the variants differ in, and it does not depend on what other
variants left behind in the process (resident-set figures would).

Models: ``cnn_cgmnist`` (the default experiment's small CNNs, CG-MNIST shapes, batch 64),
``resnet18_av`` (two ResNet-18s on a 1x128x128 spectrogram and 2 frames of 3x112x112, batch 16) and
``transformer_xmodal`` (``conf/model/transformer_xmodal.yaml`` on the same batch as ``resnet18_av``;
its step time relative to ``resnet18_av`` is printed variant by variant). The reference code's
step assumes one encoder per modality, so ``mmpareto_reference_style`` is not run on the
transformer (the log says so).

``mmpareto_stats`` is the real :class:`~framework.training.trainer.Trainer` step with the default
statistics settings of ``conf/train.yaml`` and a real :class:`~framework.tracking.RunTracker` on a
temporary sqlite store. Its ``step_ms`` is amortised: the median step (step statistics logged on
every step, buffered) plus the measured time of sending the buffered metrics per step, plus the
probe's covariance traces divided by ``noise_every``. Its ``peak_mb`` is the larger of the step's
and the probe's peaks.
"""

from __future__ import annotations

import argparse
import dataclasses
import copy
import gc
import json
import math
import os
import statistics as stats_module
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from .data.base import DatasetSpec, Splits, TensorMultimodalDataset
from .integrators import get_integrator
from .integrators.min_norm import two_vector_weight
from .losses import MultitaskLoss
from .models.base import MULTIMODAL, MultimodalModel
from .models.fusion import ConcatFusion
from .models.late_fusion import LateFusionModel
from .training.gradients import GradientEngine
from .training.statistics import StatisticsSettings
from .training.trainer import Trainer, TrainerSettings

FRAMEWORK_VARIANTS = ("sum", "pcgrad", "mgda", "mmpareto")
VARIANTS = (*FRAMEWORK_VARIANTS, "mmpareto_reference_style", "mmpareto_stats", "torchjd_mgda", "torchjd_upgrad")
MODELS = ("cnn_cgmnist", "resnet18_av", "transformer_xmodal")
ROOT = Path(__file__).resolve().parents[1]


# --- models -------------------------------------------------------------------------------------


REFERENCE_NEEDS_ENCODERS = "the reference code's step is written for one encoder per modality (two losses per group)"


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


def late_fusion(encoder: Callable[..., nn.Module]) -> Callable[[DatasetSpec], MultimodalModel]:
    return lambda spec: LateFusionModel(spec, encoder, ConcatFusion)


AV_SPEC = DatasetSpec({"audio": (1, 128, 128), "visual": (2, 3, 112, 112)}, num_classes=6)
"""The audio-visual batch of the full benchmark: a CREMA-D-sized spectrogram and two frames."""


def model_case(name: str, quick: bool) -> ModelCase:
    if name == "cnn_cgmnist":
        from .models.encoders import SmallCNN

        spec = DatasetSpec({"gray": (1, 28, 28), "color": (3, 28, 28)}, num_classes=10)
        encoder = partial(SmallCNN, channels=(16, 32), dim=64)
        return ModelCase(name, spec, 8 if quick else 64, late_fusion(encoder), *((1, 1) if quick else (60, 1)), budget_s=30.0, quick=quick)
    if name == "resnet18_av":
        from .models.resnet import ResNet18Encoder

        if quick:  # same architecture family, tiny: seconds, for tests
            spec = DatasetSpec({"audio": (1, 32, 32), "visual": (2, 3, 32, 32)}, num_classes=6)
            return ModelCase(name, spec, 4, late_fusion(partial(ResNet18Encoder, width=8)), 1, 1, quick=True)
        return ModelCase(name, AV_SPEC, 16, late_fusion(ResNet18Encoder), 8, 1, budget_s=150.0)
    if name == "transformer_xmodal":
        from .models.transformer import CrossModalTransformer

        unsupported = {"mmpareto_reference_style": REFERENCE_NEEDS_ENCODERS}
        if quick:
            spec = DatasetSpec({"audio": (1, 32, 32), "visual": (2, 3, 32, 32)}, num_classes=6)
            build = partial(CrossModalTransformer, dim=16, depth=2, heads=2, patch_size=8)
            return ModelCase(name, spec, 4, build, 1, 1, quick=True, unsupported=unsupported)
        # the same batch as resnet18_av, the settings of conf/model/transformer_xmodal.yaml:
        # 16x16 patches, 64 spectrogram tokens and 2 x 49 frame tokens, 4 cross-modal layers of width 128
        build = partial(CrossModalTransformer, dim=128, depth=4, heads=4, mlp_ratio=2.0, patch_size=16)
        return ModelCase(name, AV_SPEC, 16, build, 20, 1, budget_s=120.0, unsupported=unsupported)
    raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(MODELS)}")


def build_model(case: ModelCase, seed: int = 0) -> MultimodalModel:
    torch.manual_seed(seed)
    return case.build(case.spec)


def make_batch(case: ModelCase, size: int, seed: int = 1) -> tuple[dict[str, Tensor], Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(size, *shape, generator=generator) for m, shape in case.spec.modalities.items()}
    return inputs, torch.randint(case.spec.num_classes, (size,), generator=generator)


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)


# --- variants -----------------------------------------------------------------------------------


@dataclass
class Runner:
    """One variant: its own model copy, optimizer and step function."""

    name: str
    model: MultimodalModel
    optimizer: torch.optim.Optimizer
    inputs: dict[str, Tensor]
    labels: Tensor
    step: Callable[[], None]
    extra_held: list[Tensor] = field(default_factory=list)
    amortised_ms: Callable[[], float] | None = None
    extra_peak_mb: Callable[[], float] | None = None
    close: Callable[[], None] | None = None
    excluded_ms: Callable[[], float] | None = None
    times: list[float] = field(default_factory=list)

    def timed_step(self, device: torch.device) -> float:
        before = self.excluded_ms() if self.excluded_ms else 0.0
        ms = timed(self.step, device)
        return ms - ((self.excluded_ms() - before) if self.excluded_ms else 0.0)

    def held_bytes(self) -> int:
        """Bytes of tensors the variant keeps between steps (unique storages)."""
        tensors: list[Tensor] = [*self.model.parameters(), *self.model.buffers(), *self.inputs.values(), self.labels]
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, Tensor)]
        tensors += self.extra_held
        seen: dict[int, int] = {}
        for t in tensors:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return sum(seen.values())


def framework_step(model, optimizer, engine, loss, inputs, labels) -> Callable[[], None]:  # noqa: ANN001
    def step() -> None:
        features = model.encode(inputs)
        losses = loss(model.classify(features), labels)
        engine.backward(features, losses)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def reference_style_step(model, optimizer, loss, inputs, labels, gamma: float = 1.5) -> Callable[[], None]:  # noqa: ANN001
    """The reference code's MMPareto step, written out for comparison (not used for training).

    One ``backward(retain_graph=True)`` per loss through the whole model, the encoders' gradients
    cloned tensor by tensor into dicts and concatenated for the cosine; the two-vector min-norm
    solver's dot products over the tensor lists (which, as in the reference, include the
    ``"concat"`` entry); then one more full backward of the summed loss and a Python loop over the
    named parameters that rescales each tensor.
    """
    groups = {group: group.split(".", 1)[1] for group in model.parameter_groups()}
    named = {group: [(n, p) for n, p in model.named_parameters() if n.startswith(f"encoders.{m}.")] for group, m in groups.items()}
    group_of = {n: group for group, params in named.items() for n, _ in params}

    def min_norm_2d(vecs: list[list[Tensor]]) -> list[float]:
        v11 = v12 = v22 = 0.0
        for a, b in zip(vecs[0], vecs[1]):
            v12 += torch.mul(a, b).sum().item()
            v11 += torch.mul(a, a).sum().item()
            v22 += torch.mul(b, b).sum().item()
        weight = two_vector_weight(v11, v12, v22, 0.001, 0.999)
        return [weight, 1.0 - weight]

    def step() -> None:
        logits = model(inputs)
        losses = loss(logits, labels)
        grads: dict[str, dict[str, dict[str, Tensor]]] = {group: {} for group in groups}
        for name, value in losses.items():
            value.backward(retain_graph=True)
            for group, modality in groups.items():
                if name in (MULTIMODAL, modality):
                    record = {n: p.grad.data.clone() for n, p in named[group]}
                    record["concat"] = torch.cat([record[n].flatten() for n, _ in named[group]])
                    grads[group][name] = record
            optimizer.zero_grad(set_to_none=True)
        weights = {}
        for group, modality in groups.items():
            tasks = (MULTIMODAL, modality)
            cos = F.cosine_similarity(grads[group][MULTIMODAL]["concat"], grads[group][modality]["concat"], dim=0)
            if cos > 0:
                weights[group] = [0.5, 0.5]
            else:
                weights[group] = min_norm_2d([list(grads[group][t].values()) for t in tasks])
        total = sum(losses.values())
        total.backward()
        for n, p in model.named_parameters():
            if p.grad is None or n not in group_of:
                continue
            group = group_of[n]
            k = weights[group]
            modality = groups[group]
            three_norm = torch.norm(p.grad.data.clone())
            new_grad = 2 * k[0] * grads[group][MULTIMODAL][n] + 2 * k[1] * grads[group][modality][n]
            new_norm = torch.norm(new_grad)
            diff = three_norm / new_norm
            p.grad = diff * new_grad * gamma if diff > 1 else new_grad * gamma
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def torchjd_step(model, optimizer, loss, inputs, labels, aggregator) -> Callable[[], None]:  # noqa: ANN001
    """The same model through torchjd 0.18: ``mtl_backward`` on the encoders' features, then
    ``jac_to_grad`` on the encoders' parameters (one Jacobian row per loss) with the aggregator."""
    from torchjd.autojac import jac_to_grad, mtl_backward

    shared = [p for params in model.parameter_groups().values() for p in params]
    heads = {MULTIMODAL: list(model.fusion_head.parameters())}
    heads.update({m: list(model.unimodal_heads[m].parameters()) for m in model.modalities})

    def step() -> None:
        features = model.encode(inputs)
        losses = loss(model.classify(features), labels)
        names = list(losses)
        mtl_backward(
            [losses[n] for n in names],
            features=list(features.values()),
            tasks_params=[heads[n] for n in names],
            shared_params=shared,
        )
        jac_to_grad(shared, aggregator)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def default_statistics() -> StatisticsSettings:
    """The statistics settings of ``conf/train.yaml`` (``trainer.statistics``)."""
    conf = OmegaConf.load(ROOT / "conf" / "train.yaml")
    return StatisticsSettings(**OmegaConf.to_container(conf.trainer.statistics))  # type: ignore[arg-type]


def make_runner(variant: str, case: ModelCase, template: MultimodalModel, device: torch.device, workdir: Path) -> Runner:
    if variant in case.unsupported:
        raise ValueError(f"variant {variant!r} does not apply to {case.name}: {case.unsupported[variant]}")
    model = copy.deepcopy(template).to(device)
    model.train()
    optimizer = make_optimizer(model)
    inputs, labels = make_batch(case, case.batch_size)
    inputs, labels = {m: t.to(device) for m, t in inputs.items()}, labels.to(device)
    loss = MultitaskLoss()
    if variant in FRAMEWORK_VARIANTS:
        engine = GradientEngine(model, get_integrator(variant))
        return Runner(variant, model, optimizer, inputs, labels, framework_step(model, optimizer, engine, loss, inputs, labels))
    if variant == "mmpareto_reference_style":
        return Runner(variant, model, optimizer, inputs, labels, reference_style_step(model, optimizer, loss, inputs, labels))
    if variant in ("torchjd_mgda", "torchjd_upgrad"):
        from torchjd.aggregation import MGDA, UPGrad

        aggregator = MGDA() if variant == "torchjd_mgda" else UPGrad()
        return Runner(variant, model, optimizer, inputs, labels, torchjd_step(model, optimizer, loss, inputs, labels, aggregator))
    if variant == "mmpareto_stats":
        return stats_runner(case, model, optimizer, inputs, labels, device, workdir)
    raise ValueError(f"unknown variant {variant!r}; valid choices: {', '.join(VARIANTS)}")


def stats_runner(case, model, optimizer, inputs, labels, device, workdir) -> Runner:  # noqa: ANN001
    """The trainer's own step with default statistics settings, tracked by a real RunTracker."""
    from .tracking import RunTracker

    settings = default_statistics()
    if case.quick:  # a smoke test of the code path, not a measurement
        settings = dataclasses.replace(settings, probe_size=4)
    # the probe is drawn from the train split: here, samples of the same kind as the batch
    probe_inputs, probe_labels = make_batch(case, max(settings.probe_size, case.batch_size), seed=2)
    train = TensorMultimodalDataset(probe_inputs, probe_labels, case.spec)
    tracker = RunTracker("bench", "mmpareto_stats", tracking_uri=f"sqlite:///{workdir / f'{case.name}.db'}")
    trainer = Trainer(
        model, Splits(train, train, train), MultitaskLoss(), get_integrator("mmpareto"), optimizer, None,
        TrainerSettings(batch_size=case.batch_size, progress=False, statistics=settings), device, tracker=tracker,
    )  # fmt: skip
    sent = {"ms": 0.0}
    probe: dict[str, Any] = {"ms": [], "peak": 0.0}
    flush = tracker.flush

    def timed_flush() -> None:  # sending the buffered metrics is measured and amortised per step
        start = time.perf_counter()
        flush()
        sent["ms"] += (time.perf_counter() - start) * 1e3

    tracker.flush = timed_flush  # type: ignore[method-assign]

    def step() -> None:
        trainer.state.step += 1
        if trainer.statistics.wants_noise(trainer.state.step):  # the probe is amortised separately
            trainer.state.step += 1
        trainer.train_step(inputs, labels)

    def run_probe() -> None:
        trainer.statistics.noise(trainer.engine, trainer.loss)

    runner = Runner("mmpareto_stats", model, optimizer, inputs, labels, step, excluded_ms=lambda: sent["ms"])
    if trainer.statistics.probe is not None:
        runner.extra_held = [*trainer.statistics.probe[0].values(), trainer.statistics.probe[1]]

    def amortised() -> float:
        """Per step: metrics sent (all buffered ones, now) plus the probe over ``noise_every``."""
        timed_flush()
        if not probe["ms"] and settings.noise_every and trainer.statistics.probe is not None:
            probe["ms"] = [timed(run_probe, device)]  # one probe: seconds long on resnet18_av
        noise = stats_module.median(probe["ms"]) / settings.noise_every if probe["ms"] else 0.0
        return sent["ms"] / max(trainer.state.step, 1) + noise

    def probe_peak() -> float:
        if trainer.statistics.probe is None or not settings.noise_every:
            return 0.0
        return measure_peak_mb(run_probe, runner.held_bytes, device)

    runner.amortised_ms = amortised
    runner.extra_peak_mb = probe_peak
    runner.close = lambda: tracker.end()
    return runner


# --- measurement --------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's start/stop lines (written by its C++ side to file descriptor 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def measure_peak_mb(fn: Callable[[], None], held_bytes: Callable[[], int], device: torch.device) -> float:
    """Held bytes plus the highest point the step's own allocations reach (MiB)."""
    gc.collect()
    held = held_bytes()
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return (held + torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]  # type: ignore[union-attr]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return (held + peak) / 2**20


def bench_model(case: ModelCase, variants: list[str], device: torch.device, warmup: int, log: Callable[[str], None]) -> dict[str, dict[str, float]]:
    template = build_model(case)
    for variant in variants:
        if variant in case.unsupported:
            log(f"  {case.name}: no {variant} ({case.unsupported[variant]})")
    variants = case.variants(variants)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runners = [make_runner(v, case, template, device, Path(tmp)) for v in variants]
        for runner in runners:
            for _ in range(warmup):
                runner.step()
        peaks = {}
        for runner in runners:
            peaks[runner.name] = measure_peak_mb(runner.step, runner.held_bytes, device)
            if runner.extra_peak_mb is not None:
                peaks[runner.name] = max(peaks[runner.name], runner.extra_peak_mb())
        start = time.perf_counter()
        logged = 0.0
        for r in range(case.rounds):
            shift = r % len(runners)
            for runner in runners[shift:] + runners[:shift]:
                for _ in range(case.steps_per_round):
                    runner.times.append(runner.timed_step(device))
            elapsed = time.perf_counter() - start
            if elapsed - logged >= 10 or r + 1 == case.rounds:
                log(f"  {case.name}: round {r + 1}/{case.rounds} done ({elapsed:.0f} s)")
                logged = elapsed
            if r >= 2 and elapsed * (r + 2) / (r + 1) > case.budget_s:
                log(f"  {case.name}: stopping after {r + 1} rounds (time budget {case.budget_s:.0f} s)")
                break
        for runner in runners:
            log(f"    {runner.name:<26} steps (ms): {' '.join(f'{t:.0f}' for t in runner.times)}")
            step_ms = stats_module.median(runner.times)
            if runner.amortised_ms is not None:
                step_ms += runner.amortised_ms()
            results[runner.name] = {"step_ms": step_ms, "peak_mb": peaks[runner.name]}
            if runner.close is not None:
                runner.close()
    base = results.get("sum", {}).get("step_ms")
    for r in results.values():
        r["ratio_to_sum"] = r["step_ms"] / base if base else math.nan
    return results


def _load_line(when: str) -> str:
    """The machine's 1-minute load average. Other processes' CPU use skews every timing; at the
    end the figure includes this benchmark's own threads."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    cores = os.cpu_count() or 1
    limit = 0.5 * cores if when == "start" else cores + 0.5 * cores
    warning = f" -- busy machine ({load:.1f} runnable tasks on {cores} cores): timings are unreliable" if load > limit else ""
    return f"load average at {when}: {load:.2f}{warning}"


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [f"| {'model':<18} | {'variant':<24} | {'step_ms':>9} | {'peak_mb':>8} | {'ratio_to_sum':>12} |", "|" + "|".join(["-" * 20, "-" * 26, "-" * 11, "-" * 10, "-" * 14]) + "|"]
    for model, by_variant in results.items():
        for variant, r in by_variant.items():
            lines.append(f"| {model:<18} | {variant:<24} | {r['step_ms']:>9.1f} | {r['peak_mb']:>8.1f} | {r['ratio_to_sum']:>12.3f} |")
    return "\n".join(lines)


def cross_model_table(results: dict[str, dict[str, dict[str, float]]], cases: dict[str, ModelCase], base: str = "resnet18_av") -> str:
    """Step time of the models that train on the same batch as ``base``, relative to it, variant by
    variant; empty when there are none."""
    if base not in results:
        return ""
    others = [m for m in results if m != base and cases[m].spec == cases[base].spec and cases[m].batch_size == cases[base].batch_size]
    lines = []
    for model in others:
        shared = [v for v in results[model] if v in results[base]]
        if not shared:
            continue
        lines += [f"| {'variant':<24} | {model + ' ms':>22} | {base + ' ms':>16} | {'ratio':>6} |", "|" + "|".join(["-" * 26, "-" * 24, "-" * 18, "-" * 8]) + "|"]
        for v in shared:
            a, b = results[model][v]["step_ms"], results[base][v]["step_ms"]
            lines.append(f"| {v:<24} | {a:>22.1f} | {b:>16.1f} | {a / b:>6.3f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    parser = argparse.ArgumentParser(prog="python -m framework.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one round: seconds (for tests)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset (sum is always included)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--rounds", type=int, help="override the rounds per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first (the memory step follows)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; valid choices: {', '.join(VARIANTS)}")
    if "sum" not in variants:
        variants.insert(0, "sum")
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; valid choices: {', '.join(MODELS)}")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results, cases = {}, {}
    start = time.perf_counter()
    log(_load_line("start"))
    for name in models:
        case = model_case(name, args.quick)
        if args.rounds:
            case = dataclasses.replace(case, rounds=args.rounds, budget_s=math.inf)
        cases[name] = case
        log(f"{name}: {len(case.variants(variants))} variants x {case.rounds} rounds x {case.steps_per_round} steps, batch {case.batch_size}, {device}, {torch.get_num_threads()} threads")
        results[name] = bench_model(case, variants, device, args.warmup, log)
    log(_load_line("end"))
    print(table(results))
    versus = cross_model_table(results, cases)
    if versus:
        print(f"\nstep time relative to resnet18_av:\n{versus}")
    print(f"({time.perf_counter() - start:.0f} s; step_ms: median of interleaved full training steps)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
