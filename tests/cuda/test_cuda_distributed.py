"""On CUDA: a one-rank ``nccl`` process group runs an all-reduce; ``model.sync_bn=true`` turns the
model's BatchNorm into SyncBatchNorm on an nccl rank and trains; a ``torchrun --nproc-per-node 1``
run with ``model.sync_bn=true`` finishes. ``pytest -m cuda``.

Under ``torchrun --nproc-per-node 1`` ``WORLD_SIZE`` is 1, which :mod:`framework.training.distributed`
treats as the plain single-process path (no process group, no SyncBatchNorm conversion): one GPU
cannot hold two nccl ranks, so the conversion is checked in-process on a one-rank nccl group."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from tests.ports import free_port

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

ROOT = Path(__file__).resolve().parents[2]
needs_mnist = pytest.mark.skipif(
    not (ROOT / "data" / "mnist" / "digits.npz").is_file(), reason="run 'python -m framework.data.prepare' first"
)
TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.fixture
def one_rank_nccl():
    """A one-rank nccl group on cuda:0, destroyed after the test."""
    from framework.training.distributed import init_process_group

    if not dist.is_nccl_available():
        pytest.skip("this torch build has no nccl")
    torch.cuda.set_device(0)
    init_process_group("nccl", rank=0, world_size=1, timeout_s=60, init_method=f"tcp://127.0.0.1:{free_port()}")
    try:
        yield torch.device("cuda", 0)
    finally:
        dist.destroy_process_group()


def test_one_rank_nccl_all_reduce(one_rank_nccl):
    assert dist.get_backend() == "nccl" and dist.get_world_size() == 1
    values = torch.arange(4.0, device=one_rank_nccl)
    dist.all_reduce(values)
    torch.cuda.synchronize()
    assert values.device.type == "cuda" and values.tolist() == [0.0, 1.0, 2.0, 3.0]


@needs_mnist
def test_sync_bn_on_an_nccl_rank_trains(compose_cfg, one_rank_nccl):
    """``build_trainer`` with a distributed context and ``model.sync_bn=true`` (the default
    experiment's CNNs have BatchNorm): SyncBatchNorm on CUDA, two steps, running statistics move."""
    from framework.main import build_trainer
    from framework.training.distributed import DistributedContext, DistributedSettings

    cfg = compose_cfg(
        "device=cuda", "model.sync_bn=true", "dataset.train_size=256", "trainer.epochs=1",
        "trainer.max_steps_per_epoch=2", "trainer.progress=false",
    )  # fmt: skip
    context = DistributedContext(0, 1, 0, one_rank_nccl, "nccl", DistributedSettings(backend="nccl"))
    trainer = build_trainer(cfg, None, None, context)
    sync = [m for m in trainer.model.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert sync, "model.sync_bn=true converted the BatchNorm layers"
    assert not [m for m in trainer.model.modules() if type(m) in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in sync]
    trainer.train_epoch()
    assert all(m.running_mean.device.type == "cuda" for m in sync)
    assert any(not torch.equal(m.running_mean, b) for m, b in zip(sync, before, strict=True))
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_torchrun_one_process_with_sync_bn(tmp_path):
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "FRAMEWORK_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    command = [
        str(TORCHRUN), "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        "-m", "framework.main", "experiment=smoke", "trainer.epochs=1", "device=cuda", "model.sync_bn=true",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
