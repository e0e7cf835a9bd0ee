"""The trainer's per-loss gradients against plain autograd on the whole model."""

from __future__ import annotations

import dataclasses

from functools import partial

import pytest
import torch

from framework.data.synthetic import synthetic_splits
from framework.integrators import INTEGRATORS, get_integrator
from framework.losses import MultitaskLoss
from framework.models.encoders import MLPEncoder
from framework.models.fusion import ConcatFusion
from framework.models.late_fusion import LateFusionModel
from framework.training.gradients import GradientEngine

MODALITIES = {"a": {"dim": 8, "signal": 1.0}, "b": {"dim": 6, "signal": 0.3}, "c": {"dim": 5, "signal": 0.6}}


def make(num_modalities: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    splits = synthetic_splits(dict(list(MODALITIES.items())[:num_modalities]), train_size=64, seed=seed)
    model = LateFusionModel(splits.spec, partial(MLPEncoder, hidden=[16], dim=8), ConcatFusion)
    inputs, labels = splits.train.batch(torch.arange(48))
    return model, inputs, labels


def brute_force(model, inputs, labels, name, detach=False, **params):
    """Per-loss gradients by separate full backward passes, flattened per group, integrated flat."""
    loss = MultitaskLoss(detach_unimodal=detach)
    losses = loss(model(inputs, detach_unimodal=detach), labels)
    expected = {}
    for group, params_ in model.parameter_groups().items():
        modality = group.split(".")[1]
        rows = []
        for loss_name in ("multimodal", modality):
            grads = torch.autograd.grad(losses[loss_name], params_, retain_graph=True, allow_unused=True)
            rows.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(grads, params_, strict=False)
                    ]
                )
            )
        if detach:
            expected[group] = rows[0]
        else:
            expected[group] = get_integrator(name, **params)(
                torch.stack(rows), segments=[p.numel() for p in params_]
            ).update
    heads = [p for n, p in model.named_parameters() if "head" in n]
    head_grads = torch.autograd.grad(torch.stack(list(losses.values())).sum(), heads)
    return expected, head_grads, losses


@pytest.mark.parametrize("name", sorted(INTEGRATORS))
@pytest.mark.parametrize("num_modalities", [2, 3])
def test_engine_matches_separate_backward_passes(name, num_modalities):
    model, inputs, labels = make(num_modalities)
    expected, head_grads, _ = brute_force(model, inputs, labels, name)
    engine = GradientEngine(model, get_integrator(name))
    features = model.encode(inputs)
    decisions = engine.backward(features, MultitaskLoss()(model.classify(features), labels), need_decisions=True)
    for group, params in model.parameter_groups().items():
        got = torch.cat([p.grad.reshape(-1) for p in params])
        torch.testing.assert_close(got, expected[group], rtol=1e-5, atol=1e-6)
    heads = [p for n, p in model.named_parameters() if "head" in n]
    for p, g in zip(heads, head_grads, strict=False):
        torch.testing.assert_close(p.grad, g)
    assert [s.group for s in decisions] == list(model.parameter_groups())
    assert engine.plan.packs == (("multimodal",), tuple(model.modalities))


def test_recorded_per_loss_gradients_really_differ():
    """Guards the known pitfall: recording after summing makes cosine 1 and norms equal."""
    model, inputs, labels = make()
    engine = GradientEngine(model, get_integrator("mmpareto"))
    features = model.encode(inputs)
    decisions = engine.backward(features, MultitaskLoss()(model.classify(features), labels))
    for d in decisions:
        assert d.losses == ("multimodal", d.group.split(".")[1])
        assert float(d.decision.cosine[0, 1]) < 0.99
        norms = d.decision.norms
        assert abs(float(norms[0] - norms[1])) > 1e-4 * float(norms.max())


@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_summed_fast_path_equals_per_loss_path(scale):
    model, inputs, labels = make()
    grads = []
    for need in (False, True):
        model.zero_grad(set_to_none=True)
        engine = GradientEngine(model, get_integrator("sum", scale=scale))
        features = model.encode(inputs)
        engine.backward(features, MultitaskLoss()(model.classify(features), labels), need_decisions=need)
        grads.append([p.grad.clone() for p in model.parameters()])
    for fast, slow in zip(*grads, strict=False):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-7)


