"""AGM: responses, scores and coefficients from known logits, and the modulated step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from framework.methods import get_method
from framework.methods.agm import agm_coefficients, mono_modal_responses

from . import _helpers as H


def test_coefficients_from_known_scores():
    scores, running = {"a": 0.5, "v": 1.5}, {"a": 0.8, "v": 1.2}
    ratio_a, ratio_v = math.exp((1.0 - 0.5) * 2), math.exp((1.0 - 1.5) * 2)
    opt_a, opt_v = math.exp((1.0 - 0.8) * 2), math.exp((1.0 - 1.2) * 2)
    got = agm_coefficients(scores, running, alpha=2.0)
    assert got == {
        "a": pytest.approx(math.exp(2.0 * (opt_a - ratio_a))),
        "v": pytest.approx(math.exp(2.0 * (opt_v - ratio_v))),
    }


def test_two_modality_responses_are_the_codes_shapley_halves():
    model, splits = H.make_model()
    inputs, _ = H.batch(splits)
    f = model.encode(inputs)
    head = lambda a, b: model.fusion_head(torch.cat([a, b], 1))  # noqa: E731
    total, pad_b, pad_a = (
        head(f["a"], f["b"]),
        head(f["a"], torch.zeros_like(f["b"])),
        head(torch.zeros_like(f["a"]), f["b"]),
    )
    got = mono_modal_responses(model, f)
    assert_close(got["a"], 0.5 * (total - pad_a + pad_b))
    assert_close(got["b"], 0.5 * (total - pad_b + pad_a))
    assert_close(got["a"] + got["b"], total)


def test_the_step_scales_each_encoder_gradient_by_its_coefficient():
    model, splits = H.make_model()
    plain_model = H.twin(model)
    inputs, labels = H.batch(splits)
    method = get_method("agm", alpha=1.0, clip=False)
    with torch.no_grad():  # the independent computation: responses W_m x_m + b/2, scores, first-step coefficients
        f = model.encode(inputs)
        W, b = model.fusion_head.weight, model.fusion_head.bias
        resp = {"a": f["a"] @ W[:, :8].T + b / 2, "b": f["b"] @ W[:, 8:].T + b / 2}
        score = {m: float(F.cross_entropy(r, labels)) for m, r in resp.items()}
    mean = (score["a"] + score["b"]) / 2
    expected = {
        m: math.exp(1.0 * (1.0 - math.exp(2 * (mean - s)))) for m, s in score.items()
    }  # running scores start at 0
    (got,) = H.step_gradients(H.make_trainer(method, model, splits, detach=True), inputs, labels)
    (plain,) = H.step_gradients(H.make_trainer(None, plain_model, splits, detach=True), inputs, labels)
    assert method.scales == pytest.approx(expected, rel=1e-5)
    assert abs(expected["a"] - 1) > 1e-3
    for m in ("a", "b"):
        for name in H.encoder_names(model, m):
            assert_close(got[name], plain[name] * expected[m], rtol=1e-5, atol=1e-7)
    assert method.running == pytest.approx(score, rel=1e-5)  # the running mean after one step is the first score
    assert method.decisions()["grad/encoder.b/coeff"] == pytest.approx(expected["b"], rel=1e-5)


def test_running_scores_and_coefficients_survive_a_checkpoint():
    method = get_method("agm")
    method.running, method.iteration, method.scales = {"a": 0.3, "b": 0.9}, 7, {"a": 1.2, "b": 0.8}
    other = get_method("agm")
    other.load_state_dict(method.state_dict())
    assert (other.running, other.iteration, other.scales) == (method.running, method.iteration, method.scales)


def test_the_clip_covers_the_encoders_and_the_fusion_head_not_the_probes():
    model, splits = H.make_model()
    plain_model = H.twin(model)
    inputs, labels = H.batch(splits)
    inputs = {m: 30.0 * x for m, x in inputs.items()}  # large features: the fusion head's gradient leaves [-1, 1]
    (clipped,) = H.step_gradients(H.make_trainer(get_method("agm"), model, splits, detach=True), inputs, labels)
    (free,) = H.step_gradients(
        H.make_trainer(get_method("agm", clip=False), plain_model, splits, detach=True), inputs, labels
    )
    assert float(free["fusion_head.weight"].abs().max()) > 1.0
    probes = {n for n in free if n.startswith("unimodal_heads.")}
    assert probes and all(float(free[n].abs().max()) > 0 for n in probes)
    norm = torch.linalg.vector_norm(torch.stack([free[n].norm() for n in free if n not in probes]))
    assert norm > 1.0
    for name, grad in free.items():  # the authors' model has no probes: its norm is the rest's
        expected = grad if name in probes else grad * (1.0 / (float(norm) + 1e-6))
        assert_close(clipped[name], expected, rtol=1e-5, atol=1e-7)
