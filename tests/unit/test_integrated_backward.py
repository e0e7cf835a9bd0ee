"""``framework.backward`` / ``IntegratedBackward`` against independent per-loss ``autograd.grad`` plus
the integrator's matrix API (``integrator(G, segments)``), step by step, with 2 and 3 modalities, a
step with a modality missing, with and without features, fp16 loss scaling, and integrator state."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy

import framework
from framework.integrators import get_integrator

SIZES = {"audio": 5, "visual": 7, "text": 3}


class Net(nn.Module):
    """An own model: no ``parameter_groups()``; encoders, a fusion head, one head per modality."""

    def __init__(self, modalities: tuple[str, ...]) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(SIZES[m], 6), nn.Tanh()) for m in modalities})
        self.fusion = nn.Linear(6, 3)
        self.heads = nn.ModuleDict({m: nn.Linear(6, 3) for m in modalities})

    def forward(self, inputs: dict[str, Tensor], y: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        features = {m: self.encoders[m](x) for m, x in inputs.items()}
        losses = {"multimodal": cross_entropy(self.fusion(sum(features.values())), y)}
        losses.update({m: cross_entropy(self.heads[m](f), y) for m, f in features.items()})
        return features, losses


def batch(modalities: tuple[str, ...], step: int) -> tuple[dict[str, Tensor], Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return {m: torch.randn(8, SIZES[m], generator=g) for m in modalities}, torch.randint(0, 3, (8,), generator=g)


def expected_grads(net: Net, inputs: dict[str, Tensor], y: Tensor, integrator) -> dict[int, Tensor]:
    """Independent: each loss's gradient by ``autograd.grad``, each encoder's update from the
    integrator's matrix API, the plain summed gradient elsewhere."""
    _, losses = net(inputs, y)
    params = [p for p in net.parameters()]
    per_loss = {n: torch.autograd.grad(v, params, retain_graph=True, allow_unused=True) for n, v in losses.items()}
    out = {}
    in_encoder = set()
    for m in inputs:
        enc = list(net.encoders[m].parameters())
        in_encoder |= {id(p) for p in enc}
        position = {id(p): i for i, p in enumerate(params)}
        index = [position[id(p)] for p in enc]
        reaching = [n for n in losses if all(per_loss[n][i] is not None for i in index)]
        matrix = torch.stack([torch.cat([per_loss[n][i].reshape(-1) for i in index]) for n in reaching])
        update = integrator(matrix, [p.numel() for p in enc]).update
        for p, chunk in zip(enc, update.split([p.numel() for p in enc]), strict=True):
            out[id(p)] = chunk.view_as(p)
    for i, p in enumerate(params):
        if id(p) not in in_encoder:
            grads = [per_loss[n][i] for n in losses if per_loss[n][i] is not None]
            if grads:
                out[id(p)] = sum(grads)
    return out


@pytest.mark.parametrize("with_features", [False, True])
@pytest.mark.parametrize("modalities", [("audio", "visual"), ("audio", "visual", "text")])
@pytest.mark.parametrize("name", ["mmpareto", "mgda", "pcgrad", "sum"])
def test_grad_equals_per_loss_autograd_plus_the_integrator_step_by_step(name, modalities, with_features):
    torch.manual_seed(0)
    net = Net(modalities)
    engine = framework.IntegratedBackward(dict(net.encoders.items()), name)
    reference = get_integrator(name)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    steps = [modalities, modalities[1:], modalities]  # step 1: the first modality is missing
    for step, present in enumerate(steps):
        inputs, y = batch(present, step)
        if name == "pcgrad":  # its loss order is random: the same draws on both sides
            torch.manual_seed(step)
        expected = expected_grads(net, inputs, y, reference)
        optimizer.zero_grad(set_to_none=True)
        features, losses = net(inputs, y)
        if name == "pcgrad":
            torch.manual_seed(step)
        decisions = engine(losses, features if with_features else None)
        assert set(decisions) == {f"{m}" for m in present}
        for group, decision in decisions.items():
            assert decision.losses == ("multimodal", group)
        reached = [p for p in net.parameters() if p.grad is not None]
        assert {id(p) for p in reached} == set(expected)
        for p in reached:
            torch.testing.assert_close(p.grad, expected[id(p)], rtol=1e-5, atol=1e-7)
        optimizer.step()
    absent = net.encoders[modalities[0]]
    assert all(p.grad is not None for p in absent.parameters())  # the last step trained it again


