"""The dataset writers of ``tests/fixtures/writers.py``, as the ``writers`` fixture.

Tests are imported with ``--import-mode=importlib``, so ``tests/`` is not importable as a package;
the module is loaded from its path, once per session (the same module object in every directory).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

WRITERS = Path(__file__).resolve().parents[1] / "fixtures" / "writers.py"


def load_writers() -> ModuleType:
    name = "mmgrad_tests_fixtures_writers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, WRITERS)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def writers() -> ModuleType:
    return load_writers()
