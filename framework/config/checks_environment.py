"""What a config needs of the machine and the file system: an available device, a tracking URI with a
known scheme, the dataset's files where they can be checked cheaply, a writable checkpoint folder,
and ``distributed.*`` with what several ranks need."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig

from .errors import check_number, fail

TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "databricks", "postgresql", "mysql", "mssql")
"""URI schemes of MLflow tracking stores (a plain path is a file store)."""


def valid_devices() -> list[str]:
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: str) -> None:
    import torch

    valid = valid_devices()
    if device in valid:
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise fail("device", device, f"not a device; valid values here: {', '.join(valid)}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise fail("device", device, f"CUDA is not available on this machine; valid values here: {', '.join(valid)}")
    raise fail("device", device, f"not available on this machine; valid values here: {', '.join(valid)}")


def check_tracking(tracking: DictConfig) -> None:
    experiment = tracking.experiment
    if not isinstance(experiment, str) or not experiment.strip():
        raise fail("tracking.experiment", experiment, "must be a non-empty string")
    uri, key = tracking.uri, "tracking.uri"
    if uri is None:
        uri, key = os.environ.get("MLFLOW_TRACKING_URI") or None, "MLFLOW_TRACKING_URI"
    if uri is None:
        return
    scheme = urlparse(uri).scheme
    if len(scheme) <= 1:  # a plain path (or a Windows drive letter): a file store
        return
    if scheme not in TRACKING_SCHEMES:
        raise fail(key, uri, f"unknown scheme {scheme!r}; valid: {', '.join(TRACKING_SCHEMES)}, or a path")
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise fail(key, uri, "an embedded store is sqlite:///<path to the .db file>")
        database = Path(uri[len("sqlite:///") :])
        if not database.parent.is_dir():
            raise fail(key, uri, f"the folder {database.parent} does not exist")


# dataset targets whose inputs live in the prepared data directory (framework/data/sources.py)
DATA_FILES = {
    "framework.data.cgmnist.cgmnist_splits": ("mnist/digits.npz",),
    "framework.data.avmnist.avmnist_splits": ("mnist/digits.npz", "fsdd/mfcc.npz"),
    "framework.data.multitask.multi_mnist_splits": ("mnist/digits.npz",),
    "framework.data.multitask.multi_fashion_splits": ("fashion_mnist/items.npz",),
    "framework.data.multitask.multi_fashion_mnist_splits": ("mnist/digits.npz", "fashion_mnist/items.npz"),
}


def check_dataset(dataset: DictConfig) -> None:
    """Cheap checks only: a dataset's ``root`` folder, the prepared files of the cached datasets."""
    from ..data.sources import _resolve

    if "root" in dataset:
        root = dataset.root
        if not isinstance(root, str) or not Path(root).is_dir():
            raise fail("dataset.root", root, "no such folder: point it at the dataset (see conf/dataset/)")
    target = dataset.get("_target_")
    if target in DATA_FILES and "data_dir" in dataset:
        data_dir = dataset.data_dir
        for rel in DATA_FILES[target]:
            try:
                _resolve(data_dir, Path(rel))
            except FileNotFoundError as error:
                raise fail("dataset.data_dir", data_dir, str(error)) from None


def check_checkpoint_dir(directory: Any) -> None:
    """``checkpoint.dir`` is created now (as the first checkpoint would) and a file written in it, so
    a folder that cannot be created or written fails here rather than after the first epoch."""
    from hydra.utils import to_absolute_path

    if not isinstance(directory, str) or not directory.strip():
        raise fail("checkpoint.dir", directory, "must be a folder path")
    folder = Path(to_absolute_path(directory))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = f"[Errno {error.errno}] {error.strerror}: {error.filename}" if error.errno else str(error)
        raise fail("checkpoint.dir", directory, f"the folder cannot be created or written ({reason})") from None


def check_distributed(cfg: DictConfig) -> None:
    """``distributed.*`` and ``model.sync_bn``, and what several ranks need: a global batch that
    splits into equal shards, a device each rank can take, a backend that runs on it."""
    import torch

    from ..training.distributed import BACKENDS, world_size

    node: Any = cfg.get("distributed") or {}
    backend = node.get("backend", "auto")
    if backend not in BACKENDS:
        raise fail("distributed.backend", backend, f"valid values: {' | '.join(BACKENDS)}")
    for key in ("timeout_s", "bucket_mb"):
        check_number(node, key, "distributed.", positive=True)
    sync_bn = cfg.model.get("sync_bn", False)
    if not isinstance(sync_bn, bool):
        raise fail("model.sync_bn", sync_bn, "must be true or false")
    world = world_size()
    if world == 1:
        return
    batch = cfg.trainer.batch_size
    if batch % world:
        raise fail(
            "trainer.batch_size", batch,
            f"the global batch must split into {world} equal shards (one per rank): a multiple of {world}",
        )  # fmt: skip
    device = str(cfg.device)
    if device not in ("auto", "cuda", "cpu"):
        raise fail("device", device, f"with {world} ranks: auto, cuda or cpu (each rank takes cuda:<local rank>)")
    on_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if backend == "nccl" and not on_cuda:
        raise fail("distributed.backend", backend, "nccl needs CUDA devices; use gloo (or auto) on CPU")
    if sync_bn and not on_cuda:
        raise fail("model.sync_bn", sync_bn, "torch's SyncBatchNorm runs on CUDA only; set false on CPU")
    method = cfg.get("method") or {}
    name = method.get("name", "none")
    from ..methods import METHODS

    if name in METHODS and not METHODS[name].data_parallel:
        raise fail(
            "method.name", name,
            f"not supported on {world} ranks: its decisions use the rank's shard of the batch, so the ranks "
            "would diverge; run it in one process",
        )  # fmt: skip
