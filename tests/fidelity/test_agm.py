"""AGM: the framework's ``method=agm`` against the authors' training step.

Reference: lihong2303/AGM_ICCV2023@5a65542c70b1c7c15c5df291e77fa9cf2bbb9549

* ``run/AVMNIST_main.py:57-61`` the forward (``out_a, out_v, out = model(audio, image)``),
  ``:91-104`` the scores (mean ``-log softmax(out_u)[y]``, each term floored at ``-log 1e-8``),
  ``:106-117`` the ratios and coefficients, ``:119-120`` the running mean of the scores with
  ``iteration = (epoch - 1) * num_batch + step`` (``:38``), ``:122-129`` ``update_scale`` in the
  modulation window and ``loss.backward()``, ``:186-190`` the clip (every gradient to norm 1 when
  the head's weight gradient leaves [-1, 1]), ``:207`` the optimizer step.
* ``model/AVMNIST_net.py:8-18`` the Shapley responses ``m_a = (total - pad_audio + pad_visual) / 2``,
  ``m_v = (total - pad_visual + pad_audio) / 2``; ``:26-72`` ``GradMod``: the backward hooks that
  scale each response's gradient (``:43-52``), the fused output ``m_a + m_v``; ``:104-131``
  ``Later_Fusion_Resnet``: one head on the concatenated features.

One substitution, the framework's documented one (``framework/methods/agm.py``, AGM docstring):
the code pads a modality's *input* with zeros and re-runs the encoders (in eval mode,
``AVMNIST_net.py:62-64, 114-118``); here that modality's *features* are zeros. The encoders are the
framework's MLPs (no BatchNorm, no dropout: eval mode changes nothing). ``strong`` plays audio,
``weak`` plays visual. The optimizer is the config's SGD (momentum 0.9, weight decay 1e-4).

The framework trains with ``loss=one_joint``, so it also has unimodal probe heads (on detached
features), which the authors' model does not have; they never reach the compared parameters.
The control clips over those probes too, which must change the update when the clip fires.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

STEPS = 6
TOLERANCE = 1e-10
LR = 0.05
LOUD = 30.0  # every other batch's inputs are scaled by this, so the clip fires on those steps
PREFIXES = {"encoders.strong.": "audio_encoder.", "encoders.weak.": "visual_encoder.", "fusion_head.": "head."}


# ---- transcription (imports nothing from framework) -------------------------------------------


class LateFusion(nn.Module):
    """``Later_Fusion_Resnet`` (``AVMNIST_net.py:104-131``) with the framework's encoders; a padded
    modality's features are zeros (the substitution above). ``probes`` (the control only): a head
    per modality on detached features, as the framework's ``one_joint`` probes."""

    def __init__(self, audio_encoder, visual_encoder, head, probes=None) -> None:
        super().__init__()
        self.audio_encoder, self.visual_encoder, self.head = audio_encoder, visual_encoder, head
        self.probes = probes

    def forward(self, audio, visual, pad_audio=False, pad_visual=False):
        a = self.audio_encoder(audio)
        v = self.visual_encoder(visual)
        if pad_audio:
            a = torch.zeros_like(a)
        if pad_visual:
            v = torch.zeros_like(v)
        return self.head(torch.cat((a, v), dim=1)), a, v


class GradMod:
    """``AVMNIST_net.py:26-72``: responses, their gradients scaled by the current scales."""

    def __init__(self, net: LateFusion) -> None:
        self.net = net
        self.scale_a, self.scale_v = 1.0, 1.0

    def update_scale(self, coeff_a: float, coeff_v: float) -> None:
        self.scale_a, self.scale_v = coeff_a, coeff_v

    def __call__(self, audio, visual):
        total_out, a, v = self.net(audio, visual)
        self.net.eval()
        pad_visual_out, _, _ = self.net(audio, visual, pad_visual=True)
        pad_audio_out, _, _ = self.net(audio, visual, pad_audio=True)
        self.net.train()
        m_a = 0.5 * (total_out - pad_audio_out + pad_visual_out)
        m_v = 0.5 * (total_out - pad_visual_out + pad_audio_out)
        m_a.register_hook(lambda g: g * self.scale_a)  # the full backward hooks on the identity modules
        m_v.register_hook(lambda g: g * self.scale_v)
        return m_a, m_v, m_a + m_v, a, v


def score(out, label):
    """``AVMNIST_main.py:93-104``, one modality."""
    softmax = nn.Softmax(dim=1)
    total = 0.0
    for k in range(out.size(0)):
        p = softmax(out)[k][label[k]]
        if torch.isinf(p) or p < 1e-8:
            total += -torch.log(torch.tensor(1e-8, dtype=out.dtype))
        else:
            total += -torch.log(p)
    return total / out.size(0)


