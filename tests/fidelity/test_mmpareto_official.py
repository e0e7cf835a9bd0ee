"""MMPareto: the framework's ``method=mmpareto`` against the authors' official training step.

Reference: GeWu-Lab/MMPareto_ICML2024@a339db39cc25b157df376b50bb894917dc6c01d6

* ``code/MMPareto.py:57-209`` (``train_epoch``): per-loss gradients by ``backward(retain_graph)``
  (l.117-147), the cosine of the multimodal and unimodal gradient per encoder (l.149-150),
  weights ``0.5/0.5`` when the cosine is > 0, else ``MinNormSolver.find_min_norm_element`` over
  the per-tensor gradients *and* their concatenation (l.162-174: ``list(grads[t].values())``
  holds the ``"concat"`` entry too, which doubles every inner product and leaves the weight
  unchanged), then per tensor ``new = 2 k0 g_mm + 2 k1 g_m`` and ``gamma * max(1, |g_sum| / |new|)
  * new`` with ``gamma = 1.5`` (l.178-207); heads (``'head'`` in the name) keep the summed
  gradient; SGD, momentum 0.9, weight decay 1e-4 (l.296).
* ``code/min_norm_solvers.py:9-30`` (``_min_norm_element_from2``: 0.999 / 0.001 in the two
  degenerate cases, else the exact, unclipped minimiser), ``:32-58`` (``_min_norm_2d``) and
  ``:92-129`` (``find_min_norm_element``, which returns the two-vector solution for n = 2).
* ``code/models/models.py:133-184`` (``AVClassifier``: ``head`` on the concatenated features,
  ``head_audio``, ``head_video``).

The framework's ``strong`` modality plays ``audio``, ``weak`` plays ``visual``.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

STEPS = 6
TOLERANCE = 1e-10
GAMMA = 1.5
SCALE = 120.0
PREFIXES = {
    "encoders.strong.": "audio_net.",
    "encoders.weak.": "visual_net.",
    "fusion_head.": "head.",
    "unimodal_heads.strong.": "head_audio.",
    "unimodal_heads.weak.": "head_video.",
}


# ---- transcription (imports nothing from framework) -------------------------------------------


class AVClassifier(nn.Module):
    """``code/models/models.py:133-184`` with the framework's encoders in place of the ResNets."""

    def __init__(self, audio_net, visual_net, head, head_audio, head_video) -> None:
        super().__init__()
        self.audio_net, self.visual_net = audio_net, visual_net
        self.head, self.head_audio, self.head_video = head, head_audio, head_video

    def forward(self, audio, visual):
        a = self.audio_net(audio)
        v = self.visual_net(visual)
        out = self.head(torch.cat((a, v), 1))
        return out, self.head_audio(a), self.head_video(v)


def min_norm_element_from2(v1v1, v1v2, v2v2, clip=None):
    """``min_norm_solvers.py:9-30``; ``clip`` (the control only) clips the result."""
    if v1v2 >= v1v1:
        return 0.999, v1v1
    if v1v2 >= v2v2:
        return 0.001, v2v2
    gamma = -1.0 * ((v1v2 - v2v2) / (v1v1 + v2v2 - 2 * v1v2))
    if clip is not None:
        gamma = min(max(gamma, clip[0]), clip[1])
    return gamma, v2v2 + gamma * (v1v2 - v2v2)


def find_min_norm_element(vecs, clip=None):
    """``min_norm_solvers.py:32-58`` and ``:92-129`` for two vectors (each a list of tensors)."""
    dps = {}
    for i, j in ((0, 0), (0, 1), (1, 1)):
        dps[(i, j)] = sum(float(torch.mul(vecs[i][k], vecs[j][k]).sum()) for k in range(len(vecs[i])))
    c, _ = min_norm_element_from2(dps[(0, 0)], dps[(0, 1)], dps[(1, 1)], clip)
    return [c, 1 - c]


def reference_step(model, optimizer, audio, visual, label, clip=None, log=None):
    """One iteration of ``MMPareto.py:train_epoch`` (l.76-209)."""
    criterion = nn.CrossEntropyLoss()
    record_audio, record_visual = [], []
    for name, param in model.named_parameters():
        if "head" in name:
            continue
        if "audio" in name:
            record_audio.append((name, param))
        elif "visual" in name:
            record_visual.append((name, param))
    optimizer.zero_grad()
    out, out_a, out_v = model(audio, visual)
    losses = [criterion(out, label), criterion(out_a, label), criterion(out_v, label)]
    grads_audio, grads_visual = {}, {}
    for loss_type, loss in zip(["both", "audio", "visual"], losses, strict=True):
        loss.backward(retain_graph=True)
        if loss_type in ("both", "audio"):
            grads_audio[loss_type] = {n: p.grad.clone() for n, p in record_audio}
            grads_audio[loss_type]["concat"] = torch.cat([p.grad.flatten() for _, p in record_audio])
        if loss_type in ("both", "visual"):
            grads_visual[loss_type] = {n: p.grad.clone() for n, p in record_visual}
            grads_visual[loss_type]["concat"] = torch.cat([p.grad.flatten() for _, p in record_visual])
        optimizer.zero_grad()
    weights = {}
    for key, grads, task in (("audio", grads_audio, "audio"), ("visual", grads_visual, "visual")):
        cos = F.cosine_similarity(grads["both"]["concat"], grads[task]["concat"], dim=0)
        if cos > 0:
            weights[key] = [0.5, 0.5]
        else:
            weights[key] = find_min_norm_element([list(grads[t].values()) for t in ("both", task)], clip)
        if log is not None:
            ratio = grads["both"]["concat"].norm() / grads[task]["concat"].norm()
            log.append((key, float(cos), float(ratio), float(weights[key][0])))
    loss = losses[0] + losses[1] + losses[2]
    loss.backward()
    for name, param in model.named_parameters():
        layer = re.split("[_.]", name)
        if param.grad is None or "head" in layer:
            continue
        for key, grads in (("audio", grads_audio), ("visual", grads_visual)):
            if key in layer:
                k = weights[key]
                three_norm = torch.norm(param.grad.clone())
                new_grad = 2 * k[0] * grads["both"][name] + 2 * k[1] * grads[key][name]
                diff = three_norm / torch.norm(new_grad)
                param.grad = diff * new_grad * GAMMA if diff > 1 else new_grad * GAMMA
    optimizer.step()


