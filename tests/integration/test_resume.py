"""Checkpoint and resume: exact continuation, Ctrl-C, kill -9, requeues, interval, atomic writes, the
previous checkpoint kept and used when the last one is unreadable."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from tests.cli import ROOT, main_command, main_env

from framework.main import train
from framework.training import checkpoint as ckpt
from framework.training import trainer as trainer_module
from framework.training.trainer import Trainer

pytestmark = pytest.mark.slow  # trains, kills and resumes in subprocesses

STEPS_PER_EPOCH = 8  # smoke: 512 samples / 64 per batch
# every stateful part is exercised: momentum (SGD), a cosine schedule, the integrator's own RNG
# (pcgrad), a torchjd adapter's state (gradvac: the EMA of the target cosines, one copy per
# parameter group, and its private RNG), the shuffle generator, the probe's noise statistics
OVERRIDES = ("experiment=smoke", "trainer.epochs=4", "trainer.statistics.noise_every=5")


def histories(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}


def interrupt_at_step(monkeypatch: pytest.MonkeyPatch, step: int, exception: type[BaseException]) -> None:
    original = Trainer.train_step

    def train_step(self, *args, **kwargs):
        if self.state.step == step:
            raise exception()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", train_step)


@pytest.mark.parametrize("integrator", ["mmpareto", "pcgrad", "gradvac"])
def test_interrupted_then_resumed_run_ends_exactly_like_an_uninterrupted_one(
    compose_cfg, tracking_uri, tmp_path, monkeypatch, integrator
):
    client = MlflowClient(tracking_uri)
    overrides = (*OVERRIDES, f"integrator={integrator}")
    monkeypatch.setenv("FRAMEWORK_CHECKPOINT_DIR", str(tmp_path / "straight"))
    expected = train(compose_cfg(*overrides))
    (straight,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])

    # interrupted in the middle of epoch 2 (after epoch e=1's checkpoint), then resumed
    monkeypatch.setenv("FRAMEWORK_CHECKPOINT_DIR", str(tmp_path / "interrupted"))
    with monkeypatch.context() as patch:
        interrupt_at_step(patch, 2 * STEPS_PER_EPOCH + 3, KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            train(compose_cfg(*overrides))
    (killed,) = [r for r in client.search_runs([straight.info.experiment_id]) if r.info.run_id != straight.info.run_id]
    assert killed.info.status == "KILLED"
    assert killed.data.metrics["val/acc/multimodal"] is not None
    resumed = train(compose_cfg(*overrides, "resume=true"))

    assert resumed == expected  # every final metric, exactly
    runs = client.search_runs([straight.info.experiment_id])
    assert len(runs) == 2, "the resume continued the interrupted run instead of starting one"
    run = client.get_run(killed.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumes"] == "1" and run.data.tags["resumed_from_epoch"] == "2"
    assert "interrupted" not in run.data.tags
    got, want = histories(client, run.info.run_id), histories(client, straight.info.run_id)
    assert got.keys() == want.keys()
    for key in want:  # per-epoch and per-step histories, each step once, values exactly equal
        assert got[key] == want[key], key
    assert [s for s, _ in want["val/acc/multimodal"]] == [0, 1, 2, 3]
    assert any(k.startswith("grad/") and len(v) == 4 * STEPS_PER_EPOCH for k, v in want.items())


def test_checkpoint_interval_is_configurable(compose_cfg, monkeypatch):
    saved: list[int] = []
    original = trainer_module.save_checkpoint

    def record(state, path):
        saved.append(state["state"]["epoch"])
        original(state, path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", record)
    cfg = compose_cfg("experiment=smoke", "trainer.epochs=5", "trainer.checkpoint_every=2")
    results = train(cfg)
    assert saved == [0, 2, 4, 5]  # the start, every 2 epochs, the end
    state = ckpt.load_checkpoint(Path(cfg.checkpoint.dir) / "checkpoint.pt")
    assert state is not None and state["state"]["epoch"] == 5
    assert set(state) >= {"model", "optimizer", "scheduler", "integrator", "rng", "shuffle", "state", "run_id"}
    # resuming a finished run returns its results at once, in the same run
    assert (
        train(compose_cfg("experiment=smoke", "trainer.epochs=5", "trainer.checkpoint_every=2", "resume=true"))
        == results
    )
    assert saved == [0, 2, 4, 5]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint({"epoch": 1}, path)

    def crash(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint({"epoch": 2}, path)
    assert ckpt.load_checkpoint(path) == {"epoch": 1, "job": None}  # stamped with the (absent) job
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_requeued_slurm_job_resumes_without_resume_flag(compose_cfg, tracking_uri, monkeypatch):
    client = MlflowClient(tracking_uri)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    with monkeypatch.context() as patch:  # preempted in epoch 1
        interrupt_at_step(patch, STEPS_PER_EPOCH + 2, KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            train(compose_cfg(*OVERRIDES))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # Slurm requeued it: same job id
    train(compose_cfg(*OVERRIDES))
    (run,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_epoch"] == "1" and run.data.tags["slurm_restart_count"] == "1"

    # another job with the same overrides starts over, in a new run
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    train(compose_cfg(*OVERRIDES))
    runs = client.search_runs([run.info.experiment_id])
    assert len(runs) == 2 and all("resumes" not in r.data.tags for r in runs if r.info.run_id != run.info.run_id)


def test_job_identity_and_requeue_rule(monkeypatch):
    for name in ("SUBMITIT_EXECUTOR", "SLURM_JOB_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    assert ckpt.current_job() is None and not ckpt.is_requeue_of({"job": None})
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert ckpt.current_job() == "slurm:7"
    assert not ckpt.is_requeue_of({"job": "slurm:7"}), "a second run in one allocation is not a requeue"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert ckpt.is_requeue_of({"job": "slurm:7"}) and not ckpt.is_requeue_of({"job": "slurm:8"})
    assert not ckpt.is_requeue_of(None)


def wait_for_checkpoint(path: Path, epoch: int, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "training ended before it could be interrupted"
        if path.is_file():
            try:
                if torch.load(path, weights_only=False)["state"]["epoch"] >= epoch:
                    return
            except Exception:
                pass
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint of epoch {epoch} in {timeout} s")


@pytest.mark.slow
def test_ctrl_c_leaves_a_killed_run_and_a_resumable_checkpoint(tmp_path):
    env = main_env(tmp_path)
    args = ["experiment=smoke", "trainer.epochs=4", "dataset.train_size=4096"]
    command = main_command(tmp_path, *args)
    path = tmp_path / "checkpoints" / "smoke" / ",".join(sorted(args)) / "checkpoint.pt"
    # a shell that starts a job in the background ignores SIGINT for it; a user's Ctrl-C does not
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for_checkpoint(path, 1, process)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0, output
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert run.info.status == "KILLED", output
    assert run.data.tags["interrupted"].startswith("KeyboardInterrupt in epoch")
    state = torch.load(path, weights_only=False)
    assert state["run_id"] == run.info.run_id and 1 <= state["state"]["epoch"] < 4

    result = subprocess.run([*command, "resume=true"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "resume=true: resuming run" in result.stdout + result.stderr
    (run,) = client.search_runs([run.info.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_epoch"] == str(state["state"]["epoch"])
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc/multimodal")]
    assert sorted(steps) == [0, 1, 2, 3]


def test_the_last_two_checkpoints_are_kept(tmp_path):
    path = tmp_path / "checkpoint.pt"
    for epoch in (1, 2, 3):
        ckpt.save_checkpoint({"epoch": epoch}, path)
    assert torch.load(path, weights_only=False)["epoch"] == 3
    assert torch.load(ckpt.previous_path(path), weights_only=False)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not_a_dict"])
def test_an_unreadable_checkpoint_warns_naming_it_and_the_previous_one_is_used(tmp_path, caplog, damage):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint({"epoch": 1, "weights": torch.arange(10_000.0)}, path)
    ckpt.save_checkpoint({"epoch": 2, "weights": torch.arange(10_000.0)}, path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a checkpoint\xff" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save([1, 2, 3], path)
    with caplog.at_level("WARNING", logger="framework"):
        state = ckpt.load_checkpoint(path)
    assert state is not None and state["epoch"] == 1
    (warning, used) = [r.getMessage() for r in caplog.records]
    assert "\n" not in warning and str(path) in warning and "unreadable" in warning and "previous" in warning
    assert str(ckpt.previous_path(path)) in used


def test_no_readable_checkpoint_is_an_error_not_a_silent_restart(tmp_path, caplog):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint({"epoch": 1}, path)
    ckpt.save_checkpoint({"epoch": 2}, path)
    for p in (path, ckpt.previous_path(path)):
        p.write_bytes(b"broken")
    with pytest.raises(ValueError, match="no readable checkpoint") as raised:
        ckpt.load_checkpoint(path)
    assert "\n" not in str(raised.value) and str(path) in str(raised.value)


def test_resume_from_a_corrupt_checkpoint_continues_from_the_previous_one(
    compose_cfg, tracking_uri, monkeypatch, caplog
):
    expected = train(compose_cfg(*OVERRIDES))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri.replace("mlflow.db", "second.db"))
    cfg = compose_cfg(*OVERRIDES)
    with monkeypatch.context() as patch:  # checkpoints of epochs 1 and 2 written, stopped in epoch 2
        interrupt_at_step(patch, 2 * STEPS_PER_EPOCH + 3, KeyboardInterrupt)
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    path = Path(cfg.checkpoint.dir) / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])  # truncated, as by a full disk outside our writer
    with caplog.at_level("WARNING", logger="framework"):
        resumed = train(compose_cfg(*OVERRIDES, "resume=true"))
    assert any(str(path) in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)
    assert resumed == expected
    client = MlflowClient(tracking_uri.replace("mlflow.db", "second.db"))
    (run,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_epoch"] == "1"


@pytest.mark.slow
def test_kill_9_in_epoch_2_then_resume_ends_exactly_like_an_uninterrupted_run(tmp_path):
    """SIGKILL leaves the run RUNNING (nothing could mark it); resume=true takes it over, and its
    final metrics and every metric history equal an uninterrupted run's. Step statistics every 4
    steps keep an epoch's points in one batch, so nothing of the killed epoch reached the store."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["experiment=smoke", "trainer.epochs=4", "dataset.train_size=4096", "trainer.statistics.log_every=4"]

    def command(name: str) -> tuple[list[str], dict[str, str]]:
        spool, checkpoints = str(tmp_path / "spool"), str(tmp_path / name)
        env = main_env(tmp_path, uri, FRAMEWORK_SPOOL_DIR=spool, FRAMEWORK_CHECKPOINT_DIR=checkpoints)
        return main_command(tmp_path / name, *args), env

    straight_command, straight_env = command("straight")
    done = subprocess.run(straight_command, cwd=ROOT, env=straight_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke").experiment_id
    (straight,) = client.search_runs([experiment])

    killed_command, killed_env = command("killed")
    path = tmp_path / "killed" / "smoke" / ",".join(sorted(args)) / "checkpoint.pt"
    process = subprocess.Popen(
        killed_command, cwd=ROOT, env=killed_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_checkpoint(path, 2, process)  # epochs 0 and 1 done: epoch 2 is running
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    (killed,) = [r for r in client.search_runs([experiment]) if r.info.run_id != straight.info.run_id]
    assert killed.info.status == "RUNNING", "SIGKILL: nothing could end the run"
    state = torch.load(path, weights_only=False)
    assert state["run_id"] == killed.info.run_id and state["state"]["epoch"] == 2

    resumed = subprocess.run(
        [*killed_command, "resume=true"], cwd=ROOT, env=killed_env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = client.get_run(killed.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumes"] == "1" and run.data.tags["resumed_from_epoch"] == "2"
    assert len(client.search_runs([experiment])) == 2, "the resume took the killed run over"
    assert run.data.metrics == client.get_run(straight.info.run_id).data.metrics  # final values, exactly
    got, want = histories(client, run.info.run_id), histories(client, straight.info.run_id)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], key
    assert [s for s, _ in want["val/acc/multimodal"]] == [0, 1, 2, 3]
