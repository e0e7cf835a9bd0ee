"""Bad config values that used to pass validation and open a run: refused before any run opens,
in one line naming the key, the value and what is valid.

Before: ``integrator.gamma=inf`` trained until 'non-finite gradient at step 0'; ``+trainer.unknown=1``
failed with ``TrainerSettings.__init__() got an unexpected keyword argument 'unknown'``; a checkpoint
folder that cannot be created failed at the first checkpoint with ``[Errno 2] ...``; ``name='a/b'``
silently nested the checkpoint folder. Each opened an MLflow run (FAILED, or FINISHED for the name).
A batch larger than the train split is allowed (a full-batch step) and now says so in one warning.
"""

from __future__ import annotations

import logging
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.cli import run_main, runs_in

from framework.main import train
from framework.config.validation import ConfigError

pytestmark = [pytest.mark.slow, pytest.mark.faults]  # trainings and CLI runs in subprocesses

SMALL = ("experiment=smoke", "dataset.train_size=64", "trainer.epochs=1", "trainer.statistics.noise_every=0")


def refused(compose_cfg, *overrides: str) -> str:
    cfg = compose_cfg(*SMALL, *overrides)
    with pytest.raises(ConfigError) as raised:
        train(cfg)
    message = str(raised.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_gamma_must_be_finite(compose_cfg, tmp_path, value):
    message = refused(compose_cfg, f"integrator.gamma={value}")
    assert message.startswith(f"integrator.gamma={value}: ") and "finite" in message, message
    assert runs_in(tmp_path) == []


@pytest.mark.parametrize(
    ("override", "key", "a_valid_key"),
    [
        ("+trainer.unknown=1", "trainer.unknown", "batch_size"),
        ("+trainer.statistics.every=3", "trainer.statistics.every", "log_every"),
        ("+distributed.backends=gloo", "distributed.backends", "backend"),
        ("+checkpoint.every=2", "checkpoint.every", "dir"),
        ("+tracking.url=http://x", "tracking.url", "uri"),
    ],
)
def test_unknown_keys_of_a_schema_group_are_refused_naming_the_valid_ones(
    compose_cfg, tmp_path, override, key, a_valid_key
):
    message = refused(compose_cfg, override)
    assert message.startswith(f"{key}=") and "unknown key" in message and a_valid_key in message, message
    assert runs_in(tmp_path) == []


def test_tracking_tags_stay_open(compose_cfg):
    cfg = compose_cfg(*SMALL, "+tracking.tags.anything=1", "trainer.max_steps_per_epoch=1")
    train(cfg)


def test_a_checkpoint_folder_that_cannot_be_created_is_refused(compose_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    message = refused(compose_cfg, f"checkpoint.dir={blocker / 'ck'}")
    assert message.startswith(f"checkpoint.dir='{blocker / 'ck'}': ") and "cannot be created" in message, message
    assert runs_in(tmp_path) == []


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_the_reported_checkpoint_folder_under_proc_is_refused(compose_cfg, tmp_path):
    message = refused(compose_cfg, "checkpoint.dir=/proc/forbidden")
    assert message.startswith("checkpoint.dir='/proc/forbidden': ") and "No such file or directory" in message
    assert not Path("/proc/forbidden").exists()
    assert runs_in(tmp_path) == []


@pytest.mark.parametrize("name", ["a/b", "..", "."])
def test_a_name_that_is_not_one_folder_name_is_refused(compose_cfg, tmp_path, name):
    message = refused(compose_cfg, f"name='{name}'")
    assert message.startswith(f"name={name!r}: ") and "tracking.experiment" in message, message
    assert runs_in(tmp_path) == []


def test_a_batch_larger_than_the_train_split_is_one_full_batch_step_and_says_so(compose_cfg, caplog):
    cfg = compose_cfg(*SMALL, "trainer.batch_size=4096")
    with caplog.at_level(logging.WARNING, logger="framework"):
        train(cfg)
    (line,) = [r.getMessage() for r in caplog.records if "trainer.batch_size" in r.getMessage()]
    assert "trainer.batch_size=4096" in line and "64 samples" in line and "\n" not in line, line


CLI_OVERRIDES = ("integrator.gamma=inf", "+trainer.unknown=1")


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    def one(override: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        tmp = tmp_path_factory.mktemp("cli")
        return run_main(tmp, *SMALL, override), tmp

    with ThreadPoolExecutor(max_workers=len(CLI_OVERRIDES)) as pool:
        return dict(zip(CLI_OVERRIDES, pool.map(one, CLI_OVERRIDES), strict=True))


@pytest.mark.parametrize("override", CLI_OVERRIDES)
def test_cli_exits_1_with_one_line_and_opens_no_run(cli_results, override):
    result, tmp_path = cli_results[override]
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert last.startswith(f"error: {override.lstrip('+')}") or last.startswith(
        f"error: {override.lstrip('+').split('=')[0]}="
    ), last
    assert runs_in(tmp_path) == []
