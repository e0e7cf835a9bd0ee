"""Every multimodal-imbalance method runs in a fast mode on the smoke, CG-MNIST and AV-MNIST configs,
logs its decisions under the statistics' names, composes with integrators where that makes sense
(a one-line error where not), and resumes exactly (the stateful ones)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from tests.cli import all_runs

from framework.main import train
from framework.methods import METHODS

pytestmark = pytest.mark.slow  # trains every method (~1 min)

FAST = ("trainer.epochs=1", "trainer.max_steps_per_epoch=2", "trainer.num_workers=0", "trainer.statistics.probe_size=4")
METHOD_NAMES = sorted(set(METHODS) - {"none"})
MLP_ONLY = {"ogm_ge": ("method.scope=all",)}  # the smoke model's encoders have no conv weights
# a decision each method logs (metric names of framework.metric_names)
DECISION = {
    "ogm_ge": "grad/encoder.{m}/coeff", "agm": "grad/encoder.{m}/coeff", "pmr": "grad/method/ratio/{m}",
    "gblending": "grad/method/loss_weight/multimodal", "mmcosine": "grad/method/logit/{m}",
    "mla": "grad/method/projector_updates/head", "gradnorm": "grad/method/loss_weight/multimodal", "ume": None,
}  # fmt: skip


def _run(uri: str):
    (run,) = all_runs(uri)
    return run


def test_every_method_has_a_config_and_a_decision_check():
    from pathlib import Path

    conf = {p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "method").glob("*.yaml")}
    assert set(METHOD_NAMES) <= conf and set(DECISION) == set(METHOD_NAMES)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_method_runs_on_smoke(method, compose_cfg, tracking_uri):
    results = train(compose_cfg("experiment=smoke", f"method={method}", *MLP_ONLY.get(method, ()), *FAST))
    run = _run(tracking_uri)
    assert run.info.status == "FINISHED" and run.data.tags["method"] == method
    assert run.info.run_name.startswith(method)
    assert 0.0 <= results["best/test/acc/multimodal"] <= 1.0
    if DECISION[method]:
        assert DECISION[method].format(m="strong") in run.data.metrics, sorted(run.data.metrics)


@pytest.mark.parametrize("preset,dataset", [("cgmnist_cnn", "cgmnist_file"), ("avmnist_cnn", "avmnist")])
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_method_runs_on_the_paper_presets(method, preset, dataset, compose_cfg, tracking_uri, tmp_path, writers):
    cfg = compose_cfg(f"experiment={preset}", f"method={method}", *FAST, *writers.dataset(dataset, tmp_path / "data"))
    results = train(cfg)
    run = _run(tracking_uri)
    assert run.info.status == "FINISHED"
    assert all(0.0 <= results[f"best/test/acc/{h}"] <= 1.0 for h in ("multimodal", *cfg_modalities(run)))


def cfg_modalities(run) -> list[str]:
    return [
        k.split("/")[-1] for k in run.data.metrics if k.startswith("best/test/acc/") and not k.endswith("multimodal")
    ]


def test_ogm_ge_with_the_multitask_loss_and_mmpareto(compose_cfg, tracking_uri):
    train(
        compose_cfg(
            "experiment=smoke", "method=ogm_ge", "method.scope=all", "loss=multitask", "integrator=mmpareto", *FAST
        )
    )
    run = _run(tracking_uri)
    assert run.info.run_name == "ogm_ge(scope=all)+mmpareto+multitask-seed0"
    # the integrator's statistics and the method's coefficient, side by side
    assert {"grad/encoder.strong/cos/multimodal.strong", "grad/encoder.strong/coeff"} <= run.data.metrics.keys()


@pytest.mark.parametrize(
    "overrides,message",
    [
        (("method=mla", "integrator=mmpareto"), "nothing to integrate (use integrator=sum)"),
        (("method=ume", "loss=one_joint"), "use loss=multitask"),
        (("method=gblending", "loss=one_joint"), "use loss=multitask"),
        (("method=ogm_ge", "+method.beta=1"), "has no parameter 'beta'"),
        (("method=agm", "method.pad=edge"), "method.pad='edge'"),
        (("method.name=nope",), "unknown method"),
    ],
)
def test_combinations_that_make_no_sense_are_one_line_errors(overrides, message, compose_cfg, tracking_uri):
    from framework.config.validation import ConfigError, validate

    with pytest.raises(ConfigError) as error:
        validate(compose_cfg("experiment=smoke", *overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_model_that_a_method_cannot_use_is_a_one_line_error(compose_cfg, tracking_uri):
    with pytest.raises(ValueError, match="model/fusion=concat") as error:
        train(
            compose_cfg(
                "experiment=smoke", "method=mmcosine", "model.fusion._target_=framework.models.fusion.SumFusion", *FAST
            )
        )
    assert "\n" not in str(error.value)


def histories(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in run.data.metrics}


@pytest.mark.parametrize(
    "overrides",
    [
        ("method=pmr",),
        ("method=gblending", "method.super_epoch=1"),
        ("method=mla",),
        ("method=agm",),
        ("method=gradnorm",),
    ],
    ids=["pmr", "gblending", "mla", "agm", "gradnorm"],
)
def test_interrupted_then_resumed_run_ends_exactly_like_an_uninterrupted_one(
    overrides, compose_cfg, tracking_uri, tmp_path, monkeypatch
):
    from framework.training.trainer import Trainer

    steps_per_epoch = 8  # smoke: 512 samples / 64 per batch
    base = ("experiment=smoke", "trainer.epochs=3", "trainer.statistics.noise_every=0", *overrides)
    client = MlflowClient(tracking_uri)
    monkeypatch.setenv("FRAMEWORK_CHECKPOINT_DIR", str(tmp_path / "straight"))
    expected = train(compose_cfg(*base))
    (straight,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    monkeypatch.setenv("FRAMEWORK_CHECKPOINT_DIR", str(tmp_path / "interrupted"))
    original = Trainer.train_step

    def interrupted(self, *args, **kwargs):
        if self.state.step == 2 * steps_per_epoch + 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(compose_cfg(*base))
    assert train(compose_cfg(*base, "resume=true")) == expected
    runs = [r for r in client.search_runs([straight.info.experiment_id]) if r.info.run_id != straight.info.run_id]
    got, want = histories(client, runs[0].info.run_id), histories(client, straight.info.run_id)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], key
    assert any(k.startswith("grad/method/") or k.endswith("/coeff") for k in want)


def test_imbalance_sweep_covers_every_method_and_each_choice_composes_and_validates(tracking_uri):
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from framework.main import run_label
    from framework.config.validation import validate

    root = Path(__file__).resolve().parents[2]
    params = OmegaConf.load(root / "sweeps" / "imbalance.yaml").hydra.sweeper.params
    choices = params.method.split(",")
    assert params.seed.split(",") == ["0", "1", "2"]
    labels = []
    for choice in choices:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(root / "sweeps")):
            cfg = compose("imbalance", overrides=[f"hydra.searchpath=[file://{root / 'conf'}]", f"method={choice}"])
        validate(cfg)
        labels.append(run_label(cfg))
        assert cfg.tracking.tags.sweep == "imbalance"
    GlobalHydra.instance().clear()
    assert len(set(labels)) == len(labels) == 14
    expected = {"one_joint", "sum", "sum(scale=1.5)", "mgda", "mmpareto", "mmpareto(gamma=1.0)"}
    assert expected <= set(labels)
    assert {label.split("(")[0] for label in labels} >= set(METHOD_NAMES)


def test_report_tabulates_what_the_methods_decided(compose_cfg, tracking_uri, tmp_path):
    from analysis.report import main as report

    for method in ("agm", "gblending"):
        cfg = compose_cfg("experiment=smoke", f"method={method}", f"checkpoint.dir={tmp_path}/ckpt/{method}", *FAST)
        train(cfg)
    out = tmp_path / "report"
    argv = ["--experiment", "smoke", "--out", str(out), "--tracking-uri", tracking_uri, "--no-summary-run"]
    assert report(argv) == 0
    table = (out / "decisions.md").read_text()
    assert "encoder.strong/coeff" in table and "method/loss_weight/multimodal" in table
    assert "| agm |" in table and "| gblending |" in table
    assert "What the imbalance methods decided" in (out / "report.md").read_text()


def test_the_compare_integrators_sweep_names_its_variants_by_method_choices():
    """compare_integrators sweeps choices of the method group (no variant map of its own); its run
    labels are the integrators' labels, upgrad with MMPareto's magnitude among them."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from framework.main import run_label

    root = Path(__file__).resolve().parents[2]
    params = OmegaConf.load(root / "sweeps" / "compare_integrators.yaml").hydra.sweeper.params
    labels = []
    for choice in params.method.split(","):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(root / "sweeps")):
            cfg = compose(
                "compare_integrators", overrides=[f"hydra.searchpath=[file://{root / 'conf'}]", f"method={choice}"]
            )
        labels.append(run_label(cfg))  # each choice is validated in test_configs (every method option)
    GlobalHydra.instance().clear()
    assert labels == [
        "sum", "mgda", "mmpareto", "upgrad", "upgrad(magnitude=restore_gamma)",
        "cagrad", "nash_mtl", "imtl_g", "aligned_mtl", "gradvac",
    ]  # fmt: skip
