"""Bad input, table-driven: each row is a config a user might type, and the key its error must name.

Every error is one line that names the key (and the value given and what is valid), raised before
any data is loaded or any MLflow run is opened. Most rows are checked in process (composition
through Hydra as ``python -m framework.main`` does, then :func:`framework.main.train`); the rows of
first reported (ids ``issue_*``) and one of each kind run through the command line, in parallel, where the last line of
stderr is ``error: ...``, the exit status 1 and no traceback is printed.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from tests.cli import run_main, runs_in

from framework.main import one_line, train
from framework.config.validation import ConfigError

pytestmark = pytest.mark.slow  # runs the CLI in subprocesses (~1 min)

SMOKE = "experiment=smoke"
UNAVAILABLE_DEVICE = "cuda:99" if torch.cuda.is_available() else "cuda"

# (id, overrides, the key the error names); every row also gets experiment=smoke first
ROWS: list[tuple[str, tuple[str, ...], str]] = [
    # as first reported by users
    ("issue_lr_1e8_diverges", ("optimizer.lr=1e8",), "trainer.on_nonfinite"),
    ("issue_batch_size_negative", ("trainer.batch_size=-3",), "trainer.batch_size"),
    ("issue_batch_size_zero", ("trainer.batch_size=0",), "trainer.batch_size"),
    ("issue_epochs_zero", ("trainer.epochs=0",), "trainer.epochs"),
    ("issue_device_unavailable", (f"device={UNAVAILABLE_DEVICE}",), "device"),
    ("issue_gamma_not_a_number", ("integrator.gamma=abc",), "integrator.gamma"),
    ("issue_name_read_as_float", ("name=nan",), "name"),
    # top level
    ("name_empty", ("name=''",), "name"),
    ("seed_wrong_type", ("seed=abc",), "seed"),
    ("seed_negative", ("seed=-1",), "seed"),
    ("device_unknown", ("device=tpu",), "device"),
    ("device_index_out_of_range", ("device=cuda:99",), "device"),
    ("resume_wrong_type", ("resume=maybe",), "resume"),
    ("objective_unknown", ("objective=accuracy",), "objective"),
    # trainer
    ("trainer_batch_size_wrong_type", ("trainer.batch_size=abc",), "trainer.batch_size"),
    ("trainer_epochs_fractional", ("trainer.epochs=2.5",), "trainer.epochs"),
    ("trainer_num_workers_negative", ("trainer.num_workers=-1",), "trainer.num_workers"),
    ("trainer_on_nonfinite_unknown", ("trainer.on_nonfinite=maybe",), "trainer.on_nonfinite"),
    ("trainer_probe_chunk_zero", ("trainer.statistics.probe_chunk=0",), "trainer.statistics.probe_chunk"),
    ("trainer_unknown_key", ("trainer.epoch=3",), "trainer.epoch"),
    # optimizer
    ("optimizer_lr_wrong_type", ("optimizer.lr=abc",), "optimizer.lr"),
    ("optimizer_lr_negative", ("optimizer.lr=-0.1",), "optimizer.lr"),
    ("optimizer_lr_nan", ("optimizer.lr=nan",), "optimizer.lr"),
    ("optimizer_momentum_negative", ("optimizer.momentum=-1",), "optimizer.momentum"),
    ("optimizer_unknown_choice", ("optimizer=rmsprop",), "optimizer"),
    # integrator
    ("integrator_gamma_negative", ("integrator.gamma=-1",), "gamma"),
    ("integrator_unknown_choice", ("integrator=foo",), "integrator"),
    ("integrator_unknown_parameter", ("+integrator.foo=1",), "foo"),
    ("integrator_rescale_unknown", ("integrator.rescale=sideways",), "rescale"),
    ("integrator_magnitude_unknown", ("integrator.magnitude=big",), "magnitude"),
    # scheduler
    ("scheduler_unknown_choice", ("scheduler=linear",), "scheduler"),
    ("scheduler_step_size_zero", ("scheduler=step", "scheduler.step_size=0"), "scheduler.step_size"),
    ("scheduler_gamma_wrong_type", ("scheduler=step", "scheduler.gamma=abc"), "scheduler.gamma"),
    # dataset
    ("dataset_unknown_choice", ("dataset=imagenet",), "dataset"),
    ("dataset_size_wrong_type", ("dataset.train_size=abc",), "dataset.train_size"),
    ("dataset_size_negative", ("dataset.train_size=-5",), "dataset.train_size"),
    ("dataset_unknown_parameter", ("+dataset.foo=1",), "dataset.foo"),
    ("dataset_root_missing", ("dataset=cremad", "dataset.root=/nonexistent/cremad"), "dataset.root"),
    ("dataset_data_dir_missing", ("dataset=cgmnist", "data_dir=/nonexistent/data"), "dataset.data_dir"),
    (
        "dataset_multitask_data_dir_missing",
        ("experiment=multi_fashion_lenet", "data_dir=/nonexistent/data"),
        "dataset.data_dir",
    ),
    # model
    ("model_unknown_choice", ("model=vit",), "model"),
    ("model_dim_wrong_type", ("model.encoder.dim=abc",), "model.encoder.dim"),
    ("model_dim_zero", ("model.encoder.dim=0",), "model.encoder.dim"),
    ("model_fusion_unknown_choice", ("model=resnet18_av", "model/fusion=attention"), "model/fusion"),
    # loss
    ("loss_unknown_choice", ("loss=focal",), "loss"),
    ("loss_detach_wrong_type", ("loss.detach_unimodal=maybe",), "loss.detach_unimodal"),
    ("loss_untrusted_target", ("loss._target_=os.system",), "loss._target_"),
    # tracking and checkpoints
    ("tracking_uri_unknown_scheme", ("tracking.uri=foo://somewhere",), "tracking.uri"),
    ("tracking_uri_missing_folder", ("tracking.uri=sqlite:////nonexistent/dir/mlflow.db",), "tracking.uri"),
    ("tracking_experiment_empty", ("tracking.experiment=''",), "tracking.experiment"),
    ("checkpoint_dir_wrong_type", ("checkpoint.dir=[a,b]",), "checkpoint.dir"),
]
BY_ID = {row[0]: row for row in ROWS}
CLI_ROWS = [
    *(row_id for row_id in BY_ID if row_id.startswith("issue_")),
    "integrator_unknown_choice", "dataset_root_missing", "tracking_uri_unknown_scheme", "trainer_unknown_key",
]  # fmt: skip
IN_PROCESS_ROWS = [row_id for row_id in BY_ID if row_id not in CLI_ROWS and row_id != "issue_lr_1e8_diverges"]


def run_cli(row_id: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    _, overrides, _ = BY_ID[row_id]
    return run_main(tmp, SMOKE, *overrides)


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Every CLI row, three processes at a time (process start dominates)."""
    dirs = {row_id: tmp_path_factory.mktemp(row_id) for row_id in CLI_ROWS}
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(CLI_ROWS, pool.map(lambda r: run_cli(r, dirs[r]), CLI_ROWS), strict=True))
    return {row_id: (results[row_id], dirs[row_id]) for row_id in CLI_ROWS}


