"""One training step through the Trainer with a torchjd adapter equals torchjd's own training step.

torchjd's reference step: ``mtl_backward`` on an encoder's features, with the losses that reach it
as tasks, then ``jac_to_grad`` on that encoder's parameters with torchjd's own aggregator. It runs
once per encoder, because the framework integrates each parameter group (encoder) separately; the
heads get their plain gradients in both. Both then take the same SGD step.
"""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch

from framework.data.synthetic import synthetic_splits
from framework.integrators import INTEGRATORS, get_integrator
from framework.losses import MultitaskLoss
from framework.models.base import MULTIMODAL
from framework.models.encoders import MLPEncoder
from framework.models.fusion import ConcatFusion
from framework.models.late_fusion import LateFusionModel
from framework.training.trainer import Trainer, TrainerSettings

MODALITIES = {"a": {"dim": 8, "signal": 1.0}, "b": {"dim": 6, "signal": 0.3}, "c": {"dim": 5, "signal": 0.6}}

# framework name -> (torchjd aggregator factory, relative tolerance on the parameters after one step)
CASES = {
    "upgrad": (lambda agg: agg.UPGrad(), 1e-5),
    "cagrad": (lambda agg: agg.CAGrad(c=0.5), 1e-4),
    "dualproj": (lambda agg: agg.DualProj(), 1e-5),
    "imtl_g": (lambda agg: agg.IMTLG(), 1e-5),
    "aligned_mtl": (lambda agg: agg.AlignedMTL(), 1e-5),
    "mean": (lambda agg: agg.Mean(), 1e-6),
}


def make(num_modalities: int):
    torch.manual_seed(0)
    splits = synthetic_splits(dict(list(MODALITIES.items())[:num_modalities]), train_size=64, seed=0)
    model = LateFusionModel(splits.spec, partial(MLPEncoder, hidden=[16], dim=8), ConcatFusion).double()
    inputs, labels = splits.train.batch(torch.arange(48))
    return splits, model, {m: x.double() for m, x in inputs.items()}, labels


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def torchjd_step(model, inputs, labels, aggregator):
    from torchjd.autojac import jac_to_grad, mtl_backward

    optimizer = sgd(model)
    features = model.encode(inputs)
    losses = MultitaskLoss()(model.classify(features), labels)
    heads = [p for n, p in model.named_parameters() if "head" in n or "fusion" in n]
    head_grads = torch.autograd.grad(torch.stack(list(losses.values())).sum(), heads, retain_graph=True)
    for m in model.modalities:
        params = list(model.encoders[m].parameters())
        mtl_backward(
            [losses[MULTIMODAL], losses[m]],
            features=[features[m]],
            shared_params=params,
            tasks_params=[[], []],
            retain_graph=True,
        )
        jac_to_grad(params, aggregator)
    for p, g in zip(heads, head_grads, strict=True):
        p.grad = g
    optimizer.step()


@pytest.mark.parametrize("num_modalities", [2, 3])
@pytest.mark.parametrize("name", sorted(CASES))
def test_trainer_step_equals_torchjd_mtl_backward(name: str, num_modalities: int):
    if name not in INTEGRATORS:
        pytest.skip(f"{name} is not an integrator here")
    import torchjd.aggregation as agg

    factory, rtol = CASES[name]
    splits, model, inputs, labels = make(num_modalities)
    reference = copy.deepcopy(model)
    torchjd_step(reference, inputs, labels, factory(agg))

    params = {"c": 0.5} if name == "cagrad" else {}
    trainer = Trainer(
        model,
        splits,
        MultitaskLoss(),
        get_integrator(name, **params),
        sgd(model),
        None,
        TrainerSettings(progress=False, statistics={"log_every": 1, "noise_every": 0}),
        torch.device("cpu"),
    )
    trainer.train_step(inputs, labels)
    for (n, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=rtol, atol=rtol * 1e-2, msg=n)
    initial = make(num_modalities)[1]
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), initial.parameters(), strict=True))
