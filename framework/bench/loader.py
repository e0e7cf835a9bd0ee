"""Loader throughput: samples/second of a disk dataset's training epochs, with and without the
decoded-frame cache (:mod:`framework.data.frame_cache`), for several DataLoader worker counts.

    python -m framework.bench.loader --dataset cremad --fixture --workers 0,2 --batch 64

``--fixture`` writes a synthetic CREMA-D in the preprocessed layout (random spectrograms, random
JPEG frames of ``--frame-size``) in a temporary folder; ``--root`` reads a real one instead. Each
configuration runs one warm-up epoch (worker start, cache build, page cache), then ``--epochs``
timed epochs through a :class:`~framework.data.base.BatchSource` (persistent workers). Read the
ratios: absolute figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..data import cremad
from ..data.base import BatchSource, LoaderSettings
from ..data.images import write_image


def write_cremad_fixture(
    root: Path, clips: int, frames_per_clip: int, frame_size: tuple[int, int], seed: int = 0
) -> Path:
    """A synthetic CREMA-D (preprocessed layout): ``clips`` training and ``clips // 4`` test clips."""
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    with (root / "stat.csv").open("w", newline="") as f:
        csv.writer(f).writerows([[c] for c in cremad.CLASSES])
    for split, count in (("train", clips), ("test", max(clips // 4, 1))):
        rows = []
        for i in range(count):
            label = cremad.CLASSES[i % len(cremad.CLASSES)]
            clip_id = f"{1 if split == 'train' else 2}{i:03d}_DFA_{label}_XX"
            rows.append([clip_id, label])
            spectrogram = torch.from_numpy(rng.standard_normal((257, 188)).astype(np.float32))
            torch.save(spectrogram, root / "audio" / f"{clip_id}.pt")
            for k in range(1, frames_per_clip + 1):
                # smooth content (as video frames are) so JPEG sizes and decode times are realistic
                base = rng.integers(0, 256, size=(frame_size[0] // 8 + 1, frame_size[1] // 8 + 1, 3), dtype=np.uint8)
                pixels = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[: frame_size[0], : frame_size[1]]
                write_image(root / "visual" / clip_id / f"frame_{k:05d}.jpg", pixels)
        with (root / f"{split}.csv").open("w", newline="") as f:
            csv.writer(f).writerows(rows)
    return root


def measure(
    root: Path, cache: Path | None, workers: int, batch: int, epochs: int, image_size: int, num_frames: int
) -> tuple[float, float]:
    """(seconds to construct the splits, training samples/second over ``epochs`` after a warm-up)."""
    start = time.perf_counter()
    splits = cremad.cremad_splits(root, image_size=image_size, num_frames=num_frames, frame_cache=cache)
    built = time.perf_counter() - start
    settings = LoaderSettings(num_workers=workers, persistent_workers=workers > 0)
    source = BatchSource(splits.train, batch, True, torch.Generator().manual_seed(0), settings)
    for _ in source:  # warm-up: worker start, page cache
        pass
    start = time.perf_counter()
    samples = 0
    for _ in range(epochs):
        for _, labels in source:
            samples += int(labels.shape[0])
    rate = samples / (time.perf_counter() - start)
    source.close()
    return built, rate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m framework.bench.loader", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="cremad", choices=["cremad"])
    parser.add_argument("--fixture", action="store_true", help="write a synthetic dataset in a temporary folder")
    parser.add_argument("--root", type=Path, help="a dataset root to read instead of --fixture")
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--clips", type=int, default=128, help="--fixture: training clips")
    parser.add_argument("--frames-per-clip", type=int, default=6)
    parser.add_argument("--frame-size", default="256x340", help="--fixture: frame HEIGHTxWIDTH")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--num-frames", type=int, default=2)
    args = parser.parse_args(argv)
    if args.fixture == (args.root is not None):
        parser.error("give exactly one of --fixture and --root")
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        root = args.root
        if args.fixture:
            height, width = (int(v) for v in args.frame_size.lower().split("x"))
            root = write_cremad_fixture(Path(tmp) / "cremad", args.clips, args.frames_per_clip, (height, width))
        cache = Path(tmp) / "frame-cache"
        print(f"dataset {args.dataset} at {root}; batch {args.batch}, {args.epochs} timed epochs after a warm-up")
        print(f"{'workers':>7} {'no cache (samples/s)':>21} {'cache (samples/s)':>18} {'cache/no cache':>15}")
        rows = []
        first_build = None
        for w in workers:
            _, plain = measure(root, None, w, args.batch, args.epochs, args.image_size, args.num_frames)
            built, cached = measure(root, cache, w, args.batch, args.epochs, args.image_size, args.num_frames)
            first_build = built if first_build is None else first_build
            rows.append((w, plain, cached))
            print(f"{w:>7} {plain:>21.1f} {cached:>18.1f} {cached / plain:>14.2f}x")
        base = rows[0][1]
        print(
            f"relative to {rows[0][0]} workers without cache: "
            + ", ".join(f"{w}w {p / base:.2f}x / cached {c / base:.2f}x" for w, p, c in rows)
        )
        print(f"first construction with the cache (decodes every frame once): {first_build:.2f}s")


if __name__ == "__main__":
    main()
