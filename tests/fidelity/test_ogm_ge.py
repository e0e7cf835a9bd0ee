"""OGM-GE: the framework's ``method=ogm_ge`` against the authors' training step.

Reference: GeWu-Lab/OGM-GE_CVPR2022@343dc1d95c9bda88f105c0da8d24f185e0e98b54

* ``main.py:57-153`` (``train_epoch``): one cross-entropy on the fusion output (l.95, l.98);
  ``out_a`` / ``out_v`` from the halves of ``fc_out.weight`` plus half the bias (l.88-93); the
  scores ``sum_i softmax(out_u)_i[y_i]`` (l.105-106); ``coeff = 1 - tanh(alpha * relu(ratio))``
  for the dominant modality (l.108-124); in epochs ``modulation_starts <= epoch <=
  modulation_ends`` every 4-D gradient of the audio / visual network becomes ``grad * coeff +
  N(0, std(grad) + 1e-8)`` (OGM_GE) or ``grad * coeff`` (OGM) (l.132-148); SGD, momentum 0.9,
  weight decay 1e-4 (l.246).
* ``models/basic_model.py:8-56`` and ``models/fusion_modules.py:16-24`` (``AVClassifier`` with
  ``ConcatFusion``: ``fc_out`` on the concatenated features).

The code selects the modulated tensors with ``len(parms.grad.size()) == 4`` (convolution weights):
the framework's ``method.scope=conv``. The MLP encoders of the fast cases have none, so there the
framework runs ``method.scope=all`` and the transcription takes every tensor of the two networks
(its one adaptation, passed in as ``modulated``); the CNN case on CG-MNIST keeps the code's test.
GE's noise is drawn from the global generator in both, in parameter order: both sides are seeded
identically before each step, so the draws are the same ones.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

STEPS = 6
TOLERANCE = 1e-10
MNIST = Path(__file__).resolve().parents[2] / "data" / "mnist" / "digits.npz"


# ---- transcription (imports nothing from framework) -------------------------------------------


class ConcatFusion(nn.Module):
    """``models/fusion_modules.py:16-24``."""

    def __init__(self, fc_out: nn.Linear) -> None:
        super().__init__()
        self.fc_out = fc_out

    def forward(self, x, y):
        return x, y, self.fc_out(torch.cat((x, y), dim=1))


class AVClassifier(nn.Module):
    """``models/basic_model.py:8-56`` with the framework's encoders in place of the ResNets."""

    def __init__(self, audio_net, visual_net, fc_out) -> None:
        super().__init__()
        self.audio_net, self.visual_net = audio_net, visual_net
        self.fusion_module = ConcatFusion(fc_out)

    def forward(self, audio, visual):
        return self.fusion_module(self.audio_net(audio), self.visual_net(visual))


def conv_only(parms):
    return len(parms.grad.size()) == 4  # main.py:136, :143


