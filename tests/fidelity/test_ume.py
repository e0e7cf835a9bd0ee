"""UME: the framework's ``method=ume`` against BalanceBenchmark's uni-modal trainer, one model per modality.

Reference: GeWu-Lab/BalanceBenchmark@4c1482fca5aaa8d4278af8e26020daa039e3ccf3

* ``balancemm/trainer/unimodal_trainer.py:28-101`` (``unimodalTrainer``): per batch
  ``optimizer.step(closure)`` with ``training_step`` = ``model(batch)``, ``CE(encoder_result
  ['output'], label)``, ``backward`` (l.66, l.90-101), then ``zero_grad`` (l.69).
* ``balancemm/models/avclassify_model.py:256-275`` and ``balancemm/models/fusion_arch.py:33-40``:
  a model configured with one encoder has ``output = fc_out(cat([feature]))``, i.e. the encoder
  and a linear head; ``balancemm/__main__.py:80-81, 129-130`` run the uni-modal trainer with the
  ``baseline`` settings, once per modality.

UME (Du et al., ICML 2023) trains each uni-modal model so, alone, and ensembles them at test
time. BalanceBenchmark has no ensemble step; the rule checked here, the mean of the uni-modal
logits, is the one the framework documents (``framework/methods/ume.py``), checked on the test
split through the real trainer's ``evaluate``. Optimizer: the config's SGD on both sides
(BalanceBenchmark's default optimizer is another choice, not part of the method).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

STEPS = 6
TOLERANCE = 1e-10


# ---- transcription (imports nothing from framework) -------------------------------------------


class UnimodalClassifier(nn.Module):
    """A one-encoder ``BaseClassifierModel`` with ``ConcatFusion_N``: the encoder, then ``fc_out``."""

    def __init__(self, encoder, fc_out) -> None:
        super().__init__()
        self.encoder = encoder
        self.fusion_module = nn.Module()
        self.fusion_module.fc_out = fc_out

    def forward(self, x):
        return self.fusion_module.fc_out(torch.cat([self.encoder(x)], dim=1))


def training_step(model, batch, label):
    """``unimodal_trainer.py:90-101``."""
    criterion = nn.CrossEntropyLoss()
    out = model(batch)
    loss = criterion(out, label)
    loss.backward()
    return loss


def train_batch(model, optimizer, batch, label):
    """``unimodal_trainer.py:66-69``: the closure runs the step inside ``optimizer.step``."""
    optimizer.step(lambda: training_step(model, batch, label))
    optimizer.zero_grad()


def train_jointly_with_fusion(models, fusion, optimizer, inputs, label):
    """The control: the uni-modal losses plus the fusion head's, one step (UME drops the latter)."""
    criterion = nn.CrossEntropyLoss()
    features = [m.encoder(x) for m, x in zip(models, inputs, strict=True)]
    loss = sum(criterion(m.fusion_module.fc_out(f), label) for m, f in zip(models, features, strict=True))
    loss = loss + criterion(fusion(torch.cat(features, dim=1)), label)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


# ---- the comparison ---------------------------------------------------------------------------


def test_ume_matches_separately_trained_unimodal_models(framework_trainer, harness):
    trainer, cfg = framework_trainer("method=ume", "optimizer.lr=0.05", "trainer.statistics.log_every=1")
    model = trainer.model
    modalities = model.modalities
    fusion_before = harness.snapshot(model.fusion_head)
    models = {
        m: UnimodalClassifier(copy.deepcopy(model.encoders[m]), harness.fresh_linear(model.unimodal_heads[m]))
        for m in modalities
    }
    controls = [
        UnimodalClassifier(copy.deepcopy(model.encoders[m]), harness.fresh_linear(model.unimodal_heads[m]))
        for m in modalities
    ]
    control_fusion = harness.fresh_linear(model.fusion_head)
    optimizers = {m: harness.sgd_like(cfg, models[m].parameters()) for m in modalities}
    control_optimizer = harness.sgd_like(cfg, [p for c in [*controls, control_fusion] for p in c.parameters()])
    batches = harness.draw_batches(trainer, STEPS)
    history = []
    for inputs, labels in batches:
        for m in modalities:
            train_batch(models[m], optimizers[m], inputs[m], labels)
        train_jointly_with_fusion(controls, control_fusion, control_optimizer, [inputs[m] for m in modalities], labels)
        history.append({f"{m}.{n}": p for m in modalities for n, p in harness.snapshot(models[m]).items()})
    params, _ = harness.framework_steps(trainer, batches)
    mapping = {}
    for m in modalities:
        mapping[f"encoders.{m}."] = f"{m}.encoder."
        mapping[f"unimodal_heads.{m}."] = f"{m}.fusion_module.fc_out."
    diffs = [harness.max_param_diff(p, h, mapping) for p, h in zip(params, history, strict=True)]
    assert max(diffs) < TOLERANCE, f"per-step max |framework - BalanceBenchmark| = {diffs}"
    assert harness.max_param_diff(model.fusion_head, fusion_before) == 0.0  # its loss is dropped
    control = {f"{m}.{n}": p for m, c in zip(modalities, controls, strict=True) for n, p in harness.snapshot(c).items()}
    control_diff = harness.max_param_diff(params[-1], control, mapping)
    assert control_diff > 1e3 * TOLERANCE, f"keeping the fusion loss changed nothing: {control_diff}"

    test = trainer.splits.test
    inputs, labels = test.batch(torch.arange(len(test)))
    with torch.no_grad():
        ensemble = sum(models[m](inputs[m]) for m in modalities) / len(modalities)
        unimodal = {m: models[m](inputs[m]) for m in modalities}
    accuracy = trainer.evaluate(test)
    assert accuracy["multimodal"] == float((ensemble.argmax(1) == labels).double().mean())
    for m in modalities:
        assert accuracy[m] == float((unimodal[m].argmax(1) == labels).double().mean())
