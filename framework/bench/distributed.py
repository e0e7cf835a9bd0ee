"""``python -m framework.bench --world-size N``: the data-parallel step on ``N`` ranks (spawned
processes, gloo on CPU), ``sum`` through DDP against ``mmpareto`` through the per-loss reduction.

Each model case keeps its global batch (``resnet18_av`` and ``transformer_xmodal``: 16), split into
``N`` equal shards. A step is the trainer's: forward, gradients averaged across ranks, integration,
SGD step. The variants are interleaved in rounds; a step's time is the slowest rank's (the ranks
wait for each other in the collectives anyway), ``step_ms`` the median over the timed steps.

``bytes_per_step`` is the payload one rank hands to all-reduce in a step: DDP's summed gradient
(every trainable parameter once, ``d`` values), or the per-loss path's ``sum_groups k_g d_g`` (each
shared group once per loss that reaches it; heads, single-loss groups and the ``k`` loss values
once). A ring all-reduce sends ``2 (N - 1) / N`` times the payload per rank, so on 8 GPUs each rank
sends and receives 1.75 x ``bytes_per_step`` (``ring8_mb``).
"""

from __future__ import annotations

import copy
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..data.sharding import shard_of
from ..integrators import get_integrator
from ..losses import MultitaskLoss
from ..training.distributed import (
    DataParallel,
    DistributedContext,
    DistributedSettings,
    init_process_group,
    shutdown,
)
from ..training.gradients import GradientEngine
from .cases import make_batch, make_optimizer, model_case

DISTRIBUTED_VARIANTS = ("sum", "mmpareto")
"""``sum``: one DDP all-reduce of the summed gradient; ``mmpareto``: per-loss gradients reduced."""


def ring_bytes(payload: float, world_size: int) -> float:
    """Bytes each rank sends (and receives) in a ring all-reduce of ``payload`` bytes."""
    return 2 * (world_size - 1) / world_size * payload


class _Runner:
    def __init__(
        self,
        variant: str,
        template: torch.nn.Module,
        context: DistributedContext,
        inputs: dict[str, torch.Tensor],
        labels: torch.Tensor,
    ) -> None:
        self.variant = variant
        self.model = copy.deepcopy(template)
        self.model.train()
        self.parallel = DataParallel(context, self.model)
        self.engine = GradientEngine(self.model, get_integrator(variant), reducer=self.parallel.reducer)
        self.optimizer = make_optimizer(self.model)
        self.loss = MultitaskLoss()
        self.inputs, self.labels = inputs, labels
        self.times: list[float] = []
        self.steps = 0
        self.ddp_steps = 0

    def step(self) -> None:
        if self.engine.summed_step(need_decisions=False):
            self.parallel.summed_step(self.inputs, self.labels, self.loss, False)
            self.engine.scale_summed()
            self.ddp_steps += 1
        else:
            features = self.model.encode(self.inputs)  # type: ignore[operator]
            losses = self.loss(self.model.classify(features), self.labels)  # type: ignore[operator]
            self.engine.backward(features, losses)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1

    def bytes_per_step(self, timed_steps: int, reducer_bytes: int) -> float:
        ddp = self.parallel.ddp_bytes_per_step if self.ddp_steps else 0
        return reducer_bytes / timed_steps + ddp


