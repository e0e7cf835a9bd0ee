"""A training step is followed from ``framework/main.py`` to the update through at most 6 files.

``scripts/step_files.py`` traces one real step (``sys.setprofile``) and records, for every file of
``framework/`` it enters, the chain of callers' files by which it is reached. The longest chain to a
file on the way to the update (not the model's forward, the method's hooks or the statistics),
with main.py in front, is what a reader follows.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def step_files() -> ModuleType:
    spec = importlib.util.spec_from_file_location("step_files", ROOT / "scripts" / "step_files.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        (["method=mmpareto"], "integrators/mmpareto.py"),
        (["method=mgda"], "integrators/mgda.py"),
        (["method=pcgrad"], "integrators/pcgrad.py"),
        (["method=nash_mtl"], "integrators/_torchjd.py"),
        (["method=sum"], None),  # the summed path: one backward, no integration
    ],
)
def test_a_step_reaches_the_update_through_at_most_six_files(overrides: list[str], rule: str | None):
    trace = step_files()
    _, first, chains = trace.trace(overrides)
    deepest = trace.deepest_chain(first, chains)
    assert deepest[:2] == ("training/trainer.py", "training/gradients.py")
    assert len(deepest) + 1 <= 6, " > ".join(("main.py", *deepest))
    if rule is not None:
        assert chains[rule][:3] == ("training/trainer.py", "training/gradients.py", "integrators/base.py")
        assert rule in first


def test_the_chain_grows_with_a_file_between_caller_and_callee():
    """The measurement is not blind: a chain through one more file is one longer."""
    trace = step_files()
    first = {"training/trainer.py": "train_step", "a.py": "f", "b.py": "g"}
    chains = {"training/trainer.py": ("training/trainer.py",), "a.py": ("training/trainer.py", "a.py")}
    chains["b.py"] = (*chains["a.py"], "b.py")
    assert trace.deepest_chain(first, chains) == ("training/trainer.py", "a.py", "b.py")
