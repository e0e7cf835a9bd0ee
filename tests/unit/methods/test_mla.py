"""MLA: entropy gates, the head's gradient projection, and the alternating step."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from framework.integrators import get_integrator
from framework.methods import MethodError, get_method
from framework.methods.mla import GradientProjector, entropy_gates

from . import _helpers as H

SAME_SIZE = {"a": {"dim": 8, "signal": 1.0}, "b": {"dim": 8, "signal": 0.3}}


def test_entropy_gates_from_known_logits():
    logits = {"a": torch.tensor([[2.0, 0.0, 0.0]]), "b": torch.tensor([[0.0, 0.0, 0.0]])}
    h = {m: float(-(F.softmax(x, 1) * F.log_softmax(x, 1)).sum()) for m, x in logits.items()}
    top = max(h.values())
    raw = {m: math.exp(top - e) for m, e in h.items()}
    got = entropy_gates(logits)
    for m in logits:
        assert float(got[m]) == pytest.approx(raw[m] / sum(raw.values()))


def test_projector_update_and_gradient_modification_by_hand():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(3, 4))
    weight.grad = torch.randn(3, 4)
    inputs = torch.randn(5, 4)
    projector = GradientProjector(4)
    first = weight.grad.clone()
    projector.before_update(weight, inputs, index=2, steps_per_epoch=10)  # the very first update: untouched
    assert torch.equal(weight.grad, first) and projector.count == 1
    grad = weight.grad.clone()
    projector.before_update(weight, inputs, index=2, steps_per_epoch=10)
    a = 0.1 ** (2 / 10 + 1)
    r = inputs.mean(0, keepdim=True)
    P = torch.eye(4)
    k = P @ r.T
    P = P - (k @ k.T) / (a + r @ k)
    P = P / P.norm()
    assert_close(projector.P, P)
    assert_close(weight.grad, grad + grad @ P.T)


def test_one_step_is_one_update_per_modality_through_the_shared_head():
    model, splits = H.make_model(modalities=SAME_SIZE)
    inputs, labels = H.batch(splits)
    method = get_method("mla")
    trainer = H.make_trainer(method, model, splits)
    assert model.unimodal_heads["a"] is model.unimodal_heads["b"]
    twin = H.twin(trainer.model)
    steps = H.step_gradients(trainer, inputs, labels)
    assert len(steps) == 2
    # by hand: modality a's cross-entropy through the shared head, SGD; then b's, its head gradient projected
    head = twin.unimodal_heads["a"]
    params = dict(twin.named_parameters())
    loss_a = F.cross_entropy(head(twin.encoders["a"](inputs["a"])), labels)
    grads = dict(zip(params, torch.autograd.grad(loss_a, list(params.values()), allow_unused=True), strict=True))
    for name in ("unimodal_heads.a.weight", *H.encoder_names(twin, "a")):
        assert_close(steps[0][name], grads[name])
    assert not any(n.startswith("encoders.b.") for n in steps[0])
    with torch.no_grad():
        for n, p in params.items():
            if grads[n] is not None:
                p -= H.LR * grads[n]
    feature_b = twin.encoders["b"](inputs["b"])
    loss_b = F.cross_entropy(head(feature_b), labels)
    g = torch.autograd.grad(loss_b, head.weight)[0]
    a = 0.1 ** (0 / trainer_steps(splits) + 1)
    r = feature_b.detach().mean(0, keepdim=True)
    k = r.T
    P = torch.eye(8) - (k @ k.T) / (a + r @ k)
    P = P / P.norm()
    assert_close(steps[1]["unimodal_heads.a.weight"], g + g @ P.T, rtol=1e-4, atol=1e-6)
    assert "fusion_head.weight" not in steps[0] and "fusion_head.weight" not in steps[1]


def trainer_steps(splits) -> int:
    return -(-len(splits.train) // 32)


def test_prediction_is_the_entropy_gated_sum_and_state_survives_a_checkpoint():
    model, _splits = H.make_model(modalities=SAME_SIZE)
    method = get_method("mla")
    method.prepare(model)
    logits = {"multimodal": torch.zeros(2, 3), "a": torch.randn(2, 3), "b": torch.randn(2, 3)}
    gates = entropy_gates({"a": logits["a"], "b": logits["b"]})
    assert_close(method.predict(logits)["multimodal"], logits["a"] * gates["a"] + logits["b"] * gates["b"])
    method.projector.P, method.projector.count = torch.randn(8, 8), 5
    other = get_method("mla")
    other.prepare(H.make_model(modalities=SAME_SIZE)[0])
    other.load_state_dict(method.state_dict())
    assert torch.equal(other.projector.P, method.projector.P) and other.projector.count == 5


def test_different_feature_sizes_and_integrators_are_one_line_errors():
    from framework.models.encoders import MLPEncoder
    from framework.models.fusion import ConcatFusion
    from framework.models.late_fusion import LateFusionModel

    _, splits = H.make_model()
    encoder = partial(MLPEncoder, hidden=[16], dim=8)
    model = LateFusionModel(splits.spec, encoder, ConcatFusion, encoders={"b": partial(MLPEncoder, dim=4)})
    with pytest.raises(MethodError, match="feature sizes differ"):
        get_method("mla").prepare(model)
    with pytest.raises(MethodError, match="integrator=sum"):
        get_method("mla").check_config(False, get_integrator("mmpareto"))


@pytest.mark.parametrize(
    ("name", "params", "accepted"),
    [
        ("sum", {}, True),
        ("sum", {"scale": 1.5}, False),  # a scaled sum would be labelled as a control it is not
        ("mean", {}, False),
        ("mgda", {}, False),
        ("sum", {"magnitude": "restore_gamma"}, False),
    ],
)
def test_methods_without_a_shared_group_take_only_the_plain_sum(name: str, params: dict, accepted: bool):
    # MLA and UME reach no group with two losses: only integrator=sum (weights 1, no magnitude rule) names such a run
    for method in ("mla", "ume"):
        check = partial(get_method(method).check_config, False, get_integrator(name, **params))
        if accepted:
            check()
        else:
            with pytest.raises(MethodError, match="nothing to integrate") as error:
                check()
            assert "\n" not in str(error.value)


def test_each_sub_step_forwards_only_its_own_encoder():
    model, splits = H.make_model(modalities=SAME_SIZE)
    inputs, labels = H.batch(splits)
    trainer = H.make_trainer(get_method("mla"), model, splits)
    calls: list[str] = []
    for m, encoder in model.encoders.items():
        encoder.register_forward_hook(lambda *_, m=m: calls.append(m))
    steps = H.step_gradients(trainer, inputs, labels)
    assert len(steps) == 2 and calls == ["a", "b"]  # one forward of each encoder per step, in its own sub-step


def test_the_elementwise_denominator_is_the_codes_outer_product():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(3, 4))
    inputs = torch.rand(5, 4)
    projector = GradientProjector(4, denominator="elementwise")
    projector.count = 1
    weight.grad = torch.randn(3, 4)
    grad = weight.grad.clone()
    projector.before_update(weight, inputs, index=0, steps_per_epoch=4)
    r = inputs.mean(0, keepdim=True)
    k = r.T
    P = torch.eye(4) - (k @ k.T) / (0.1 + k @ r)  # a d x d denominator
    P = P / P.norm()
    assert_close(projector.P, P)
    assert_close(weight.grad, grad + grad @ P.T)
    with pytest.raises(MethodError, match=r"method.denominator='outer': valid values: scalar \| elementwise"):
        get_method("mla", denominator="outer")


def test_a_model_without_one_encoder_per_modality_is_a_one_line_error():
    model, _ = H.make_model(modalities=SAME_SIZE)
    del model.encoders
    with pytest.raises(MethodError, match="one encoder per modality") as error:
        get_method("mla").prepare(model)
    assert "\n" not in str(error.value)