def _worker(
    rank: int, world_size: int, store: str, out: str, models: list[str], quick: bool, rounds: int | None, warmup: int
) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    init_process_group("gloo", rank, world_size, init_method=f"file://{store}")
    context = DistributedContext(rank, world_size, rank, torch.device("cpu"), "gloo", DistributedSettings())
    results: dict[str, dict[str, dict[str, float | str]]] = {}  # per model and variant; path is a str
    try:
        for name in models:
            case = model_case(name, quick)
            if case.batch_size % world_size:
                raise ValueError(f"{name}: batch {case.batch_size} does not split into {world_size} equal shards")
            torch.manual_seed(0)
            template = case.build(case.spec)
            inputs, labels = make_batch(case, case.batch_size)
            rows = shard_of(torch.arange(case.batch_size), rank, world_size)
            inputs, labels = {m: t[rows] for m, t in inputs.items()}, labels[rows]
            runners = [_Runner(v, template, context, inputs, labels) for v in DISTRIBUTED_VARIANTS]
            for runner in runners:
                for _ in range(max(warmup, 1) + 1):  # the first step finds the plan; DDP is built on the next
                    runner.step()
            before = {r.variant: r.parallel.reducer.bytes_sent for r in runners}
            n_rounds = rounds or case.rounds
            for index in range(n_rounds):
                shift = index % len(runners)
                for runner in runners[shift:] + runners[:shift]:
                    dist.barrier()
                    start = time.perf_counter()
                    runner.step()
                    elapsed = torch.tensor([(time.perf_counter() - start) * 1e3], dtype=torch.float64)
                    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank's step
                    runner.times.append(float(elapsed))
            step_ms = {runner.variant: statistics.median(runner.times) for runner in runners}
            by_variant: dict[str, dict[str, float | str]] = {}
            for runner in runners:
                payload = runner.bytes_per_step(n_rounds, runner.parallel.reducer.bytes_sent - before[runner.variant])
                by_variant[runner.variant] = {
                    "step_ms": step_ms[runner.variant],
                    "bytes_per_step": payload,
                    "ring8_mb": ring_bytes(payload, 8) / 2**20,
                    "path": "ddp" if runner.ddp_steps else "per_loss",
                }
            base = step_ms["sum"]
            for variant, row in by_variant.items():
                row["ratio_to_sum"] = step_ms[variant] / base
            results[name] = by_variant
            # DDP's reducer holds the process group and gloo work: free it while the group is alive
            del runners
            gc.collect()
        if rank == 0:
            Path(out).write_text(json.dumps(results))
        dist.barrier()
    finally:
        shutdown()


def bench_world(
    models: list[str], world_size: int, quick: bool, rounds: int | None, warmup: int, log: Callable[[str], None]
) -> dict[str, dict[str, dict[str, float]]]:
    """Spawn ``world_size`` gloo ranks, time the variants on each model; rank 0's summary."""
    log(
        f"{world_size} ranks (gloo, CPU, {max(1, (os.cpu_count() or 1) // world_size)} threads each): "
        f"{', '.join(DISTRIBUTED_VARIANTS)} on {', '.join(models)}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        mp.spawn(
            _worker,
            args=(world_size, str(Path(tmp) / "store"), str(out), models, quick, rounds, warmup),
            nprocs=world_size,
            join=True,
        )
        return json.loads(out.read_text())


def world_table(results: dict[str, dict[str, dict[str, float]]], world_size: int) -> str:
    lines = [
        f"| {'model':<18} | {'variant':<9} | {'path':<8} | {'step_ms':>9} | {'ratio_to_sum':>12} | "
        f"{'MB/step/rank':>12} | {'ring8 MB/rank':>13} |",
        "|" + "|".join(["-" * 20, "-" * 11, "-" * 10, "-" * 11, "-" * 14, "-" * 14, "-" * 15]) + "|",
    ]
    for model, by_variant in results.items():
        for variant, r in by_variant.items():
            mb = r["bytes_per_step"] / 2**20
            lines.append(
                f"| {model:<18} | {variant:<9} | {r['path']:<8} | {r['step_ms']:>9.1f} | "
                f"{r['ratio_to_sum']:>12.3f} | {mb:>12.2f} | {r['ring8_mb']:>13.2f} |"
            )
    lines.append(
        f"(world size {world_size}; MB/step/rank: all-reduce payload of one step; ring8: what a rank "
        "sends in a ring all-reduce on 8 GPUs, 2*7/8 x payload)"
    )
    return "\n".join(lines)
