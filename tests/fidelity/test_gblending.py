"""G-Blending: the framework's ``method=gblending`` against the training step of the cited code.

Reference: GeWu-Lab/BalanceBenchmark@4c1482fca5aaa8d4278af8e26020daa039e3ccf3

* ``balancemm/trainer/GBlending_trainer.py:292-303`` (``training_step``): ``model(batch)``, then
  ``loss = sum_k weights[k] * CE(unimodal_result[k], label)`` over ``output`` and every modality,
  ``loss.backward()``; ``:257-269`` ``optimizer.step()``, ``optimizer.zero_grad()``.
* ``balancemm/models/avclassify_model.py:256-301`` (``BaseClassifierModel.forward`` and
  ``unimodality_calculate``): ``output = fc_out(cat(features))`` (``ConcatFusion_N``,
  ``balancemm/models/fusion_arch.py:33-40``), and for concat fusion each modality's result
  ``x_m W[:, cols_m]^T + b / M`` (``avclassify_model.py:287-294``).

The weights are the method's state (``GBlending_trainer.py:95``: ``super_epoch_origin`` once per
super-epoch); both sides get the same fixed weights, as after an estimate. The encoders are the
framework's MLPs; the optimizer the config's SGD. The control trains the framework with
``method.heads=separate`` (its own linear unimodal heads), which must differ.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

STEPS = 6
TOLERANCE = 1e-10
LR = 0.05
WEIGHTS = {"output": 0.5, "strong": 0.2, "weak": 0.3}


# ---- transcription (imports nothing from framework) -------------------------------------------


class BaseClassifierModel(nn.Module):
    """``avclassify_model.py:187-301`` with concat fusion and the framework's encoders."""

    def __init__(self, encoders: nn.ModuleDict, fc_out: nn.Linear) -> None:
        super().__init__()
        self.modality_encoder, self.fc_out = encoders, fc_out
        self.unimodal_result: dict[str, torch.Tensor] = {}

    def forward(self, batch):
        encoder_result = {m: self.modality_encoder[m](batch[m]) for m in self.modality_encoder}
        output = self.fc_out(torch.cat(list(encoder_result.values()), dim=1))
        all_nums = len(encoder_result)
        self.unimodal_result = {"output": output}
        now_size = 0
        for modality, feature in encoder_result.items():
            size = feature.shape[1]
            weight = self.fc_out.weight[:, now_size : now_size + size]
            self.unimodal_result[modality] = (
                torch.mm(feature, torch.transpose(weight, 0, 1)) + self.fc_out.bias / all_nums
            )
            now_size += size
        return self.unimodal_result


def training_step(model, batch, label, weights, optimizer):
    model(batch)
    loss = 0
    for modality in model.unimodal_result:
        loss += weights[modality] * F.cross_entropy(model.unimodal_result[modality], label)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


# ---- the comparison ---------------------------------------------------------------------------

PREFIXES = {"encoders.": "modality_encoder.", "fusion_head.": "fc_out."}


def framework_run(framework_trainer, harness, heads: str, batches=None):
    trainer, cfg = framework_trainer("method=gblending", f"method.heads={heads}", f"optimizer.lr={LR}")
    trainer.method.weights = {"multimodal": WEIGHTS["output"], "strong": WEIGHTS["strong"], "weak": WEIGHTS["weak"]}
    batches = batches or harness.draw_batches(trainer, STEPS)
    reference = BaseClassifierModel(
        copy.deepcopy(trainer.model.encoders), harness.fresh_linear(trainer.model.fusion_head)
    )
    return trainer, cfg, reference, batches


def test_gblending_matches_the_cited_step(framework_trainer, harness):
    trainer, cfg, reference, batches = framework_run(framework_trainer, harness, "fusion")
    assert list(trainer.model.modalities) == ["strong", "weak"]
    assert not any(n.startswith("unimodal_heads.") for n, _ in trainer.model.named_parameters())
    assert harness.max_param_diff(trainer.model, reference, PREFIXES) == 0.0
    initial = harness.snapshot(reference)
    optimizer = harness.sgd_like(cfg, reference.parameters())
    history = []
    for inputs, labels in batches:
        training_step(reference, inputs, labels, WEIGHTS, optimizer)
        history.append(harness.snapshot(reference))
    params, _ = harness.framework_steps(trainer, batches)
    diffs = [harness.max_param_diff(p, h, PREFIXES) for p, h in zip(params, history, strict=True)]
    assert max(diffs) < TOLERANCE, f"per-step max |framework - cited| = {diffs}"
    moved = harness.max_param_diff(reference, initial)
    assert moved > 1e-3, f"the parameters barely moved: {moved}"

    control, _, control_reference, _ = framework_run(framework_trainer, harness, "separate", batches)
    assert harness.max_param_diff(control_reference, initial) == 0.0  # the same initial weights
    control_params, _ = harness.framework_steps(control, batches)
    control_diff = harness.max_param_diff(control_params[-1], history[-1], PREFIXES)
    assert control_diff > 1e6 * TOLERANCE, f"separate unimodal heads changed nothing: {control_diff}"
    print(
        f"gblending: steps {STEPS}, moved {moved:.2e}, max diff {max(diffs):.2e}, control (separate) {control_diff:.2e}"
    )
