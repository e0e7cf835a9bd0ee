"""Covariance traces of per-sample gradients (torch.func) against a brute-force loop over samples."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from framework.data.synthetic import synthetic_splits
from framework.integrators import get_integrator
from framework.losses import MultitaskLoss
from framework.models.encoders import MLPEncoder, SmallCNN
from framework.models.fusion import ConcatFusion
from framework.models.late_fusion import LateFusionModel
from framework.data.base import DatasetSpec
from framework.training.gradients import GradientEngine
from framework.training.noise import covariance_trace_metrics, covariance_traces
from framework.training.plan import GradientPlan

MODALITIES = {"a": {"dim": 7, "signal": 1.0}, "b": {"dim": 5, "signal": 0.3}, "c": {"dim": 4, "signal": 0.6}}


def planned(model, inputs, labels, loss=None) -> GradientPlan:
    """The engine's plan for ``model`` (who reaches which group, the packs); no backward, no ``.grad``."""
    loss = loss or MultitaskLoss()
    engine = GradientEngine(model, get_integrator("sum"))
    features = model.encode(inputs)
    return engine.make_plan(features, loss(model.classify(features, detach_unimodal=loss.detach_unimodal), labels))


def brute_force(model, loss, inputs, labels, groups, reach, detach=False):
    """One forward and one backward per sample and loss, in eval mode, flattened per group, float64."""
    model.eval()
    out = {}
    n = labels.shape[0]
    for group, params in groups.items():
        for name in reach[group]:
            rows = []
            for i in range(n):
                x = {m: t[i : i + 1] for m, t in inputs.items()}
                value = loss(model(x, detach_unimodal=detach), labels[i : i + 1])[name]
                grads = torch.autograd.grad(value, params, allow_unused=True)
                rows.append(
                    torch.cat(
                        [
                            (g if g is not None else torch.zeros_like(p)).reshape(-1)
                            for g, p in zip(grads, params, strict=False)
                        ]
                    )
                )
            g = torch.stack(rows)
            out.setdefault(group, {})[name] = float((g - g.mean(0)).square().sum(1).mean())
    model.train()
    return out


@pytest.mark.parametrize("chunk", [None, 1, 3, 7])
@pytest.mark.parametrize("num_modalities", [2, 3])
def test_trace_matches_brute_force_loop_over_samples(chunk, num_modalities):
    torch.manual_seed(0)
    splits = synthetic_splits(dict(list(MODALITIES.items())[:num_modalities]), train_size=32, seed=1)
    model = LateFusionModel(splits.spec, partial(MLPEncoder, hidden=[12], dim=6), ConcatFusion).double()
    inputs, labels = splits.train.batch(torch.arange(13))
    inputs = {m: t.double() for m, t in inputs.items()}
    loss = MultitaskLoss()
    plan = planned(model, inputs, labels)
    got = covariance_traces(model, loss, inputs, labels, model.parameter_groups(), plan, chunk_size=chunk)
    expected = brute_force(model, loss, inputs, labels, model.parameter_groups(), plan.reach)
    assert got.keys() == expected.keys() == set(model.parameter_groups())
    for group in expected:
        assert got[group].keys() == expected[group].keys() == {"multimodal", group.split(".")[1]}
        for name, value in expected[group].items():
            assert value > 0
            assert got[group][name] == pytest.approx(value, rel=1e-10, abs=1e-14)


def test_batchnorm_model_uses_eval_mode_and_leaves_buffers_and_mode_alone():
    torch.manual_seed(0)
    spec = DatasetSpec({"x": (1, 8, 8), "y": (3, 8, 8)}, num_classes=3)
    model = LateFusionModel(spec, partial(SmallCNN, channels=[4], dim=5, pooled=2), ConcatFusion).double()
    inputs = {"x": torch.randn(6, 1, 8, 8, dtype=torch.float64), "y": torch.randn(6, 3, 8, 8, dtype=torch.float64)}
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    model.train()
    model(inputs)  # move the running statistics away from their initial values
    loss = MultitaskLoss()
    plan = planned(model, inputs, labels)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    got = covariance_traces(model, loss, inputs, labels, model.parameter_groups(), plan, chunk_size=4)
    assert model.training
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), k
    assert all(p.grad is None for p in model.parameters())
    expected = brute_force(model, loss, inputs, labels, model.parameter_groups(), plan.reach)
    for group in expected:
        for name, value in expected[group].items():
            assert got[group][name] == pytest.approx(value, rel=1e-9)


