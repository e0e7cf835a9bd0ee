"""Registry, construction errors, and the shared input validation of the base class."""

from __future__ import annotations

import pytest
import torch

from framework.integrators import INTEGRATORS, Integrator, get_integrator, register
from framework.integrators.mgda import MGDA
from framework.integrators.mmpareto import MMPareto
from framework.integrators.pcgrad import PCGrad
from framework.integrators.sum import Sum

NAMES = {"sum": Sum, "pcgrad": PCGrad, "mgda": MGDA, "mmpareto": MMPareto}


def test_registered_names():
    assert set(INTEGRATORS) == set(NAMES)
    for name, cls in NAMES.items():
        assert INTEGRATORS[name] is cls and cls.name == name


@pytest.mark.parametrize("name", sorted(NAMES))
def test_get_integrator_builds_fresh_instances(name: str):
    a, b = get_integrator(name), get_integrator(name)
    assert isinstance(a, NAMES[name]) and isinstance(a, Integrator)
    assert a is not b and a.last is None


def test_unknown_name_lists_valid_choices():
    with pytest.raises(ValueError) as info:
        get_integrator("nash_mtl")
    message = str(info.value)
    assert "nash_mtl" in message and "\n" not in message
    for name in NAMES:
        assert name in message


@pytest.mark.parametrize(("name", "params", "must_mention"), [
    ("mmpareto", {"gamma": 0.0}, ["gamma"]),
    ("mmpareto", {"gamma": -1.5}, ["gamma"]),
    ("mmpareto", {"rescale": "foo"}, ["rescale", "foo", "tensor", "group"]),
    ("sum", {"scale": 0.0}, ["scale"]),
    ("sum", {"scale": -2.0}, ["scale"]),
    ("mmpareto", {"gama": 1.5}, ["gama", "gamma", "rescale"]),
    ("sum", {"gamma": 1.5}, ["gamma", "scale"]),
    ("pcgrad", {"gamma": 1.5}, ["gamma", "seed"]),
    ("mgda", {"seed": 0}, ["seed", "(none)"]),
])
def test_invalid_params_raise_one_line_value_error(name: str, params: dict, must_mention: list[str]):
    with pytest.raises(ValueError) as info:
        get_integrator(name, **params)
    message = str(info.value)
    assert "\n" not in message
    for word in must_mention:
        assert word in message, (word, message)


@pytest.mark.parametrize(("name", "params"), [
    ("mmpareto", {"gamma": 2.0, "rescale": "group"}),
    ("sum", {"scale": 1.5}),
    ("pcgrad", {"seed": 3}),
    ("mgda", {}),
])
def test_valid_params_round_trip_through_hparams(name: str, params: dict):
    integrator = get_integrator(name, **params)
    assert integrator.hparams() == params
    assert get_integrator(name, **integrator.hparams()).hparams() == params


def test_register_twice_raises_and_custom_registration():
    with pytest.raises(ValueError, match="twice"):
        register("sum")(Sum)
    try:
        @register("test_only_mean")
        class Mean(Sum):
            pass

        assert isinstance(get_integrator("test_only_mean"), Mean) and Mean.name == "test_only_mean"
    finally:
        INTEGRATORS.pop("test_only_mean", None)
    assert set(INTEGRATORS) == set(NAMES)


@pytest.mark.parametrize("name", sorted(NAMES))
@pytest.mark.parametrize(("grads", "segments"), [
    (torch.zeros(5), None),  # not (k, d)
    (torch.zeros(0, 5), None),  # k = 0
    (torch.zeros(2, 3, 4), None),
    (torch.zeros(2, 5), [2, 2]),  # segments do not sum to d
    (torch.zeros(2, 5), [6, -1]),  # negative segment
])
def test_bad_shapes_raise_value_error(name: str, grads: torch.Tensor, segments):
    with pytest.raises(ValueError):
        get_integrator(name)(grads, segments=segments)


@pytest.mark.parametrize("name", sorted(NAMES))
def test_empty_tensor_lists_raise(name: str):
    with pytest.raises(ValueError):
        get_integrator(name).integrate_tensors([])
    with pytest.raises(ValueError):
        get_integrator(name).integrate_tensors([[], []])


@pytest.mark.parametrize("name", sorted(NAMES))
def test_empty_segment_is_allowed(name: str):
    g = torch.tensor([[1.0, 2.0, 0.5], [-2.0, 1.0, 0.1]], dtype=torch.float64)
    with_empty = get_integrator(name)(g, segments=[2, 0, 1])
    without = get_integrator(name)(g, segments=[2, 1])
    assert torch.isfinite(with_empty).all()
    torch.testing.assert_close(with_empty, without, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sum", "mgda", "mmpareto"])
def test_state_dict_of_stateless_integrators(name: str):
    integrator = get_integrator(name)
    assert integrator.state_dict() == {}
    integrator.load_state_dict({})
