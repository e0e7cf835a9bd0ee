"""The measurement protocol of one model: warmup, one memory step per variant, then interleaved
rounds of timed steps until the rounds or the case's time budget run out; medians per variant."""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .cases import ModelCase, build_model
from .measure import frozen_heap, measure_peak_mb
from .variants import make_runner


def bench_model(
    case: ModelCase,
    variants: list[str],
    device: torch.device,
    warmup: int,
    log: Callable[[str], None],
    precision: str = "32",
) -> dict[str, dict[str, float]]:
    """``{variant: {"step_ms", "peak_mb", "ratio_to_sum"}}`` for the variants that apply to ``case``
    (the others are logged as not run), every step at ``precision`` (:mod:`.precision`)."""
    template = build_model(case)
    for variant in variants:
        if variant in case.unsupported:
            log(f"  {case.name}: no {variant} ({case.unsupported[variant]})")
    variants = case.variants(variants)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runners = [make_runner(v, case, template, device, Path(tmp), precision) for v in variants]
        with frozen_heap():
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
            step_ms = statistics.median(runner.times)
            if runner.amortised_ms is not None:
                step_ms += runner.amortised_ms()
            results[runner.name] = {"step_ms": step_ms, "peak_mb": peaks[runner.name]}
            if runner.close is not None:
                runner.close()
    base = results.get("sum", {}).get("step_ms")
    for row in results.values():
        row["ratio_to_sum"] = row["step_ms"] / base if base else math.nan
    return results