# ---- the comparison ---------------------------------------------------------------------------


def build(framework_trainer, harness, case: str):
    """The framework trainer, its reference twin, the reference optimizer and the batches.

    ``plain``: the initial weights. ``conflict``: each unimodal head is minus its encoder's block
    of the fusion head, so ``g_mm`` and ``g_m`` point apart on every encoder. ``extreme``: the
    samples the fusion head separates best, labelled by its prediction, and the head scaled by
    :data:`SCALE`, so the multimodal loss is nearly fit and ``|g_mm| / |g_m|`` is 4e-3 to 1.3e-2;
    each unimodal head gets minus half its encoder's block of the fusion head added, a mild
    conflict (cosines -0.05 to -0.5 on most steps) where the exact min-norm weight of ``g_mm`` is
    above 0.999 (0.99959 and 0.99926 on the first step)."""
    lr = 0.002 if case == "extreme" else 0.05  # 0.002: MMPareto.py:32, keeps the scaled head nearly fit
    trainer, cfg = framework_trainer("method=mmpareto", f"optimizer.lr={lr}")
    model = trainer.model
    batches = harness.draw_batches(trainer, STEPS)
    with torch.no_grad():
        width = model.encoders["strong"].out_dim
        blocks = {"strong": model.fusion_head.weight[:, :width], "weak": model.fusion_head.weight[:, width:]}
        if case == "conflict":
            for m, block in blocks.items():
                model.unimodal_heads[m].weight.copy_(-block)
        if case == "extreme":
            for m, block in blocks.items():
                model.unimodal_heads[m].weight.add_(-0.5 * block)
            batches = confident_batches(trainer, harness)
            model.fusion_head.weight.mul_(SCALE)
            model.fusion_head.bias.mul_(SCALE)
    reference = AVClassifier(
        copy.deepcopy(model.encoders["strong"]),
        copy.deepcopy(model.encoders["weak"]),
        harness.fresh_linear(model.fusion_head),
        harness.fresh_linear(model.unimodal_heads["strong"]),
        harness.fresh_linear(model.unimodal_heads["weak"]),
    )
    assert harness.max_param_diff(model, reference, PREFIXES) == 0.0
    return trainer, cfg, reference, batches


def confident_batches(trainer, harness):
    """``STEPS`` batches of the training samples the fusion head separates best, each labelled by
    its prediction (the multimodal loss is then nearly fit once the head is scaled up)."""
    data = trainer.splits.train
    inputs, _ = data.batch(torch.arange(len(data)))
    logits = trainer.model(inputs)["multimodal"]
    top = logits.topk(2, dim=1).values
    best = (top[:, 0] - top[:, 1]).argsort(descending=True)[: STEPS * 32]
    best = best[torch.randperm(len(best), generator=torch.Generator().manual_seed(0))]
    labels = logits.argmax(1)
    return [({m: t[chunk] for m, t in inputs.items()}, labels[chunk]) for chunk in best.split(32)]


def run_reference(reference, cfg, harness, batches, clip=None):
    optimizer = harness.sgd_like(cfg, reference.parameters())
    log: list[tuple[str, float, float, float]] = []
    history = []
    for inputs, labels in batches:
        reference_step(reference, optimizer, inputs["strong"], inputs["weak"], labels, clip, log)
        history.append(harness.snapshot(reference))
    return history, log


@pytest.mark.parametrize("case", ["plain", "conflict", "extreme"])
def test_mmpareto_matches_the_official_step(framework_trainer, harness, case):
    trainer, cfg, reference, batches = build(framework_trainer, harness, case)
    control = copy.deepcopy(reference)
    history, log = run_reference(reference, cfg, harness, batches)
    params, _ = harness.framework_steps(trainer, batches)
    diffs = [harness.max_param_diff(p, h, PREFIXES) for p, h in zip(params, history, strict=True)]
    assert max(diffs) < TOLERANCE, f"{case}: per-step max |framework - official| = {diffs}; log {log}"
    if case == "conflict":
        assert all(cos < 0 for _, cos, _, _ in log), log
    if case == "extreme":
        assert all(ratio < 0.02 for _, _, ratio, _ in log), log
        assert all(cos < 0 and weight > 0.999 for _, cos, _, weight in log[:2]), log  # step 0, both encoders
        controlled, _ = run_reference(control, cfg, harness, batches, clip=(0.001, 0.999))
        control_diff = harness.max_param_diff(params[-1], controlled[-1], PREFIXES)
        assert control_diff > 1e3 * TOLERANCE, f"clipping the weight to [0.001, 0.999] changed nothing: {control_diff}"
