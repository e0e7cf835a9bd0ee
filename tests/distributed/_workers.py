"""Training workers for the equivalence test: the same tiny runs on one process and on several
(spawned, gloo), their final parameters and accuracies saved for the test to compare."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from framework.data.synthetic import synthetic_splits
from framework.integrators import get_integrator
from framework.losses import MultitaskLoss
from framework.models import LateFusionModel
from framework.models.encoders import MLPEncoder
from framework.models.fusion import ConcatFusion
from framework.models.transformer import CrossModalTransformer
from framework.training.distributed import (
    DataParallel,
    DistributedContext,
    DistributedSettings,
    init_process_group,
    shutdown,
)
from framework.training.statistics import StatisticsSettings
from framework.training.trainer import Trainer, TrainerSettings

BATCH = 16  # the global batch: 8 per rank on two ranks
CASES = {
    # name: (model, integrator, statistics every N steps; 0 = none, so sum takes the DDP path)
    "sum_ddp": ("mlp", "sum", 0),
    "sum": ("mlp", "sum", 1),
    "mgda": ("mlp", "mgda", 1),
    "pcgrad": ("mlp", "pcgrad", 1),
    "mmpareto": ("mlp", "mmpareto", 1),
    "mmpareto_transformer": ("transformer", "mmpareto", 1),
}


def build_model(kind: str, spec) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "mlp":  # no BatchNorm: each rank's forward is the single process's on its rows
        return LateFusionModel(spec, partial(MLPEncoder, hidden=(32,), dim=16), ConcatFusion)
    return CrossModalTransformer(spec, dim=16, depth=2, heads=2, patch_size=8)


def make_splits():
    """100 train samples: 6 full global batches and a partial one of 4 (2 per rank)."""
    return synthetic_splits(
        {"strong": {"dim": 8, "signal": 1.0}, "weak": {"dim": 8, "signal": 0.4}},
        num_classes=4,
        train_size=100,
        val_size=30,
        test_size=33,
        seed=0,
    )


def train(case: str, parallel_for, device: torch.device) -> dict:
    kind, integrator, log_every = CASES[case]
    splits = make_splits()
    model = build_model(kind, splits.spec)
    parallel = parallel_for(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    settings = TrainerSettings(
        epochs=2, batch_size=BATCH, progress=False, statistics=StatisticsSettings(log_every=log_every, noise_every=0)
    )
    trainer = Trainer(
        model,
        splits,
        MultitaskLoss(),
        get_integrator(integrator),
        optimizer,
        None,
        settings,
        device,
        seed=0,
        parallel=parallel,
    )
    results = trainer.fit()
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "results": results,
        "steps": trainer.state.step,
        "bytes": parallel.reducer.bytes_sent if parallel is not None else 0,
    }


def single(out: Path) -> None:
    torch.save({case: train(case, lambda model: None, torch.device("cpu")) for case in CASES}, out)


def ranked(rank: int, world_size: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    init_process_group("gloo", rank, world_size, init_method=f"file://{store}")
    try:
        context = DistributedContext(rank, world_size, rank, torch.device("cpu"), "gloo", DistributedSettings())
        found = {case: train(case, lambda model: DataParallel(context, model), context.device) for case in CASES}
        torch.save(found, f"{out}.rank{rank}")
    finally:
        shutdown()
