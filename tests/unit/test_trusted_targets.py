"""Trusted ``_target_``\\ s: ``extra_trusted_targets`` adds the user's packages to the defaults, a
``trusted_targets`` that drops ``framework.*`` is refused in one line, and a target that cannot be
imported says why (the exception under Hydra's, and PYTHONPATH for a module not found)."""

from __future__ import annotations

import os
import subprocess
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tests.cli import ROOT, main_env, run_main, runs_in

from framework.config import DEFAULT_TRUSTED_TARGETS, trusted_targets
from framework.config.schema import TrainSchema
from framework.config.validation import ConfigError, check_targets, import_failure

pytestmark = pytest.mark.slow  # runs the CLI in a subprocess (~15 s)

SMOKE = "experiment=smoke"

MYOPT = """
    import os
    from pathlib import Path

    import torch


    def sgd(params, lr, momentum=0.0, weight_decay=0.0):
        Path(os.environ["MYOPT_MARKER"]).write_text("used")
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
"""


def write_package(root: Path, name: str, source: str) -> Path:
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(source))
    return root


def test_the_defaults_are_one_list_that_the_schema_and_train_yaml_agree_with():
    train = OmegaConf.load(ROOT / "conf" / "train.yaml")
    assert list(train.trusted_targets) == list(DEFAULT_TRUSTED_TARGETS) == TrainSchema().trusted_targets
    assert list(train.extra_trusted_targets) == [] == TrainSchema().extra_trusted_targets


def test_extra_trusted_targets_add_to_the_defaults(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(write_package(tmp_path, "myopt_unit", MYOPT)))
    cfg = compose_cfg(SMOKE, "extra_trusted_targets=[myopt_unit.*]", "optimizer._target_=myopt_unit.sgd")
    assert trusted_targets(cfg) == [*DEFAULT_TRUSTED_TARGETS, "myopt_unit.*"]
    check_targets(cfg)  # the framework's own targets and the user's, all trusted and importable


def test_a_target_outside_the_trusted_patterns_names_the_key_to_add_its_package(compose_cfg):
    cfg = compose_cfg(SMOKE, "optimizer._target_=collections.OrderedDict")
    with pytest.raises(ConfigError) as raised:
        check_targets(cfg)
    message = str(raised.value)
    assert message.startswith("optimizer._target_='collections.OrderedDict': not trusted"), message
    assert "extra_trusted_targets=[collections.*]" in message and "\n" not in message


@pytest.mark.parametrize("value", ["[mydata.*]", "[torch.optim.*,torch.nn.*]", "[]"])
def test_trusted_targets_that_drop_framework_are_refused_naming_the_fix(compose_cfg, value):
    cfg = compose_cfg(SMOKE, f"trusted_targets={value}")
    with pytest.raises(ConfigError) as raised:
        check_targets(cfg)
    message = str(raised.value)
    assert message.startswith("trusted_targets=[") and "\n" not in message, message
    assert "drops framework.*" in message and "use extra_trusted_targets=[...] to add packages" in message
    if value == "[mydata.*]":
        assert message.endswith("(extra_trusted_targets=[mydata.*])"), message


def test_a_module_not_found_names_the_exception_and_pythonpath(compose_cfg):
    cfg = compose_cfg(SMOKE, "extra_trusted_targets=[nosuchpkg_xyz.*]", "optimizer._target_=nosuchpkg_xyz.sgd")
    with pytest.raises(ConfigError) as raised:
        check_targets(cfg)
    message = str(raised.value)
    assert message.startswith("optimizer._target_='nosuchpkg_xyz.sgd': cannot be imported: "), message
    assert "ModuleNotFoundError: No module named 'nosuchpkg_xyz'" in message and "PYTHONPATH" in message
    assert "Error loading" not in message and "\n" not in message


def test_an_unknown_attribute_of_an_existing_module_is_named():
    from hydra._internal.utils import _locate

    for target, expected in [
        ("framework.config.nosuch", "AttributeError: module 'framework.config' has no attribute 'nosuch'"),
        ("collections.NoSuch", "AttributeError: module 'collections' has no attribute 'NoSuch'"),
        ("framework.config.build.nosuch", "AttributeError: 'function' object has no attribute 'nosuch'"),
    ]:
        with pytest.raises(ImportError) as raised:
            _locate(target)
        message = import_failure(target, raised.value)
        assert message == expected, message


def test_a_module_that_fails_to_import_names_its_own_error(tmp_path, monkeypatch):
    """The error inside the user's module, not Hydra's guess that its attribute is missing."""
    from hydra._internal.utils import _locate

    root = write_package(tmp_path, "brokenpkg_unit", "")
    (root / "brokenpkg_unit" / "needs_dep.py").write_text("import nosuchdep_xyz\n")
    (root / "brokenpkg_unit" / "raises.py").write_text("raise RuntimeError('bad constant')\n")
    monkeypatch.syspath_prepend(str(root))
    for target, expected in [
        ("brokenpkg_unit.needs_dep.f", "ModuleNotFoundError: No module named 'nosuchdep_xyz'; is its folder on"),
        ("brokenpkg_unit.raises.f", "RuntimeError: bad constant"),
    ]:
        with pytest.raises(ImportError) as raised:
            _locate(target)
        message = import_failure(target, raised.value)
        assert message.startswith(expected), message


# the command line, as a user runs it: three processes at a time (process start dominates)
CLI = {
    "extra": ("extra_trusted_targets=[myopt_cli.*]", "optimizer._target_=myopt_cli.sgd"),
    "drops_framework": ("trusted_targets=[myopt_cli.*]", "optimizer._target_=myopt_cli.sgd"),
    "not_on_pythonpath": ("extra_trusted_targets=[nosuchpkg_xyz.*]", "optimizer._target_=nosuchpkg_xyz.sgd"),
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    package_root = write_package(tmp_path_factory.mktemp("project"), "myopt_cli", MYOPT)

    def run(case: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        tmp = tmp_path_factory.mktemp(case)
        path = os.pathsep.join(filter(None, [str(package_root), os.environ.get("PYTHONPATH")]))
        env = main_env(tmp, PYTHONPATH=path, MYOPT_MARKER=str(tmp / "marker"))
        return run_main(tmp, SMOKE, "trainer.epochs=1", *CLI[case], env=env), tmp

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(CLI, pool.map(run, CLI), strict=True))


def test_cli_extra_trusted_targets_builds_the_users_optimizer(cli):
    result, tmp = cli["extra"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp / "marker").read_text() == "used"
    (run,) = runs_in(tmp)
    assert run.info.status == "FINISHED"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("drops_framework", ["error: trusted_targets=['myopt_cli.*']: drops framework.*", "extra_trusted_targets="]),
        (
            "not_on_pythonpath",
            ["cannot be imported: ModuleNotFoundError: No module named 'nosuchpkg_xyz'", "PYTHONPATH"],
        ),
    ],
)
def test_cli_refuses_in_one_line_before_anything_runs(cli, case, expected):
    result, tmp = cli[case]
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(text in last for text in expected), last
    assert not (tmp / "marker").exists() and not (tmp / "mlflow.db").exists()
