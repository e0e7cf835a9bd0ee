"""Every option of every config group in conf/ composes into the training config and builds.

The groups and their options are discovered through Hydra (the config source of ``conf/``), so a
new config file is tested as soon as it exists; a new config *group* fails
:func:`test_every_config_group_is_tested` until a test below builds its options. Each option is
composed with ``conf/train.yaml`` as ``python -m framework.main`` composes it and instantiated as
``framework/main.py`` does: datasets on the small fixtures of ``tests/fixtures/writers.py``,
models with the dataset's ``DatasetSpec`` and a forward pass, optimizers with parameters,
schedulers with an optimizer, integrators through ``get_integrator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.object_type import ObjectType
from hydra.plugins.launcher import Launcher
from hydra.utils import get_class, instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler

from framework.config import build
from framework.data.base import DatasetSpec, Splits, iterate_batches
from framework.integrators import get_integrator
from framework.integrators.base import Integrator
from framework.models.base import MultimodalModel
from framework.models.multitask import MultitaskModel

CONF = Path(__file__).resolve().parents[2] / "conf"
MULTITASK_DATASET = "multi_mnist"  # what multi-task models (one head per task) are built on


def config_groups() -> dict[str, list[str]]:
    """``{group: options}`` of every config group under conf/ (nested ones as ``model/fusion``),
    as Hydra's config source for the primary config directory lists them."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF)):
            loader = GlobalHydra.instance().config_loader()
            (source,) = [s for s in loader.get_sources() if s.provider == "main"]

            def walk(parent: str) -> Iterator[tuple[str, list[str]]]:
                for name in source.list(parent, ObjectType.GROUP):
                    group = f"{parent}/{name}" if parent else name
                    options = source.list(group, ObjectType.CONFIG)
                    if options:
                        yield group, sorted(options)
                    yield from walk(group)

            return dict(walk(""))
    finally:
        GlobalHydra.instance().clear()


GROUPS = config_groups()
TESTED = {
    "dataset", "model", "model/fusion", "loss", "integrator", "optimizer", "scheduler", "experiment",
    "hparams_search", "hydra/launcher", "method",
}  # fmt: skip


def options(group: str) -> list[str]:
    return GROUPS.get(group, [])


def choice(group: str) -> str | None:
    """The option of ``group`` that the last composed config selected."""
    return HydraConfig.get().runtime.choices.get(group)


@pytest.fixture(scope="session")
def data(tmp_path_factory, writers) -> Callable[[str], list[str]]:
    """``data(dataset)``: the overrides that point ``dataset`` at its fixture (written once per session)."""
    root = tmp_path_factory.mktemp("data")
    written: dict[str, list[str]] = {}

    def overrides(dataset: str) -> list[str]:
        if dataset not in written:
            written[dataset] = writers.dataset(dataset, root)
        return [f"data_dir={root}", *written[dataset]]

    return overrides


@pytest.fixture
def compose_on_data(compose_cfg, data) -> Callable[..., DictConfig]:
    """Compose with ``overrides`` plus what points the dataset it selects at its fixture."""

    def _compose(*overrides: str) -> DictConfig:
        compose_cfg(*overrides)
        return compose_cfg(*overrides, *data(choice("dataset")))

    return _compose


@pytest.fixture
def compose_with_hydra(tracking_uri) -> Iterator[Callable[..., DictConfig]]:
    """Compose with ``overrides``, keeping the ``hydra`` node (sweeper and launcher configs)."""

    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF)):
            cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


def trusted(cfg: DictConfig) -> list[str]:
    return list(cfg.trusted_targets)


def build_splits(cfg: DictConfig) -> Splits:
    splits = build(cfg.dataset, trusted(cfg))
    assert isinstance(splits, Splits) and isinstance(splits.spec, DatasetSpec)
    return splits


def build_model(cfg: DictConfig, splits: Splits) -> MultimodalModel:
    model = build(cfg.model, trusted(cfg), spec=splits.spec)
    assert isinstance(model, MultimodalModel) and isinstance(model, get_class(cfg.model._target_))
    return model