def test_one_joint_trains_encoders_with_the_multimodal_loss_only():
    model, inputs, labels = make()
    expected, _head_grads, _ = brute_force(model, inputs, labels, "mmpareto", detach=True)
    engine = GradientEngine(model, get_integrator("mmpareto"))
    features = model.encode(inputs)
    loss = MultitaskLoss(detach_unimodal=True)
    decisions = engine.backward(features, loss(model.classify(features, detach_unimodal=True), labels))
    assert decisions == []
    assert engine.plan.reach == {g: ("multimodal",) for g in model.parameter_groups()}
    for group, params in model.parameter_groups().items():
        torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in params]), expected[group])
    for p in model.unimodal_heads.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(INTEGRATORS))
def test_separate_trunks_path_equals_whole_trunk_pack_path(name):
    """Late fusion takes the per-trunk path (each encoder's graph freed after its pull-backs);
    the whole-trunk pack path gives the same gradients and decisions."""
    results = []
    for separate in (True, False):
        model, inputs, labels = make(3)
        engine = GradientEngine(model, get_integrator(name))
        features = model.encode(inputs)
        losses = MultitaskLoss()(model.classify(features), labels)
        plan = engine.make_plan(features, losses)
        assert plan.feature_groups == {m: f"encoder.{m}" for m in model.modalities}
        engine.plan = plan if separate else dataclasses.replace(plan, feature_groups=None)
        decisions = engine.backward(features, losses, need_decisions=True)
        results.append(([p.grad.clone() for p in model.parameters()], decisions))
    (grads_a, decisions_a), (grads_b, decisions_b) = results
    for a, b in zip(grads_a, grads_b, strict=False):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert [s.group for s in decisions_a] == [s.group for s in decisions_b]
    for a, b in zip(decisions_a, decisions_b, strict=False):
        assert a.losses == b.losses
        torch.testing.assert_close(a.decision.gram, b.decision.gram, rtol=1e-5, atol=1e-9)


class SharedStem(torch.nn.Module):
    """Two modalities through one shared linear stem, then their own encoders: features share a group."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.stem = torch.nn.Linear(1, 1)

    def encode(self, inputs):
        scale = self.stem(torch.ones(1, 1)).squeeze()
        return {m: f * scale for m, f in self.inner.encode(inputs).items()}

    def classify(self, features, detach_unimodal=False):
        return self.inner.classify(features, detach_unimodal)

    def parameter_groups(self):
        groups = self.inner.parameter_groups()
        groups["stem"] = list(self.stem.parameters())
        return groups


def test_features_sharing_a_group_take_the_whole_trunk_path_and_match_separate_passes():
    model, inputs, labels = make(2)
    wrapped = SharedStem(model)
    engine = GradientEngine(wrapped, get_integrator("mmpareto"))
    features = wrapped.encode(inputs)
    losses = MultitaskLoss()(wrapped.classify(features), labels)
    decisions = engine.backward(features, losses, need_decisions=True)
    assert engine.plan.feature_groups is None
    assert engine.plan.reach["stem"] == ("multimodal", "a", "b")
    assert [s.group for s in decisions] == ["encoder.a", "encoder.b", "stem"]
    # the stem's per-loss gradients against separate full backward passes
    features = wrapped.encode(inputs)
    losses = MultitaskLoss()(wrapped.classify(features), labels)
    rows = [
        torch.cat(
            [g.reshape(-1) for g in torch.autograd.grad(losses[n], list(wrapped.stem.parameters()), retain_graph=True)]
        )
        for n in ("multimodal", "a", "b")
    ]
    expected = get_integrator("mmpareto")(torch.stack(rows), segments=[1, 1]).update
    got = torch.cat([p.grad.reshape(-1) for p in wrapped.stem.parameters()])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
