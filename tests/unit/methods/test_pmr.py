"""PMR: the prototype loss from hand-set prototypes, prototypes from data, and the step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from framework.methods import get_method
from framework.methods.pmr import pmr_coefficients, prototype_logits

from . import _helpers as H


def test_prototype_logits_are_negative_distances():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    c = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    assert_close(prototype_logits(x, c), -torch.tensor([[0.0, 3.0], [5.0, 4.0]]))


def test_weaker_modality_gets_alpha():
    assert pmr_coefficients({"a": 10.0, "b": 4.0}, 0.6) == {"a": 0.0, "b": 0.6}
    assert pmr_coefficients({"a": 3.0, "b": 4.0}, 0.6) == {"a": 0.6, "b": 0.0}
    assert pmr_coefficients({"a": 4.0, "b": 4.0}, 0.6) == {"a": 0.0, "b": 0.0}


def test_loss_from_hand_set_prototypes_and_the_modulated_step():
    model, splits = H.make_model()
    plain_model = H.twin(model)
    inputs, labels = H.batch(splits)
    method = get_method("pmr", alpha=0.5)
    trainer = H.make_trainer(method, model, splits, detach=True)
    torch.manual_seed(3)
    method.prototypes = {m: torch.randn(splits.spec.num_classes, 8) for m in ("a", "b")}
    # the independent computation on the twin: distances by an explicit loop, as the code's EU_dist
    f = plain_model.encode(inputs)
    sims, scores = {}, {}
    for m in ("a", "b"):
        d = torch.stack(
            [torch.stack([torch.sqrt(torch.dot(x - c, x - c)) for c in method.prototypes[m]]) for x in f[m]]
        )
        sims[m] = -d
        scores[m] = float(F.softmax(-d.detach(), dim=1)[torch.arange(32), labels].sum())
    weak = "a" if scores["a"] < scores["b"] else "b"
    logits = plain_model.classify(f, detach_unimodal=True)
    total = F.cross_entropy(logits["multimodal"], labels) + 0.5 * F.cross_entropy(sims[weak], labels)
    grads = torch.autograd.grad(total, list(plain_model.parameters()), allow_unused=True)
    expected = dict(zip([n for n, _ in plain_model.named_parameters()], grads, strict=True))
    (got,) = H.step_gradients(trainer, inputs, labels)
    for m in ("a", "b"):
        for name in H.encoder_names(model, m):
            assert_close(got[name], expected[name])
    decisions = method.decisions()
    assert decisions[f"grad/method/loss_weight/prototype_{weak}"] == 0.5
    assert decisions["grad/method/ratio/a"] == pytest.approx(scores["a"] / scores["b"], rel=1e-5)


def test_prototypes_are_class_means_then_smoothed():
    model, splits = H.make_model()
    method = get_method("pmr", proto_fraction=1.0, momentum_coef=0.25)
    trainer = H.make_trainer(method, model, splits, detach=True)
    method.on_epoch_start(trainer.epoch_view())
    model.eval()
    with torch.no_grad():
        inputs, labels = splits.train.batch(torch.arange(len(splits.train)))
        f = model.encode(inputs)
    for m in ("a", "b"):
        for k in range(splits.spec.num_classes):
            assert_close(method.prototypes[m][k], f[m][labels == k].mean(0), rtol=1e-5, atol=1e-6)
    old = {m: p.clone() for m, p in method.prototypes.items()}
    trainer.state.epoch = 2
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    fresh = method.compute_prototypes(trainer.epoch_view())
    method.on_epoch_start(trainer.epoch_view())
    for m in ("a", "b"):
        assert_close(method.prototypes[m], 0.75 * fresh[m] + 0.25 * old[m])  # all batches: the order does not matter