def batch(splits: Splits, size: int = 2):
    return next(iterate_batches(splits.train, size, shuffle=False))


def head_classes(spec: DatasetSpec, heads: tuple[str, ...]) -> dict[str, int]:
    """Classes per head: a multi-task dataset's per-task classes, else ``num_classes`` for every head."""
    return dict(getattr(spec, "tasks", None) or dict.fromkeys(heads, spec.num_classes))


def assert_logits(model: MultimodalModel, splits: Splits, detach_unimodal: bool = False) -> dict[str, torch.Tensor]:
    """A forward pass on a training batch: one ``(batch, classes)`` logit tensor per head."""
    inputs, labels = batch(splits)
    logits = model(inputs, detach_unimodal=detach_unimodal)
    assert list(logits) == list(model.heads)
    classes = head_classes(splits.spec, model.heads)
    for head, value in logits.items():
        assert value.shape == (labels.shape[0], classes[head]) and torch.isfinite(value).all()
    return logits


def test_discovery_finds_every_config_file_of_every_group():
    files = {(p.parent.relative_to(CONF).as_posix(), p.stem) for p in CONF.rglob("*.yaml") if p.parent != CONF}
    assert files == {(group, option) for group, opts in GROUPS.items() for option in opts}
    assert "model/fusion" in GROUPS  # nested groups too


def test_every_config_group_is_tested():
    assert set(GROUPS) == TESTED, "a new config group needs a test here that builds its options"


# ---------------------------------------------------------------- datasets


@pytest.mark.parametrize("option", options("dataset"))
def test_dataset_builds_splits_whose_samples_match_the_spec(compose_on_data, option):
    cfg = compose_on_data(f"dataset={option}")
    splits = build_splits(cfg)
    spec = splits.spec
    for name in ("train", "val", "test"):
        split = getattr(splits, name)
        assert len(split) > 0 and split.spec == spec
        inputs, label = split[0]
        assert {m: tuple(x.shape) for m, x in inputs.items()} == dict(spec.modalities)
        tasks = getattr(spec, "tasks", None)  # multi-task: one label per task
        classes = list(tasks.values()) if tasks else [spec.num_classes]
        label = torch.as_tensor(label).reshape(-1)
        assert len(label) == len(classes) and all(0 <= int(y) < c for y, c in zip(label, classes, strict=True))
    inputs, labels = batch(splits)
    assert all(inputs[m].shape == (2, *shape) for m, shape in spec.modalities.items())
    assert labels.shape == ((2, len(spec.tasks)) if getattr(spec, "tasks", None) else (2,))
    # disk datasets report their skipped samples (none in a clean fixture); in-memory ones none at all
    skipping = {n for n in ("train", "val", "test") if getattr(splits, n).can_skip}
    assert splits.skipped() == dict.fromkeys(skipping, 0)


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("option", options("model"))
def test_model_builds_for_the_dataset_spec_and_runs_forward(compose_cfg, compose_on_data, option):
    cfg = compose_cfg(f"model={option}")
    multitask = issubclass(get_class(cfg.model._target_), MultitaskModel)
    cfg = compose_on_data(f"model={option}", *([f"dataset={MULTITASK_DATASET}"] if multitask else []))
    splits = build_splits(cfg)
    model = build_model(cfg, splits)
    assert model.modalities == tuple(splits.spec.modalities)
    groups = model.parameter_groups()
    grouped = [id(p) for params in groups.values() for p in params]
    assert groups and len(grouped) == len(set(grouped)) and set(grouped) <= {id(p) for p in model.parameters()}
    assert_logits(model, splits)


