"""GradNorm: targets, the weight update, and the weighted step."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from framework.losses import MultitaskLoss
from framework.methods import get_method
from framework.methods.base import MethodError, StepView
from framework.methods.gradnorm import gradnorm_targets

from . import _helpers as H


def test_targets_from_known_norms_and_loss_ratios():
    norms, weights = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.5, 1.5])
    losses, initial = torch.tensor([0.5, 1.0, 2.0]), torch.tensor([1.0, 1.0, 1.0])
    mean_g = (1.0 + 1.0 + 6.0) / 3
    r = torch.tensor([0.5, 1.0, 2.0]) / (3.5 / 3)
    assert_close(gradnorm_targets(norms, weights, losses, initial, alpha=1.5), mean_g * r**1.5)


def test_weights_move_by_the_gradient_of_l_grad_then_renormalise():
    model, splits = H.make_model()
    twin = H.twin(model)
    inputs, labels = H.batch(splits)
    method = get_method("gradnorm", alpha=1.5, lr=0.1)
    trainer = H.make_trainer(method, model, splits)
    (first,) = H.step_gradients(trainer, inputs, labels)
    # step 1: weights 1, so the gradient is the plain sum's; then Adam's first step moves each weight by
    # -lr * sign(dL_grad/dw_i) (Adam's first step has unit size), then sum renormalised to 3
    losses = MultitaskLoss()(twin(inputs), labels)
    names = [n for n, _ in twin.named_parameters()]
    plain = dict(zip(names, torch.autograd.grad(sum(losses.values()), list(twin.parameters())), strict=True))
    for n in names:
        assert_close(first[n], plain[n])
    f = twin.encode(inputs)
    losses = MultitaskLoss()(twin.classify(f), labels)
    norms = []
    for k in ("multimodal", "a", "b"):
        grads = torch.autograd.grad(losses[k], list(f.values()), retain_graph=True, allow_unused=True)
        norms.append(torch.sqrt(sum((g**2).sum() for g in grads if g is not None)))
    norms = torch.stack(norms)
    # at step 1, L/L0 = 1 for every loss: the targets are the mean norm; d|w g - t|/dw = g sign(w g - t)
    signs = torch.sign(norms - norms.mean())
    w = torch.ones(3) - 0.1 * signs
    w = w * 3 / w.sum()
    assert_close(method.weights.detach(), w, rtol=1e-4, atol=1e-5)
    # step 2 is weighted by them
    twin2 = H.twin(trainer.model)
    inputs2, labels2 = splits.train.batch(torch.arange(32, 64))
    current = method.weights.detach().clone()
    (second,) = H.step_gradients(trainer, inputs2, labels2)
    losses = MultitaskLoss()(twin2(inputs2), labels2)
    total = sum(current[i] * losses[k] for i, k in enumerate(("multimodal", "a", "b")))
    expected = dict(zip(names, torch.autograd.grad(total, list(twin2.parameters())), strict=True))
    for n in names:
        assert_close(second[n], expected[n], rtol=1e-4, atol=1e-6)
    assert method.decisions()["grad/method/loss_weight/a"] == pytest.approx(float(current[1]))


@pytest.mark.parametrize("cut", ["detached", "constant"])
def test_a_loss_that_does_not_reach_the_features_is_a_one_line_error_naming_it(cut):
    model, splits = H.make_model()
    inputs, labels = H.batch(splits)
    features = model.encode(inputs)
    logits = model.classify(features)
    losses = MultitaskLoss()(logits, labels)
    if cut == "detached":
        losses["b"] = MultitaskLoss()(model.classify({k: f.detach() for k, f in features.items()}), labels)["b"]
    else:
        losses["b"] = torch.tensor(0.7)
    view = StepView(model, features, logits, labels, epoch=0, step=0, index=0, steps_per_epoch=3)
    method = get_method("gradnorm")
    with pytest.raises(
        MethodError, match=r"loss 'b' does not reach the shared representation \(features \['a', 'b'\]\)"
    ):
        method.losses(view, losses)
