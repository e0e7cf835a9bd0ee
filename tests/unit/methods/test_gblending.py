"""G-Blending: weights from known train and held-out losses, re-estimation, and the weighted step."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from framework.losses import MultitaskLoss
from framework.methods import get_method
from framework.methods.gblending import gblending_weights

from . import _helpers as H


def test_weights_from_known_losses():
    before = ({"multimodal": 1.0, "a": 1.2, "b": 2.0}, {"multimodal": 1.1, "a": 1.3, "b": 2.1})
    after = ({"multimodal": 0.2, "a": 0.6, "b": 1.8}, {"multimodal": 0.9, "a": 0.8, "b": 2.0})
    raw = {}
    for h in before[0]:
        g = after[1][h] - before[1][h]
        o = (after[1][h] - after[0][h]) - (before[1][h] - before[0][h])
        raw[h] = abs(g / o**2)
    total = sum(raw.values())
    got = gblending_weights(before, after)
    assert got == {h: pytest.approx(w / total) for h, w in raw.items()}
    assert sum(got.values()) == pytest.approx(1.0)


def test_weights_are_re_estimated_every_super_epoch_from_measured_losses(monkeypatch):
    from framework.methods import gblending as module

    model, splits = H.make_model()
    method = get_method("gblending", super_epoch=2)
    trainer = H.make_trainer(method, model, splits)
    measured = iter([{"multimodal": 1.0, "a": 1.0, "b": 1.0}, {"multimodal": 1.5, "a": 1.2, "b": 1.1},
                     {"multimodal": 0.5, "a": 0.8, "b": 0.9}, {"multimodal": 1.0, "a": 1.0, "b": 1.0}])  # fmt: skip
    monkeypatch.setattr(module, "mean_head_losses", lambda *a, **k: next(measured))
    for epoch in range(3):
        trainer.state.epoch = epoch
        method.on_epoch_start(trainer.epoch_view())  # epoch 0: first measurement; 1: none; 2: the estimate
    before = ({"multimodal": 1.0, "a": 1.0, "b": 1.0}, {"multimodal": 1.5, "a": 1.2, "b": 1.1})
    after = ({"multimodal": 0.5, "a": 0.8, "b": 0.9}, {"multimodal": 1.0, "a": 1.0, "b": 1.0})
    assert method.weights == pytest.approx(gblending_weights(before, after))


def test_the_step_weights_each_heads_loss():
    model, splits = H.make_model()
    twin = H.twin(model)
    inputs, labels = H.batch(splits)
    method = get_method("gblending", heads="separate")
    method.weights = {"multimodal": 0.5, "a": 0.3, "b": 0.2}
    (got,) = H.step_gradients(H.make_trainer(method, model, splits), inputs, labels)
    losses = MultitaskLoss()(twin(inputs), labels)
    total = sum(method.weights[h] * losses[h] for h in losses)
    names = [n for n, _ in twin.named_parameters()]
    expected = dict(zip(names, torch.autograd.grad(total, list(twin.parameters())), strict=True))
    for name in names:
        assert_close(got[name], expected[name])
    assert method.decisions()["grad/method/loss_weight/a"] == 0.3


def test_one_joint_loss_is_a_one_line_error():
    from framework.integrators import get_integrator
    from framework.methods import MethodError

    with pytest.raises(MethodError, match="loss=multitask"):
        get_method("gblending").check_config(True, get_integrator("sum"))


def test_each_modalitys_logits_are_its_slice_of_the_fusion_head():
    model, splits = H.make_model()
    twin = H.twin(model)
    inputs, labels = H.batch(splits)
    method = get_method("gblending")
    method.weights = {"multimodal": 0.5, "a": 0.3, "b": 0.2}
    (got,) = H.step_gradients(H.make_trainer(method, model, splits), inputs, labels)
    f = twin.encode(inputs)
    W, b = twin.fusion_head.weight, twin.fusion_head.bias
    logits = {  # BalanceBenchmark's unimodal results: x_m W_m^T + b / M
        "multimodal": twin.fusion_head(torch.cat([f["a"], f["b"]], 1)),
        "a": f["a"] @ W[:, :8].T + b / 2,
        "b": f["b"] @ W[:, 8:].T + b / 2,
    }
    total = sum(w * torch.nn.functional.cross_entropy(logits[h], labels) for h, w in method.weights.items())
    names = [n for n, _ in twin.named_parameters() if not n.startswith("unimodal_heads.")]
    params = dict(twin.named_parameters())
    expected = dict(zip(names, torch.autograd.grad(total, [params[n] for n in names]), strict=True))
    assert set(got) == set(expected)  # the model's own unimodal heads are gone
    for name in names:
        assert_close(got[name], expected[name])


def test_fusion_slices_need_concatenation_fusion_and_heads_are_checked():
    from functools import partial

    from framework.methods import MethodError
    from framework.models.encoders import MLPEncoder
    from framework.models.fusion import SumFusion
    from framework.models.late_fusion import LateFusionModel

    _, splits = H.make_model()
    model = LateFusionModel(splits.spec, partial(MLPEncoder, hidden=[16], dim=8), partial(SumFusion, dim=8))
    with pytest.raises(MethodError, match=r"fusion is SumFusion: use method\.heads=separate") as error:
        get_method("gblending").prepare(model)
    assert "\n" not in str(error.value)
    get_method("gblending", heads="separate").prepare(model)
    with pytest.raises(MethodError, match=r"method.heads=.shared.: valid values: fusion \| separate"):
        get_method("gblending", heads="shared")
