"""MMCosine: the head's logits against the formula, and the step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from framework.methods import MethodError, get_method
from framework.methods.mmcosine import CosineFusionHead

from . import _helpers as H


def test_logits_are_the_scaled_sum_of_per_modality_cosines():
    model, splits = H.make_model()
    inputs, _ = H.batch(splits)
    W = model.fusion_head.weight.detach().clone()
    method = get_method("mmcosine", scaling=7.0)
    model = method.prepare(model)
    assert isinstance(model.fusion_head, CosineFusionHead)
    f = model.encode(inputs)
    expected = 0
    for m, s in (("a", slice(0, 8)), ("b", slice(8, 16))):
        cos = torch.stack(
            [torch.stack([torch.dot(x, w) / (x.norm().clamp_min(1e-12) * w.norm()) for w in W[:, s]]) for x in f[m]]
        )  # F.normalize: eps 1e-12
        expected = expected + 7.0 * cos
    assert_close(model(inputs)["multimodal"], expected, rtol=1e-5, atol=1e-5)


def test_the_step_is_the_gradient_of_the_cosine_logits_loss():
    model, splits = H.make_model()
    inputs, labels = H.batch(splits)
    method = get_method("mmcosine")
    trainer = H.make_trainer(method, model, splits, detach=True)
    twin = H.twin(trainer.model)
    f = twin.encode(inputs)
    W = twin.fusion_head.weight  # each modality's block, each class row normalised on its own
    logits = 10.0 * (
        F.normalize(f["a"], dim=1) @ F.normalize(W[:, :8], dim=1).T
        + F.normalize(f["b"], dim=1) @ F.normalize(W[:, 8:], dim=1).T
    )
    names = [n for n, _ in twin.named_parameters()]
    grads = torch.autograd.grad(F.cross_entropy(logits, labels), list(twin.parameters()), allow_unused=True)
    expected = {n: g for n, g in zip(names, grads, strict=True) if g is not None}
    (got,) = H.step_gradients(trainer, inputs, labels)
    for name in expected:
        if name.startswith(("encoders.", "fusion_head.")):
            assert_close(got[name], expected[name])


def test_other_fusions_are_a_one_line_error():
    from functools import partial

    from framework.models.encoders import MLPEncoder
    from framework.models.fusion import SumFusion
    from framework.models.late_fusion import LateFusionModel

    _, splits = H.make_model()
    model = LateFusionModel(splits.spec, partial(MLPEncoder, hidden=[16], dim=8), SumFusion)
    with pytest.raises(MethodError, match="model/fusion=concat"):
        get_method("mmcosine").prepare(model)
