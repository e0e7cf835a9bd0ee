"""Sweeps from sweeps/, the submitit_local launcher, and a server-backed MLflow store."""

from __future__ import annotations


import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf, open_dict
from tests.cli import ROOT, main_env, run_main, runs_in

pytestmark = pytest.mark.slow  # Hydra multiruns in subprocesses, an mlflow server

SWEEPS = ROOT / "sweeps"


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEPS.glob("*.yaml")))
def test_every_sweep_definition_composes(name, tracking_uri):
    """Each sweeps/<name>.yaml is a primary config over conf/train.yaml, as `-cd sweeps -cn <name>` loads it."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(SWEEPS)):
            cfg = compose(
                config_name=name,
                overrides=[f"hydra.searchpath=[file://{ROOT / 'conf'}]"],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        assert cfg.hydra.sweeper.params, f"{name}: a sweep defines hydra.sweeper.params"
        with open_dict(cfg):
            del cfg.hydra
        job = OmegaConf.to_container(cfg, resolve=True)
        assert job["tracking"]["tags"]["sweep"] == name, f"{name}: tag its runs with tracking.tags.sweep"
        assert job["integrator"]["name"] and job["trainer"]["epochs"] > 0
    finally:
        GlobalHydra.instance().clear()


def test_every_sweep_has_its_command_in_the_readme():
    readme = (SWEEPS / "README.md").read_text()
    for path in SWEEPS.glob("*.yaml"):
        command = f"-cd sweeps -cn {path.stem}"
        assert command in readme, f"sweeps/README.md lacks `{command}`"
        assert command in path.read_text(), f"{path.name}: its header says how to run it"


def test_comparison_sweep_is_every_integrator_plus_one_joint_times_three_seeds(tmp_path):
    params = OmegaConf.load(SWEEPS / "compare.yaml").hydra.sweeper.params
    methods = params.method.split(",")
    assert methods == ["sum", "pcgrad", "mgda", "mmpareto", "one_joint"]
    paper_integrators = {"sum", "pcgrad", "mgda", "mmpareto"}  # the paper's comparison; more in compare_integrators
    assert paper_integrators <= {p.stem for p in (ROOT / "conf" / "integrator").glob("*.yaml")}
    assert set(methods) == paper_integrators | {"one_joint"}
    assert params.seed.split(",") == ["0", "1", "2"]

    # the sweep as the README runs it, one seed of it here (`seed=0` overrides the definition's seeds)
    result = run_main(
        tmp_path, "-m", "-cd", "sweeps", "-cn", "compare", "experiment=smoke", "trainer.epochs=1", "seed=0", timeout=900
    )
    assert result.returncode == 0, result.stderr
    runs = runs_in(tmp_path)
    assert sorted(r.info.run_name for r in runs) == sorted(f"{m}-seed0" for m in methods)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["sweep"] for r in runs} == {"compare"}
    by_name = {r.info.run_name: r for r in runs}
    assert by_name["one_joint-seed0"].data.params["loss.detach_unimodal"] == "True"
    assert by_name["mgda-seed0"].data.params["loss.detach_unimodal"] == "False"
    assert by_name["mgda-seed0"].data.params["integrator.name"] == "mgda"


@pytest.mark.slow
def test_submitit_local_jobs_run_at_once_into_a_fresh_embedded_store(tmp_path):
    # two processes creating the same new sqlite file race on its tables: the run creation retries
    result = run_main(
        tmp_path, "-m", "hydra/launcher=submitit_local", "experiment=smoke", "integrator=sum,mmpareto", timeout=900
    )
    assert result.returncode == 0, result.stderr
    runs = runs_in(tmp_path)
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [
        ("mmpareto-seed0", "FINISHED"),
        ("sum-seed0", "FINISHED"),
    ]
    folders = list((tmp_path / "multi" / ".submitit").iterdir())
    assert len(folders) == 1, "one fresh submitit folder per sweep"


@pytest.mark.slow
def test_runs_land_in_a_server_backed_store(mlflow_server, tmp_path):
    experiment = f"server-{tmp_path.name}"  # the session's server is shared: this test's runs alone
    result = run_main(
        tmp_path, "-m", "experiment=smoke", "trainer.epochs=1", "seed=0,1", f"tracking.experiment={experiment}",
        env=main_env(tmp_path, mlflow_server.uri), timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    through_server, in_backend = (
        experiment_runs(uri, experiment) for uri in (mlflow_server.uri, f"sqlite:///{mlflow_server.backend}")
    )  # the server's answer, and what it wrote to its backend
    assert sorted(r.info.run_name for r in through_server) == ["mmpareto-seed0", "mmpareto-seed1"]
    assert {r.info.run_id for r in in_backend} == {r.info.run_id for r in through_server}
    assert {r.info.status for r in in_backend} == {"FINISHED"}
    assert not (tmp_path / "mlflow.db").exists(), "nothing wrote to the embedded store"
    folder = mlflow_server.artifacts / through_server[0].info.experiment_id
    assert len(list(folder.rglob("config.yaml"))) == 2, "artifacts go through the server to its destination"


def experiment_runs(uri: str, name: str):
    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(name).experiment_id])
