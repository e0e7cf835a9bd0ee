"""The shared registry (framework/registry.py): order, double registration, one-line errors."""

from __future__ import annotations

import pytest

from framework.registry import Registry, parameters_of


class _Error(ValueError):
    pass


def test_registration_keeps_order_and_sets_names():
    registry: Registry[type] = Registry("widget")

    @registry.register("b", set_name=True)
    class B:
        pass

    @registry.register("a", "a2")
    class A:
        pass

    assert list(registry) == ["b", "a", "a2"] and registry["a2"] is A and len(registry) == 3
    assert B.name == "b" and not hasattr(A, "name")
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        registry.add("a", B)


def test_unknown_name_and_parameter_are_one_line_errors_of_the_chosen_type():
    registry: Registry[type] = Registry("widget", error=_Error)
    registry.add("zeta", int)
    registry.add("alpha", float)
    with pytest.raises(_Error) as error:
        registry.lookup("nope")
    assert str(error.value) == "unknown widget 'nope'; valid choices: alpha, zeta"
    with pytest.raises(_Error, match=r"^widget.name='nope': bad; valid choices: alpha, zeta$"):
        registry.lookup("nope", what="widget.name='nope': bad")
    with pytest.raises(_Error) as error:
        registry.check_parameters("zeta", {"size": 1, "colour": 2, "ok": 3}, ["ok"])
    assert str(error.value) == "widget 'zeta' has no parameter 'colour', 'size'; valid parameters: ok"
    registry.check_parameters("zeta", {"ok": 3}, ["ok"])


def test_parameters_of_lists_keyword_parameters_in_order():
    class C:
        def __init__(self, x: int, *args: int, y: int = 0, **kw: int) -> None:
            pass

    assert parameters_of(C) == ["x", "y"]


def test_starting_a_run_does_not_import_torchjd_until_a_torchjd_method_is_built():
    import subprocess
    import sys

    code = (
        "import sys, framework.main\n"
        "from framework.integrators import get_integrator\n"
        "assert 'torchjd' not in sys.modules and 'cvxpy' not in sys.modules, 'imported at start-up'\n"
        "get_integrator('mmpareto')\n"
        "assert 'torchjd' not in sys.modules\n"
        "get_integrator('upgrad')\n"
        "assert 'torchjd' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