def test_the_control_differs_from_sum():
    """mmpareto's .grad is not the plain sum on a step with a conflict (the test can fail)."""
    torch.manual_seed(3)
    net = Net(("audio", "visual"))
    inputs, y = batch(("audio", "visual"), 0)
    _, losses = net(inputs, y)
    framework.backward(losses, dict(net.encoders.items()), "sum")
    summed = [p.grad.clone() for p in net.encoders.parameters()]
    net.zero_grad(set_to_none=True)
    _features, losses = net(inputs, y)
    framework.backward(losses, dict(net.encoders.items()), "mgda")
    assert any(not torch.allclose(a, p.grad) for a, p in zip(summed, net.encoders.parameters(), strict=True))


def test_grad_accumulates_like_tensor_backward():
    torch.manual_seed(1)
    net = Net(("audio", "visual"))
    inputs, y = batch(("audio", "visual"), 0)
    engine = framework.IntegratedBackward({m: list(e.parameters()) for m, e in net.encoders.items()}, "mmpareto")
    engine(net(inputs, y)[1])
    once = [p.grad.clone() for p in net.parameters()]
    engine(net(inputs, y)[1])
    for a, p in zip(once, net.parameters(), strict=True):
        torch.testing.assert_close(p.grad, 2 * a)


def test_fp16_scaler_writes_scaled_updates_and_skips_an_overflow():
    torch.manual_seed(2)
    net = Net(("audio", "visual"))
    groups = dict(net.encoders.items())
    inputs, y = batch(("audio", "visual"), 0)
    framework.backward(net(inputs, y)[1], groups, "mmpareto")
    plain = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    engine = framework.IntegratedBackward(groups, "mmpareto", scaler=scaler)
    decisions = engine(net(inputs, y)[1])
    assert set(decisions) == {"audio", "visual"}
    scaler.unscale_(optimizer)
    for a, p in zip(plain, net.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a, rtol=1e-5, atol=1e-7)
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 2.0**10
    before = [p.detach().clone() for p in net.parameters()]
    optimizer.zero_grad(set_to_none=True)
    _, losses = net(inputs, y)
    losses["audio"] = losses["audio"] * float("inf")  # an overflow in one per-loss gradient
    decisions = engine(losses)
    assert "audio" not in decisions  # not integrated
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 2.0**9  # backed off
    for a, p in zip(before, net.parameters(), strict=True):
        assert torch.equal(a, p)  # the step was skipped


def test_stateful_integrator_state_round_trips():
    torch.manual_seed(4)
    net = Net(("audio", "visual"))
    engine = framework.IntegratedBackward(dict(net.encoders.items()), "gradvac")
    for step in range(2):
        engine(net(*batch(("audio", "visual"), step))[1])
    state = engine.state_dict()
    copy = framework.IntegratedBackward(dict(net.encoders.items()), "gradvac")
    copy.load_state_dict(state)
    grads = []
    for e in (engine, copy):
        net.zero_grad(set_to_none=True)
        e(net(*batch(("audio", "visual"), 5))[1])
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    fresh = framework.IntegratedBackward(dict(net.encoders.items()), "gradvac")
    net.zero_grad(set_to_none=True)
    fresh(net(*batch(("audio", "visual"), 5))[1])
    assert any(not torch.allclose(a, p.grad) for a, p in zip(grads[0], net.parameters(), strict=True))


def test_summary_counts_conflicts_and_metrics_are_flat():
    torch.manual_seed(5)
    net = Net(("audio", "visual"))
    engine = framework.IntegratedBackward(dict(net.encoders.items()), "mmpareto")
    decisions = engine(net(*batch(("audio", "visual"), 0))[1])
    metrics = engine.metrics(decisions)
    assert any(k.startswith("grad/audio/cos/") for k in metrics)
    summary = engine.summary()
    assert set(summary) >= {"grad/audio/conflict_rate", "grad/visual/conflict_rate"}
    assert engine.summary() == {}


@pytest.mark.parametrize(
    ("groups", "losses", "message"),
    [
        ({"a": []}, {"x": None}, "no parameter that requires grad"),
        ({"a": [1.0]}, {"x": None}, "must be a module or a list of parameters"),
    ],
)
def test_bad_input_is_one_line(groups, losses, message):
    with pytest.raises((ValueError, TypeError), match=message):
        framework.backward(losses, groups, "sum")


def test_a_parameter_in_two_groups_and_a_non_scalar_loss_are_refused():
    layer = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="in groups 'a' and 'b'"):
        framework.IntegratedBackward({"a": layer, "b": [layer.weight]})
    with pytest.raises(ValueError, match=r"losses\['x'\] has shape \(2,\)"):
        framework.backward({"x": layer(torch.ones(2))}, {"a": layer})