def test_the_table_covers_every_group_and_kind():
    assert len(ROWS) >= 30 and len(BY_ID) == len(ROWS)
    for group in ("trainer", "optimizer", "integrator", "scheduler", "dataset", "model", "loss", "tracking"):
        kinds = {row_id.removeprefix(f"{group}_") for row_id in BY_ID if row_id.startswith(f"{group}_")}
        assert any("wrong_type" in k for k in kinds) or group in ("integrator", "tracking"), group
        assert any("unknown" in k for k in kinds) or group in ("trainer", "tracking"), group


@pytest.mark.parametrize("row_id", CLI_ROWS)
def test_cli_prints_one_line_naming_the_key_and_exits_1(cli_results, row_id):
    result, tmp = cli_results[row_id]
    _, overrides, key = BY_ID[row_id]
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    assert result.returncode == 1, (overrides, result.stderr[-2000:])
    assert last.startswith("error: ") and key in last, (overrides, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr, result.stderr[-2000:]
    runs = runs_in(tmp)
    if row_id == "issue_lr_1e8_diverges":  # training started: the run is FAILED, never FINISHED
        (run,) = runs
        assert run.info.status == "FAILED" and "non-finite loss at step" in run.data.tags["error"]
        assert "non-finite loss at step" in last
    else:
        assert runs == [], "a config error left an MLflow run behind"


@pytest.mark.parametrize("row_id", IN_PROCESS_ROWS)
def test_error_is_one_line_naming_the_key_before_any_run(compose_cfg, tmp_path, row_id):
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _, overrides, key = BY_ID[row_id]
    try:
        cfg = compose_cfg(SMOKE, *overrides)
    except (HydraException, OmegaConfBaseException) as error:  # Hydra/OmegaConf: types, choices
        message = one_line(error)
    else:
        with pytest.raises(ConfigError) as raised:
            train(cfg)
        message = str(raised.value)
    assert "\n" not in message and key in message, message
    assert runs_in(tmp_path) == [], "validation must run before any MLflow run is opened"
