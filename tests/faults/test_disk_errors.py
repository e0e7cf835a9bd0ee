"""A checkpoint that cannot be written (a full disk): one line naming the path and the real errno,
the run FAILED with it as its ``error`` tag, and the previous checkpoint kept whole.

The end-to-end test fills a small tmpfs (root only: it skips where ``mount`` is not permitted);
the unit tests fake the disk error, so they run everywhere.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest
import torch
from tests.cli import run_main, runs_in

from framework.training import checkpoint
from framework.training.checkpoint import CheckpointWriteError, load_checkpoint, save_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.faults]  # CLI runs in subprocesses on a full disk

# the reported command, with 256 training samples rather than 2048: the checkpoints (8.8 MB, then
# 17.6 MB with the momentum buffers) are as large, and the third fills the 40 MB tmpfs
E = (
    "experiment=smoke", "dataset.train_size=256", "model.encoder.hidden=[1024,1024]",
    "trainer.statistics.log_every=4", "trainer.statistics.noise_every=0", "trainer.epochs=8",
)  # fmt: skip


def full_disk(*args, **kwargs):
    """What torch.save raises when the disk fills: the zip writer's error while closing the file,
    raised while the ENOSPC of a write is handled (so the ENOSPC is only its context)."""
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 13285632 vs 13285520")  # noqa: B904


def test_a_full_disk_names_the_path_and_the_errno_and_keeps_the_previous(tmp_path, monkeypatch):
    path = tmp_path / "ck" / "checkpoint.pt"
    save_checkpoint({"state": {"epoch": 1}}, path)
    save_checkpoint({"state": {"epoch": 2}}, path)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError) as raised:
        save_checkpoint({"state": {"epoch": 3}}, path)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message and "No space left on device" in message, message
    assert raised.value.errno == errno.ENOSPC
    assert "inline_container" not in message, message
    monkeypatch.undo()
    assert load_checkpoint(path)["state"]["epoch"] == 2  # the previous checkpoint is kept, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


def test_an_oserror_while_syncing_is_reported_the_same(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"

    def eio(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(checkpoint.os, "fsync", eio)
    with pytest.raises(CheckpointWriteError, match="Input/output error") as raised:
        save_checkpoint({"state": {"epoch": 1}}, path)
    assert str(path) in str(raised.value) and raised.value.errno == errno.EIO
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_an_error_with_no_oserror_behind_it_still_names_the_path(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 2\nsecond line")

    monkeypatch.setattr(checkpoint.torch, "save", broken)
    with pytest.raises(CheckpointWriteError) as raised:
        save_checkpoint({"state": {"epoch": 1}}, tmp_path / "checkpoint.pt")
    message = str(raised.value)
    assert "\n" not in message and str(tmp_path / "checkpoint.pt") in message, message


@pytest.fixture
def small_tmpfs(tmp_path):
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mount_point = tmp_path / "M"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount is not permitted here: {done.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_cli_run_on_a_full_disk_fails_with_one_line(tmp_path, small_tmpfs):
    """Before: a 30-line double traceback ending in 'RuntimeError: [enforce fail at inline_container.cc:672]
    . unexpected pos ...', that also the run's error tag; ENOSPC only in the chained exception."""
    ck = small_tmpfs / "ck"
    result = run_main(tmp_path, *E, f"checkpoint.dir={ck}", timeout=600)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert last.startswith("error: ") and "No space left on device" in last and str(ck) in last, last
    (run,) = runs_in(tmp_path)
    tag = run.data.tags["error"]
    assert run.info.status == "FAILED" and "No space left on device" in tag and "\n" not in tag, tag
    kept = torch.load(ck / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert 1 <= kept["state"]["epoch"] < 8
    assert not [p for p in ck.iterdir() if p.suffix == ".tmp"]