@pytest.mark.parametrize("option", options("model/fusion"))
def test_fusion_builds_in_every_model_that_takes_one(compose_cfg, compose_on_data, option):
    takes_fusion = []
    for model in options("model"):
        compose_cfg(f"model={model}")
        if choice("model/fusion") is not None:
            takes_fusion.append(model)
    assert takes_fusion, "no model selects a model/fusion option"
    for model_option in takes_fusion:
        cfg = compose_on_data(f"model={model_option}", f"model/fusion={option}")
        assert choice("model/fusion") == option
        splits = build_splits(cfg)
        model = build_model(cfg, splits)
        assert isinstance(model.fusion, get_class(cfg.model.fusion._target_))
        assert model.fusion_head.in_features == model.fusion.out_dim
        assert_logits(model, splits)


# ---------------------------------------------------------------- losses, integrators


@pytest.mark.parametrize("option", options("loss"))
def test_loss_gives_one_objective_per_head_and_reaches_the_encoders_as_configured(compose_on_data, option):
    cfg = compose_on_data(f"loss={option}")
    splits = build_splits(cfg)
    model = build_model(cfg, splits)
    loss = build(cfg.loss, trusted(cfg))
    assert isinstance(loss, get_class(cfg.loss._target_))
    detach = bool(cfg.loss.get("detach_unimodal", False))
    _, labels = batch(splits)
    losses = loss(assert_logits(model, splits, detach_unimodal=detach), labels)
    assert list(losses) == loss.objective_names(model.modalities)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses[m] for m in model.modalities).backward()  # the unimodal losses alone
    trunk = [p for params in model.parameter_groups().values() for p in params]
    reached = any(p.grad is not None and p.grad.abs().sum() > 0 for p in trunk)
    assert reached is not detach  # one-joint: unimodal losses train only their heads


@pytest.mark.parametrize("option", options("integrator"))
def test_integrator_builds_with_the_configured_parameters(compose_cfg, option):
    cfg = compose_cfg(f"integrator={option}")
    integrator = get_integrator(**cfg.integrator)
    assert isinstance(integrator, Integrator) and integrator.name == cfg.integrator.name == option
    params = OmegaConf.to_container(cfg.integrator, resolve=True)
    del params["name"]
    hparams = integrator.hparams()
    reported = {k: v for k, v in params.items() if k in hparams}
    assert reported == {k: hparams[k] for k in reported}  # the configured values reached it
    assert get_integrator(option, **hparams).hparams() == hparams  # hparams() rebuilds it


@pytest.mark.parametrize("option", options("method"))
def test_method_builds_with_the_configured_parameters_and_prepares_the_default_model(compose_on_data, option):
    from framework.methods import Method, get_method

    cfg = compose_on_data(f"method={option}")
    params = OmegaConf.to_container(cfg.method, resolve=True)
    method = get_method(**params)
    assert isinstance(method, Method) and method.name == cfg.method.name
    assert {k: v for k, v in params.items() if k != "name"} == method.hparams()  # the configured values reached it
    method.check_config(bool(cfg.loss.detach_unimodal), get_integrator(**cfg.integrator))
    splits = build_splits(cfg)
    model = method.prepare(build_model(cfg, splits))
    logits = method.predict(assert_logits(model, splits))
    assert set(logits) == set(model.heads)


# ---------------------------------------------------------------- optimizers, schedulers


@pytest.mark.parametrize("option", options("optimizer"))
def test_optimizer_builds_on_the_model_parameters_with_the_configured_settings(compose_on_data, option):
    cfg = compose_on_data(f"optimizer={option}")
    splits = build_splits(cfg)
    model = build_model(cfg, splits)
    optimizer = build(cfg.optimizer, trusted(cfg))(params=model.parameters())
    assert isinstance(optimizer, get_class(cfg.optimizer._target_))
    (group,) = optimizer.param_groups
    assert len(group["params"]) == len(list(model.parameters()))
    for key, value in cfg.optimizer.items():
        if not str(key).startswith("_"):
            assert group[key] == value, key
    before = [p.detach().clone() for p in model.parameters()]
    _, labels = batch(splits)
    sum(build(cfg.loss, trusted(cfg))(assert_logits(model, splits), labels).values()).backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=False))


