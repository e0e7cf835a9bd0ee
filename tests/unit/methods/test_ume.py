"""UME: each encoder trained alone; the multimodal prediction is the mean of the unimodal logits."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from framework.losses import MultitaskLoss
from framework.methods import get_method

from . import _helpers as H


def test_the_step_is_the_unimodal_losses_alone_and_prediction_averages():
    model, splits = H.make_model()
    twin = H.twin(model)
    inputs, labels = H.batch(splits)
    method = get_method("ume")
    (got,) = H.step_gradients(H.make_trainer(method, model, splits), inputs, labels)
    losses = MultitaskLoss()(twin(inputs), labels)
    names = [n for n, _ in twin.named_parameters()]
    grads = torch.autograd.grad(losses["a"] + losses["b"], list(twin.parameters()), allow_unused=True)
    for n, g in zip(names, grads, strict=True):
        if g is None:
            assert n not in got, n  # the fusion head gets no gradient
        else:
            assert_close(got[n], g)
    assert "fusion_head.weight" not in got
    logits = {"multimodal": torch.zeros(2, 3), "a": torch.randn(2, 3), "b": torch.randn(2, 3)}
    assert_close(method.predict(logits)["multimodal"], (logits["a"] + logits["b"]) / 2)
