"""The command line of ``python -m framework.bench``: arguments, progress log, tables and JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from .cases import MODELS, ModelCase, model_case
from .precision import PRECISIONS, BenchError, check_precision, device_name, resolve_device
from .protocol import bench_model
from .variants import VARIANTS, precision_unsupported

DESCRIPTION = (sys.modules[__package__].__doc__ or "").split("\n\n")[0]


def load_line(when: str) -> str:
    """The machine's 1-minute load average. Other processes' CPU use skews every timing; at the
    end the figure includes this benchmark's own threads."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    cores = os.cpu_count() or 1
    limit = 0.5 * cores if when == "start" else cores + 0.5 * cores
    warning = (
        f" -- busy machine ({load:.1f} runnable tasks on {cores} cores): timings are unreliable" if load > limit else ""
    )
    return f"load average at {when}: {load:.2f}{warning}"


def table(results: dict[str, dict[str, dict[str, float]]], device: str | None = None, precision: str = "32") -> str:
    """The results, one row per model and variant. With a ``device`` name (any run but the CPU
    float32 default) every row also says the device and the precision."""
    extra = device is not None
    head = f" {'device':<24} | {'precision':>9} |" if extra else ""
    rule = ["-" * 26, "-" * 11] if extra else []
    lines = [
        f"| {'model':<18} | {'variant':<24} | {'step_ms':>9} | {'peak_mb':>8} | {'ratio_to_sum':>12} |{head}",
        "|" + "|".join(["-" * 20, "-" * 26, "-" * 11, "-" * 10, "-" * 14, *rule]) + "|",
    ]
    for model, by_variant in results.items():
        for variant, r in by_variant.items():
            cells = f" {device:<24} | {precision:>9} |" if extra else ""
            lines.append(
                f"| {model:<18} | {variant:<24} | {r['step_ms']:>9.1f} | {r['peak_mb']:>8.1f} | {r['ratio_to_sum']:>12.3f} |{cells}"
            )
    return "\n".join(lines)


def cross_model_table(
    results: dict[str, dict[str, dict[str, float]]], cases: dict[str, ModelCase], base: str = "resnet18_av"
) -> str:
    """Step time of the models that train on the same batch as ``base``, relative to it, variant by
    variant; empty when there are none."""
    if base not in results:
        return ""
    others = [
        m
        for m in results
        if m != base and cases[m].spec == cases[base].spec and cases[m].batch_size == cases[base].batch_size
    ]
    lines = []
    for model in others:
        shared = [v for v in results[model] if v in results[base]]
        if not shared:
            continue
        lines += [
            f"| {'variant':<24} | {model + ' ms':>22} | {base + ' ms':>16} | {'ratio':>6} |",
            "|" + "|".join(["-" * 26, "-" * 24, "-" * 18, "-" * 8]) + "|",
        ]
        for v in shared:
            a, b = results[model][v]["step_ms"], results[base][v]["step_ms"]
            lines.append(f"| {v:<24} | {a:>22.1f} | {b:>16.1f} | {a / b:>6.3f} |")
        lines.append("")
    return "\n".join(lines)


def torchjd_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Each framework variant against ``torchjd_<variant>`` (torchjd's own step with the same
    aggregator) on the same model; empty when no pair ran."""
    lines: list[str] = []
    for model, by_variant in results.items():
        for variant, r in by_variant.items():
            theirs = by_variant.get(f"torchjd_{variant}")
            if theirs is None:
                continue
            if not lines:
                lines += [
                    f"| {'model':<18} | {'variant':<12} | {'step_ms':>9} | {'torchjd ms':>10} | {'ratio':>6} |",
                    "|" + "|".join(["-" * 20, "-" * 14, "-" * 11, "-" * 12, "-" * 8]) + "|",
                ]
            lines.append(
                f"| {model:<18} | {variant:<12} | {r['step_ms']:>9.1f} | {theirs['step_ms']:>10.1f} | {r['step_ms'] / theirs['step_ms']:>6.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    parser = argparse.ArgumentParser(prog="python -m framework.bench", description=DESCRIPTION)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one round: seconds (for tests)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset (sum is always included)"
    )
    parser.add_argument(
        "--device", default="cpu", help="auto | cpu | cuda | cuda:N (auto: CUDA when present); default cpu"
    )
    parser.add_argument(
        "--precision",
        default="32",
        choices=PRECISIONS,
        help="32 (float32), bf16 (autocast bfloat16) or 16 (autocast float16 + GradScaler)",
    )
    parser.add_argument("--batch-size", type=int, help="override every model's batch size")
    parser.add_argument("--rounds", type=int, help="override the rounds per model")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed steps per variant first (the memory step follows)"
    )
    parser.add_argument(
        "--world-size",
        type=int,
        default=1,
        help="N > 1: the data-parallel step on N gloo ranks, sum (DDP) against mmpareto (per-loss)",
    )
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be positive")
    if args.world_size > 1:
        return _main_world(args, parser)
    try:
        device = resolve_device(args.device)
        check_precision(args.precision, device)
    except BenchError as error:
        sys.exit(f"{parser.prog}: error: {error}")
    # the default run (CPU, float32) prints its tables as before; any other says where it ran
    named = None if (device.type == "cpu" and args.precision == "32") else device_name(device)
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
    log(load_line("start"))
    for name in models:
        case = model_case(name, args.quick)
        if args.batch_size:
            case = dataclasses.replace(case, batch_size=args.batch_size)
        skipped = precision_unsupported(args.precision)
        if skipped:
            case = dataclasses.replace(case, unsupported={**skipped, **case.unsupported})
        if args.rounds:
            case = dataclasses.replace(case, rounds=args.rounds, budget_s=math.inf)
        cases[name] = case
        log(
            f"{name}: {len(case.variants(variants))} variants x {case.rounds} rounds x {case.steps_per_round} steps, batch {case.batch_size}, {device}, {torch.get_num_threads()} threads"
            + (f", precision {args.precision}" if named else "")
        )
        results[name] = bench_model(case, variants, device, args.warmup, log, args.precision)
    log(load_line("end"))
    if named:
        print(f"device: {named}, precision: {args.precision}")
    print(table(results, named, args.precision))
    versus = cross_model_table(results, cases)
    if versus:
        print(f"\nstep time relative to resnet18_av:\n{versus}")
    against = torchjd_table(results)
    if against:
        print(f"\nframework step time relative to torchjd's own step with the same aggregator:\n{against}")
    peak = "; peak_mb: torch.cuda.max_memory_allocated per variant" if device.type == "cuda" else ""
    print(f"({time.perf_counter() - start:.0f} s; step_ms: median of interleaved full training steps{peak})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


def _main_world(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, dict[str, dict[str, float]]]:
    """``--world-size N``: :mod:`framework.bench.distributed`."""
    from .distributed import bench_world, world_table

    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; valid choices: {', '.join(MODELS)}")
    if args.device not in ("cpu", "auto"):
        parser.error("--world-size runs on CPU ranks (gloo)")
    if args.precision != "32" or args.batch_size:
        parser.error("--world-size runs float32 at the cases' batch sizes (no --precision, --batch-size)")
    start = time.perf_counter()
    print(load_line("start"), file=sys.stderr, flush=True)
    results = bench_world(
        models,
        args.world_size,
        args.quick,
        args.rounds,
        args.warmup,
        lambda message: print(message, file=sys.stderr, flush=True),
    )
    print(load_line("end"), file=sys.stderr, flush=True)
    print(world_table(results, args.world_size))
    print(f"({time.perf_counter() - start:.0f} s; step_ms: median of interleaved steps, the slowest rank's)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results