def reference_step(model, optimizer, spec, image, label, epoch, alpha, ge, modulated=conv_only, swap=False, log=None):
    """One iteration of ``main.py:train_epoch`` (l.70-153), concat fusion, modulation OGM_GE / OGM.

    ``swap`` (the control only) applies each modality's coefficient to the other one."""
    criterion = nn.CrossEntropyLoss()
    softmax = nn.Softmax(dim=1)
    relu = nn.ReLU(inplace=True)
    tanh = nn.Tanh()
    modulation_starts, modulation_ends = 0, 50
    optimizer.zero_grad()
    a, v, out = model(spec, image)
    fc_out = model.fusion_module.fc_out
    weight_size = fc_out.weight.size(1)
    out_v = torch.mm(v, torch.transpose(fc_out.weight[:, weight_size // 2 :], 0, 1)) + fc_out.bias / 2
    out_a = torch.mm(a, torch.transpose(fc_out.weight[:, : weight_size // 2], 0, 1)) + fc_out.bias / 2
    loss = criterion(out, label)
    loss.backward()
    score_v = sum([softmax(out_v)[i][label[i]] for i in range(out_v.size(0))])
    score_a = sum([softmax(out_a)[i][label[i]] for i in range(out_a.size(0))])
    ratio_v = score_v / score_a
    ratio_a = 1 / ratio_v
    if ratio_v > 1:
        coeff_v = 1 - tanh(alpha * relu(ratio_v))
        coeff_a = 1
    else:
        coeff_a = 1 - tanh(alpha * relu(ratio_a))
        coeff_v = 1
    if swap:
        coeff_a, coeff_v = coeff_v, coeff_a
    if log is not None:
        log.append(tuple(float(torch.as_tensor(c).detach()) for c in (coeff_a, coeff_v)))
    if modulation_starts <= epoch <= modulation_ends:
        for name, parms in model.named_parameters():
            layer = str(name).split(".")[0]  # main.py:134 takes [1]: DataParallel prefixes 'module.'
            for key, coeff in (("audio", coeff_a), ("visual", coeff_v)):
                if key in layer and modulated(parms):
                    if ge:
                        parms.grad = parms.grad * coeff + torch.zeros_like(parms.grad).normal_(
                            0, parms.grad.std().item() + 1e-8
                        )
                    else:
                        parms.grad *= coeff
    optimizer.step()


# ---- the comparison ---------------------------------------------------------------------------


def prefixes(model) -> dict[str, str]:
    audio, visual = model.modalities
    return {
        f"encoders.{audio}.": "audio_net.",
        f"encoders.{visual}.": "visual_net.",
        "fusion_head.": "fusion_module.fc_out.",
    }


def reference_of(model, harness):
    audio, visual = model.modalities
    reference = AVClassifier(
        copy.deepcopy(model.encoders[audio]),
        copy.deepcopy(model.encoders[visual]),
        harness.fresh_linear(model.fusion_head),
    )
    assert harness.max_param_diff(model, reference, prefixes(model)) == 0.0
    return reference


def compare(trainer, cfg, harness, alpha, ge, modulated, steps=STEPS, size=32):
    """Train both sides on the same batches (the same GE draws); return the per-step parameter
    differences, the coefficients ``(coeff_a, coeff_v)`` per step and the control's last difference."""
    model = trainer.model
    reference, control = reference_of(model, harness), reference_of(model, harness)
    batches = harness.draw_batches(trainer, steps, size)
    audio, visual = model.modalities
    log: list[tuple[float, float]] = []
    optimizer, control_optimizer = (
        harness.sgd_like(cfg, reference.parameters()),
        harness.sgd_like(cfg, control.parameters()),
    )
    history, controlled = [], []
    for step, (inputs, labels) in enumerate(batches):
        torch.manual_seed(100 + step)
        reference_step(reference, optimizer, inputs[audio], inputs[visual], labels, 0, alpha, ge, modulated, log=log)
        history.append(harness.snapshot(reference))
        torch.manual_seed(100 + step)
        reference_step(
            control, control_optimizer, inputs[audio], inputs[visual], labels, 0, alpha, ge, modulated, swap=True
        )
        controlled.append(harness.snapshot(control))
    params = []
    for step, batch in enumerate(batches):
        torch.manual_seed(100 + step)
        got, _ = harness.framework_steps(trainer, [batch])
        params += got
        assert trainer.method.coefficients == pytest.approx(dict(zip(model.modalities, log[step], strict=True)))
    map_ = prefixes(model)
    diffs = [harness.max_param_diff(p, h, map_) for p, h in zip(params, history, strict=True)]
    return diffs, log, harness.max_param_diff(params[-1], controlled[-1], map_)


@pytest.mark.parametrize("ge", [False, True], ids=["ogm", "ogm_ge"])
@pytest.mark.parametrize("dominant", ["audio", "visual"])
def test_ogm_ge_matches_the_authors_step_mlp(framework_trainer, harness, ge, dominant):
    """Synthetic data: ``strong`` plays audio; with ``visual`` the signals are swapped so that the
    visual modality dominates and its coefficient is the one below 1. The OGM cases run without
    step statistics (the trainer's one-backward path), the OGM-GE ones with them."""
    signals = ("1.5", "0.2") if dominant == "audio" else ("0.2", "1.5")
    trainer, cfg = framework_trainer(
        "method=ogm_ge", "method.alpha=0.8", "method.scope=all", f"method.ge={str(ge).lower()}",
        f"trainer.statistics.log_every={int(ge)}",  # OGM: the one-backward path; OGM-GE: per-loss gradients
        "optimizer.lr=0.05", f"dataset.modalities.strong.signal={signals[0]}",
        f"dataset.modalities.weak.signal={signals[1]}",
    )  # fmt: skip
    diffs, log, control = compare(trainer, cfg, harness, 0.8, ge, modulated=lambda parms: True)
    assert max(diffs) < TOLERANCE, f"per-step max |framework - authors| = {diffs}; coefficients {log}"
    damped = 0 if dominant == "audio" else 1
    assert sum(c[damped] < 1 for c in log) >= STEPS - 1, log
    assert control > 1e3 * TOLERANCE, f"the coefficient on the wrong modality changed nothing: {control}"


@pytest.mark.skipif(
    not MNIST.is_file(), reason="CG-MNIST needs data/mnist/digits.npz (python -m framework.data.prepare)"
)
def test_ogm_ge_matches_the_authors_step_conv_only(framework_trainer, harness):
    """CG-MNIST with the small CNN: only the 4-D convolution weights are modulated, as in the code
    (``method.scope=conv``); BatchNorm and linear layers keep their gradient."""
    trainer, cfg = framework_trainer(
        "method=ogm_ge", "method.alpha=0.8", "method.scope=conv", "dataset=cgmnist", "model=cnn",
        "dataset.train_size=256", "dataset.val_size=32", "dataset.test_size=32", "optimizer.lr=0.05",
    )  # fmt: skip
    diffs, log, control = compare(trainer, cfg, harness, 0.8, True, conv_only, steps=5, size=16)
    assert max(diffs) < TOLERANCE, f"per-step max |framework - authors| = {diffs}; coefficients {log}"
    assert control > 1e3 * TOLERANCE, f"the coefficient on the wrong modality changed nothing: {control}"