def test_one_joint_traces_only_the_multimodal_loss():
    torch.manual_seed(0)
    splits = synthetic_splits(dict(list(MODALITIES.items())[:2]), train_size=16, seed=1)
    model = LateFusionModel(splits.spec, partial(MLPEncoder, hidden=[8], dim=4), ConcatFusion).double()
    inputs, labels = splits.train.batch(torch.arange(9))
    inputs = {m: t.double() for m, t in inputs.items()}
    loss = MultitaskLoss(detach_unimodal=True)
    plan = planned(model, inputs, labels, loss)
    got = covariance_traces(
        model, loss, inputs, labels, model.parameter_groups(), plan, forward_kwargs={"detach_unimodal": True}
    )
    expected = brute_force(model, loss, inputs, labels, model.parameter_groups(), plan.reach, detach=True)
    assert {g: set(v) for g, v in got.items()} == {g: {"multimodal"} for g in model.parameter_groups()}
    for group in expected:
        assert got[group]["multimodal"] == pytest.approx(expected[group]["multimodal"], rel=1e-10)
    assert covariance_trace_metrics(got).keys() == {f"grad/{g}/cov_trace/multimodal" for g in model.parameter_groups()}


def test_identical_samples_have_zero_trace():
    torch.manual_seed(0)
    splits = synthetic_splits(dict(list(MODALITIES.items())[:2]), train_size=16, seed=1)
    model = LateFusionModel(splits.spec, partial(MLPEncoder, hidden=[8], dim=4), ConcatFusion).double()
    inputs, labels = splits.train.batch(torch.zeros(5, dtype=torch.long))
    inputs = {m: t.double() for m, t in inputs.items()}
    plan = planned(model, inputs, labels)
    got = covariance_traces(model, MultitaskLoss(), inputs, labels, model.parameter_groups(), plan, chunk_size=2)
    assert all(abs(v) < 1e-20 for by_loss in got.values() for v in by_loss.values())


def test_attention_model_matches_brute_force_without_fallback_warnings():
    """Per-sample gradients through nn.MultiheadAttention use a kernel vmap can batch: no
    per-sample fallback (which warns on every call), and the traces are still exact."""
    import warnings

    from framework.models.transformer import CrossModalTransformer

    torch.manual_seed(0)
    spec = DatasetSpec({"audio": (1, 8, 8), "visual": (2, 3, 8, 8)}, num_classes=4)
    model = CrossModalTransformer(spec, dim=8, depth=2, heads=2, patch_size=4).double()
    inputs = {m: torch.randn(6, *shape, dtype=torch.float64) for m, shape in spec.modalities.items()}
    labels = torch.randint(4, (6,))
    loss = MultitaskLoss()
    plan = planned(model, inputs, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = covariance_traces(model, loss, inputs, labels, model.parameter_groups(), plan)
    expected = brute_force(model, loss, inputs, labels, model.parameter_groups(), plan.reach)
    assert got.keys() == expected.keys() == set(model.parameter_groups())
    assert any(len(by_loss) == 3 for by_loss in expected.values())  # cross-attention: shared groups
    for group in expected:
        assert got[group].keys() == expected[group].keys()
        for name, value in expected[group].items():
            assert got[group][name] == pytest.approx(value, rel=1e-9, abs=1e-14)


def test_a_plan_group_without_parameters_is_an_error():
    torch.manual_seed(0)
    splits = synthetic_splits(dict(list(MODALITIES.items())[:2]), train_size=16, seed=1)
    model = LateFusionModel(splits.spec, partial(MLPEncoder, hidden=[8], dim=4), ConcatFusion).double()
    inputs, labels = splits.train.batch(torch.arange(4))
    inputs = {m: t.double() for m, t in inputs.items()}
    plan = planned(model, inputs, labels)
    groups = model.parameter_groups()
    del groups["encoder.a"]
    with pytest.raises(ValueError, match=r"encoder\.a"):
        covariance_traces(model, MultitaskLoss(), inputs, labels, groups, plan)