@pytest.mark.parametrize("option", options("scheduler"))
def test_scheduler_builds_on_an_optimizer_and_keeps_the_rate_in_range(compose_cfg, option):
    cfg = compose_cfg(f"scheduler={option}")
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = build(cfg.optimizer, trusted(cfg))(params=[weight])
    scheduler = build(cfg.scheduler, trusted(cfg))(optimizer=optimizer)
    assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
    assert isinstance(scheduler, get_class(cfg.scheduler._target_)) and scheduler.optimizer is optimizer
    base = cfg.optimizer.lr
    rates = [scheduler.get_last_lr()[0]]
    for _ in range(cfg.trainer.epochs):
        optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    assert all(math.isfinite(r) and 0.0 <= r <= base * (1 + 1e-9) for r in rates)
    assert optimizer.param_groups[0]["lr"] == rates[-1]


# ---------------------------------------------------------------- experiment presets


@pytest.mark.parametrize("option", options("experiment"))
def test_experiment_preset_builds_every_component_as_main_does(compose_on_data, option):
    cfg = compose_on_data(f"experiment={option}")
    assert choice("experiment") == option and cfg.name == cfg.tracking.experiment
    splits = build_splits(cfg)
    model = build_model(cfg, splits)
    optimizer = build(cfg.optimizer, trusted(cfg))(params=model.parameters())
    assert optimizer.param_groups[0]["lr"] == cfg.optimizer.lr
    scheduler = build(cfg.scheduler, trusted(cfg))(optimizer=optimizer) if cfg.scheduler else None
    assert scheduler is None or scheduler.optimizer is optimizer
    integrator = get_integrator(**cfg.integrator)
    assert integrator.name == cfg.integrator.name
    loss = build(cfg.loss, trusted(cfg))
    _, labels = batch(splits)
    detach = bool(cfg.loss.get("detach_unimodal", False))
    losses = loss(assert_logits(model, splits, detach_unimodal=detach), labels)
    assert set(losses) == set(model.heads) and all(torch.isfinite(v) for v in losses.values())
    assert cfg.trainer.epochs >= 1 and cfg.trainer.batch_size >= 1


# ---------------------------------------------------------------- searches, launchers


@pytest.mark.parametrize("option", options("hparams_search"))
def test_hparams_search_builds_its_sweeper_over_keys_of_the_config(compose_with_hydra, option):
    cfg = compose_with_hydra(f"hparams_search={option}")
    assert choice("hparams_search") == option
    hydra = cfg.hydra
    sweeper = instantiate(hydra.sweeper, _recursive_=False, _execution_whitelist_=["hydra_plugins.*"])
    assert type(sweeper).__name__ == "OptunaSweeper" and isinstance(sweeper.sweeper.sampler, BaseSampler)
    assert cfg.objective.startswith("best/")  # what the task returns: a best-epoch metric
    distributions, fixed, _ = create_params_from_overrides([f"{k}={v}" for k, v in hydra.sweeper.params.items()])
    assert distributions and not fixed
    for key, distribution in distributions.items():
        value = OmegaConf.select(cfg, key, default=KeyError)
        assert value is not KeyError, f"{option}: searches {key}, which the config does not have"
        if isinstance(distribution, (FloatDistribution, IntDistribution)):
            assert distribution.low <= value <= distribution.high, f"{key}: the default {value} is outside the space"
        elif isinstance(distribution, CategoricalDistribution):
            assert value in distribution.choices
    assert cfg.tracking.tags.study == hydra.sweeper.study_name  # each trial's run names its study


@pytest.mark.parametrize("option", options("hydra/launcher"))
def test_launcher_config_builds_its_launcher(compose_with_hydra, option):
    config = compose_with_hydra(f"hydra/launcher={option}").hydra.launcher
    assert choice("hydra/launcher") == option
    launcher = instantiate(config, _execution_whitelist_=["hydra_plugins.*"])
    assert isinstance(launcher, Launcher) and isinstance(launcher, get_class(config._target_))
