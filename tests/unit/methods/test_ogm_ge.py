"""OGM-GE: the coefficient from known logits, and the modulated step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from framework.methods import MethodError, get_method
from framework.methods.base import modality_logits
from framework.methods.ogm_ge import ogm_coefficients

from . import _helpers as H


def test_coefficients_from_known_scores_follow_the_code():
    # score_v / score_a = 2 > 1: the visual (dominant) modality is damped
    got = ogm_coefficients({"a": 10.0, "v": 20.0}, alpha=0.5)
    assert got == {"a": 1.0, "v": pytest.approx(1 - math.tanh(0.5 * 2.0))}
    got = ogm_coefficients({"a": 30.0, "v": 10.0}, alpha=0.5)
    assert got == {"a": pytest.approx(1 - math.tanh(0.5 * 3.0)), "v": 1.0}


def test_modality_logits_are_the_weight_blocks_plus_half_the_bias():
    model, splits = H.make_model()
    inputs, _ = H.batch(splits)
    features = model.encode(inputs)
    W, b = model.fusion_head.weight, model.fusion_head.bias
    shares = modality_logits(model, features)
    assert_close(shares["a"], features["a"] @ W[:, :8].T + b / 2)
    assert_close(shares["b"], features["b"] @ W[:, 8:].T + b / 2)


def test_coefficient_from_known_logits():
    model, splits = H.make_model()
    inputs, labels = H.batch(splits)
    method = get_method("ogm_ge", alpha=0.7, scope="all", ge=False)
    trainer = H.make_trainer(method, model, splits, detach=True)
    features = model.encode(inputs)
    W, b = model.fusion_head.weight, model.fusion_head.bias
    with torch.no_grad():
        score = {m: F.softmax(f @ W[:, s].T + b / 2, dim=1)[torch.arange(32), labels].sum().item()
                 for m, f, s in (("a", features["a"], slice(0, 8)), ("b", features["b"], slice(8, 16)))}  # fmt: skip
    H.step_gradients(trainer, inputs, labels)
    ratio = score["b"] / score["a"]
    expected = {"a": 1.0, "b": 1 - math.tanh(0.7 * ratio)} if ratio > 1 else {"a": 1 - math.tanh(0.7 / ratio), "b": 1.0}
    assert method.coefficients == pytest.approx(expected)
    assert method.decisions()["grad/encoder.a/coeff"] == pytest.approx(expected["a"])


def test_the_step_scales_each_encoder_gradient_by_its_coefficient():
    model, splits = H.make_model()
    plain_model = H.twin(model)
    inputs, labels = H.batch(splits)
    method = get_method("ogm_ge", alpha=0.7, scope="all", ge=False)
    (got,) = H.step_gradients(H.make_trainer(method, model, splits, detach=True), inputs, labels)
    (plain,) = H.step_gradients(H.make_trainer(None, plain_model, splits, detach=True), inputs, labels)
    assert min(method.coefficients.values()) < 1
    for m in ("a", "b"):
        for name in H.encoder_names(model, m):
            assert_close(got[name], plain[name] * method.coefficients[m])
    assert_close(got["fusion_head.weight"], plain["fusion_head.weight"])  # heads are not modulated


def test_generalisation_enhancement_adds_noise_of_the_gradient_spread():
    model, splits = H.make_model()
    plain_model = H.twin(model)
    inputs, labels = H.batch(splits)
    method = get_method("ogm_ge", alpha=0.7, scope="all", ge=True)
    torch.manual_seed(1)
    (got,) = H.step_gradients(H.make_trainer(method, model, splits, detach=True), inputs, labels)
    (plain,) = H.step_gradients(H.make_trainer(None, plain_model, splits, detach=True), inputs, labels)
    name = max(H.encoder_names(model, "a"), key=lambda n: got[n].numel())
    noise = got[name] - plain[name] * method.coefficients["a"]
    assert 0.6 < float(noise.std() / plain[name].std()) < 1.4


def test_outside_the_window_nothing_is_modulated():
    model, splits = H.make_model()
    plain_model = H.twin(model)
    inputs, labels = H.batch(splits)
    method = get_method("ogm_ge", scope="all", modulation_starts=3, modulation_ends=5)
    (got,) = H.step_gradients(H.make_trainer(method, model, splits, detach=True), inputs, labels)
    (plain,) = H.step_gradients(H.make_trainer(None, plain_model, splits, detach=True), inputs, labels)
    assert all(torch.equal(got[n], plain[n]) for n in plain)


def test_conv_scope_on_mlp_encoders_is_a_one_line_error():
    model, _ = H.make_model()
    with pytest.raises(MethodError, match=r"method\.scope=all") as error:
        get_method("ogm_ge").prepare(model)
    assert "\n" not in str(error.value)