class Reference:
    """The state ``train`` carries across steps (``train_score_a/v``) and one step of it."""

    def __init__(self, model: GradMod, optimizer: torch.optim.Optimizer, alpha: float = 1.0) -> None:
        self.model, self.optimizer, self.alpha = model, optimizer, alpha
        self.train_score_a, self.train_score_v = 0.0, 0.0
        self.clipped: list[bool] = []

    def step(self, audio, image, label, epoch: int, step: int, num_batch: int) -> None:
        iteration = (epoch - 1) * num_batch + step
        self.optimizer.zero_grad()
        out_a, out_v, out, a, v = self.model(audio, image)
        loss = F.cross_entropy(out, label)
        score_audio, score_visual = score(out_a, label), score(out_v, label)
        mean_ratio = (score_visual.item() + score_audio.item()) / 2
        ratio_a = math.exp((mean_ratio - score_audio.item()) * 2)
        ratio_v = math.exp((mean_ratio - score_visual.item()) * 2)
        mean_optimal_ratio = (self.train_score_a + self.train_score_v) / 2
        optimal_ratio_a = math.exp((mean_optimal_ratio - self.train_score_a) * 2)
        optimal_ratio_v = math.exp((mean_optimal_ratio - self.train_score_v) * 2)
        coeff_a = math.exp(self.alpha * (optimal_ratio_a - ratio_a))
        coeff_v = math.exp(self.alpha * (optimal_ratio_v - ratio_v))
        self.train_score_a = self.train_score_a * iteration / (iteration + 1) + score_audio.item() / (iteration + 1)
        self.train_score_v = self.train_score_v * iteration / (iteration + 1) + score_visual.item() / (iteration + 1)
        self.model.update_scale(coeff_a, coeff_v)  # epoch 1 is in the window (modulation 1..20)
        net = self.model.net
        if net.probes is not None:  # the control: the framework's probes, trained on detached features
            loss = loss + sum(F.cross_entropy(net.probes[i](f.detach()), label) for i, f in enumerate((a, v)))
        loss.backward()
        grad = net.head.weight.grad
        fires = bool(torch.max(grad) > 1.0 or torch.min(grad) < -1.0)
        if fires:
            nn.utils.clip_grad_norm_(net.parameters(), max_norm=1.0)
        self.clipped.append(fires)
        self.optimizer.step()


# ---- the comparison ---------------------------------------------------------------------------


def test_agm_matches_the_authors_step(framework_trainer, harness):
    trainer, cfg = framework_trainer("method=agm", f"optimizer.lr={LR}")
    model = trainer.model
    assert cfg.loss.detach_unimodal and cfg.method.clip
    batches = [
        ({m: x * (LOUD if i % 2 else 1.0) for m, x in inputs.items()}, labels)
        for i, (inputs, labels) in enumerate(harness.draw_batches(trainer, STEPS))
    ]

    def reference_net(probes: bool) -> LateFusion:
        heads = None
        if probes:
            heads = nn.ModuleList([harness.fresh_linear(model.unimodal_heads[m]) for m in ("strong", "weak")])
        return LateFusion(
            copy.deepcopy(model.encoders["strong"]),
            copy.deepcopy(model.encoders["weak"]),
            harness.fresh_linear(model.fusion_head),
            heads,
        )

    nets = {"authors": reference_net(False), "control": reference_net(True)}
    assert harness.max_param_diff(model, nets["authors"], PREFIXES) == 0.0
    runs = {k: Reference(GradMod(net), harness.sgd_like(cfg, net.parameters())) for k, net in nets.items()}
    history: dict[str, list] = {k: [] for k in runs}
    for step, (inputs, labels) in enumerate(batches):
        for key, run in runs.items():
            run.step(inputs["strong"], inputs["weak"], labels, epoch=1, step=step, num_batch=STEPS)
            history[key].append(harness.snapshot(nets[key]))
    params, _ = harness.framework_steps(trainer, batches)

    def diffs(key: str) -> list[float]:  # the encoders and the fusion head (not the control's probes)
        kept = [{n: t for n, t in h.items() if not n.startswith("probes.")} for h in history[key]]
        return [harness.max_param_diff(p, h, PREFIXES) for p, h in zip(params, kept, strict=True)]

    clipped = runs["authors"].clipped
    assert any(clipped) and not all(clipped), f"the clip should fire on some steps only: {clipped}"
    assert max(diffs("authors")) < TOLERANCE, f"per-step max |framework - authors| = {diffs('authors')}"
    running = trainer.method.running
    assert abs(running["strong"] - runs["authors"].train_score_a) < TOLERANCE
    assert abs(running["weak"] - runs["authors"].train_score_v) < TOLERANCE
    control = diffs("control")
    assert runs["control"].clipped == clipped
    assert max(control) > 1e6 * TOLERANCE, f"clipping over the probes too changed nothing: {control}"
    print(f"agm: steps {STEPS}, clip fired {clipped}, max diff {max(diffs('authors')):.2e}, control {max(control):.2e}")
