"""The README stays short and true, and the docs site's generated tables follow the registries."""

import importlib.util
import re
from pathlib import Path

import yaml

from framework.integrators import INTEGRATORS
from framework.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _hook():
    spec = importlib.util.spec_from_file_location("docs_hook_tables", ROOT / "docs" / "hooks" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    return []


def _rows(table: str) -> list[str]:
    """The first cell of each body row: the registered name."""
    return [m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE)]


def test_readme_is_at_most_150_lines():
    assert len(README.splitlines()) <= 150


def test_readme_commands_are_the_ones_ci_and_the_test_script_run():
    ci = (ROOT / ".ci" / "run").read_text()
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    # the set-up command and the main job
    assert "bash scripts/setup.sh" in ci and "bash scripts/setup.sh" in test_sh
    assert (ROOT / "framework" / "main.py").exists()
    assert "bash scripts/setup.sh && .venv/bin/python -m framework.main" in README
    # the test command: CI runs scripts/test.sh, which sets up, starts Slurm and runs pytest
    assert re.search(r"^bash scripts/test\.sh\b", ci, flags=re.MULTILINE)
    assert "slurm_up.sh" in test_sh and "-m pytest" in test_sh
    assert re.search(r"^bash scripts/test\.sh\s+#", README, flags=re.MULTILINE)


def test_integrator_table_lists_every_registered_integrator():
    table = _hook().integrators_table()
    assert _rows(table) == list(INTEGRATORS)


def test_method_table_lists_every_registered_method():
    table = _hook().methods_table()
    assert _rows(table) == list(METHODS)


def test_the_markers_are_on_the_pages_and_replaced():
    hook = _hook()
    for page, marker in [("integrators.md", "<!-- integrators-table -->"), ("methods.md", "<!-- methods-table -->")]:
        text = (ROOT / "docs" / page).read_text()
        assert marker in text
        assert marker not in hook.on_page_markdown(text)


def test_every_page_in_the_nav_exists():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.SafeLoader)
    pages = _nav_pages(config["nav"])
    assert "index.md" in pages and "benchmark.md" in pages
    missing = [page for page in pages if not (ROOT / config["docs_dir"] / page).is_file()]
    assert not missing, missing


def test_readme_links_to_docs_pages_that_exist():
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert links
    assert [link for link in links if not (ROOT / link).is_file()] == []
