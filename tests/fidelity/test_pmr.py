"""PMR: the framework's ``method=pmr`` against the authors' training loop, over three epochs.

Reference: fanyunfeng-bit/Modal-Imbalance-PMR@3615e48983555089b0e693380087617c3797a641

* ``main_Prototype_grad.py:69-75`` (``EU_dist``); ``:91-271`` (``train_epoch``, modulation
  ``Proto``, concat fusion): ``sim_u = -EU_dist(u, proto_u)``, in epochs ``modulation_starts <=
  epoch <= modulation_ends`` the prototype scores ``sum_i softmax(sim_u)_i[y_i]`` (l.158-160),
  ``beta`` (audio) / ``lam`` (visual) = ``0 / alpha`` if ``ratio_a_p > 1``, ``alpha / 0`` if
  ``< 1``, else both 0 (l.169-177), ``loss = CE(out) + beta PCE_a + lam PCE_v`` (l.178), one
  backward and an SGD step (l.219, l.271); ``out_a``/``out_v`` and their scores are only logged.
* ``:383-441`` (``calculate_prototype``): eval mode, no grad, per-class mean features over the
  first ``len(loader) // 10`` batches (at least one) of the shuffled training loader; after an
  epoch ``e > 0``, ``(1 - momentum_coef) new + momentum_coef old``.
* ``:532-557`` (``main``): prototypes before epoch 0 (``epoch = 0``), then after each epoch ``e``
  with ``epoch = e`` (so the momentum first applies to the prototypes of epoch 2); SGD, momentum
  0.9, weight decay 1e-4 (l.464).
* ``models/basic_model.py:61-110``, ``models/fusion_modules.py:16-24`` (``AVClassifier``, concat).

Data order: the training batches and the prototype batches are drawn as the framework's loaders
draw them (a permutation from ``torch.Generator().manual_seed(seed)`` each epoch, one generator
for the training loader and one for the prototype loader), so both sides see the same samples.

Not covered, deviations in cases the code does not handle or the framework does not run: a class
absent from the prototype batches gets a NaN prototype in the code (``/= count_class[c]`` with a
zero count, l.431-433), a zero one in the framework; for CG-MNIST and AVE the code takes the
prototypes from another split (l.534-537, CG-MNIST's being its test split), the framework always
from the training split.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

EPOCHS = 3
TOLERANCE = 1e-10
ALPHA = 1.0
MOMENTUM_COEF = 0.2


# ---- transcription (imports nothing from framework) -------------------------------------------


class AVClassifier(nn.Module):
    """``models/basic_model.py:61-110`` with concat fusion (``fusion_modules.py:16-24``)."""

    def __init__(self, audio_net, visual_net, fc_out) -> None:
        super().__init__()
        self.audio_net, self.visual_net = audio_net, visual_net
        self.fusion_module = nn.Module()
        self.fusion_module.fc_out = fc_out

    def forward(self, audio, visual):
        a, v = self.audio_net(audio), self.visual_net(visual)
        return a, v, self.fusion_module.fc_out(torch.cat((a, v), dim=1))


def eu_dist(x1, x2):
    """``main_Prototype_grad.py:69-75``."""
    d_matrix = torch.zeros(x1.shape[0], x2.shape[0])
    for i in range(x1.shape[0]):
        for j in range(x2.shape[0]):
            d_matrix[i, j] = torch.sqrt(torch.dot((x1[i] - x2[j]), (x1[i] - x2[j])))
    return d_matrix


def train_step(model, optimizer, spec, image, label, epoch, audio_proto, visual_proto, log=None):
    """One iteration of ``train_epoch`` (l.120-271), ``--modulation Proto``."""
    criterion = nn.CrossEntropyLoss()
    softmax = nn.Softmax(dim=1)
    modulation_starts, modulation_ends = 0, 100
    optimizer.zero_grad()
    a, v, out = model(spec, image)
    audio_sim = -eu_dist(a, audio_proto)
    visual_sim = -eu_dist(v, visual_proto)
    if modulation_starts <= epoch <= modulation_ends:
        score_a_p = sum([softmax(audio_sim)[i][label[i]] for i in range(audio_sim.size(0))])
        score_v_p = sum([softmax(visual_sim)[i][label[i]] for i in range(visual_sim.size(0))])
        ratio_a_p = score_a_p / score_v_p
        loss_proto_a = criterion(audio_sim, label)
        loss_proto_v = criterion(visual_sim, label)
        if ratio_a_p > 1:
            beta, lam = 0, 1 * ALPHA
        elif ratio_a_p < 1:
            beta, lam = 1 * ALPHA, 0
        else:
            beta, lam = 0, 0
        if log is not None:
            log.append((beta, lam))
        loss = criterion(out, label) + beta * loss_proto_a + lam * loss_proto_v
    else:
        loss = criterion(out, label)
    loss.backward()
    optimizer.step()


def calculate_prototype(model, dataloader, epoch, n_classes, embed_dim, a_proto=None, v_proto=None):
    """``main_Prototype_grad.py:383-441``."""
    audio_prototypes = torch.zeros(n_classes, embed_dim)
    visual_prototypes = torch.zeros(n_classes, embed_dim)
    count_class = [0 for _ in range(n_classes)]
    model.eval()
    with torch.no_grad():
        sample_count = 0
        all_num = len(dataloader)
        for spec, image, label in dataloader:
            a, v, _out = model(spec, image)
            for c, lab in enumerate(label):
                lab = lab.long()
                count_class[lab] += 1
                audio_prototypes[lab, :] += a[c, :]
                visual_prototypes[lab, :] += v[c, :]
            sample_count += 1  # noqa: SIM113
            if sample_count >= all_num // 10:
                break
    for c in range(audio_prototypes.shape[0]):
        audio_prototypes[c, :] /= count_class[c]
        visual_prototypes[c, :] /= count_class[c]
    model.train()
    if epoch <= 0:
        return audio_prototypes, visual_prototypes
    return (
        (1 - MOMENTUM_COEF) * audio_prototypes + MOMENTUM_COEF * a_proto,
        (1 - MOMENTUM_COEF) * visual_prototypes + MOMENTUM_COEF * v_proto,
    )


def train(model, optimizer, loader, proto_loader, n_classes, embed_dim, update_prototypes=True, log=None):
    """``main`` (l.532-557): prototypes, then per epoch ``train_epoch`` and new prototypes."""
    snapshots = []
    epoch = 0
    audio_proto, visual_proto = calculate_prototype(model, proto_loader(), epoch, n_classes, embed_dim)
    for epoch in range(EPOCHS):
        model.train()
        for spec, image, label in loader():
            train_step(model, optimizer, spec, image, label, epoch, audio_proto, visual_proto, log)
        snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})
        if update_prototypes:
            audio_proto, visual_proto = calculate_prototype(
                model, proto_loader(), epoch, n_classes, embed_dim, audio_proto, visual_proto
            )
    return snapshots


# ---- the comparison ---------------------------------------------------------------------------


def shuffled_loader(data, batch_size, seed):
    """``DataLoader(shuffle=True)`` over ``data``, one permutation per pass, from a persistent generator."""
    generator = torch.Generator().manual_seed(seed)
    audio, visual = data.spec.modalities

    def batches():
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), batch_size):
            inputs, labels = data.batch(order[start : start + batch_size])
            yield inputs[audio], inputs[visual], labels

    return lambda: list(batches())


@pytest.mark.parametrize("dominant", ["audio", "visual"])
def test_pmr_matches_the_authors_loop(framework_trainer, harness, dominant):
    """Three epochs of four steps; ``strong`` plays audio, and with ``dominant=visual`` the signals
    are swapped (the prototype loss then goes to audio). The control keeps its first prototypes."""
    signals = ("1.5", "0.3") if dominant == "audio" else ("0.3", "1.5")
    trainer, cfg = framework_trainer(
        "method=pmr", "dataset.train_size=128", "trainer.batch_size=32", "optimizer.lr=0.05",
        f"dataset.modalities.strong.signal={signals[0]}", f"dataset.modalities.weak.signal={signals[1]}",
        f"trainer.statistics.log_every={int(dominant == 'visual')}",  # both gradient-engine paths
    )  # fmt: skip
    model = trainer.model
    audio, visual = model.modalities
    mapping = {
        f"encoders.{audio}.": "audio_net.",
        f"encoders.{visual}.": "visual_net.",
        "fusion_head.": "fusion_module.fc_out.",
    }
    data, seed, size = trainer.splits.train, int(cfg.seed), int(cfg.trainer.batch_size)
    histories, log = [], []
    for update in (True, False):
        reference = AVClassifier(
            copy.deepcopy(model.encoders[audio]),
            copy.deepcopy(model.encoders[visual]),
            harness.fresh_linear(model.fusion_head),
        )
        assert harness.max_param_diff(model, reference, mapping) == 0.0
        histories.append(train(
            reference, harness.sgd_like(cfg, reference.parameters()), shuffled_loader(data, size, seed),
            shuffled_loader(data, size, seed), data.spec.num_classes, model.encoders[audio].out_dim, update,
            log if update else None,
        ))  # fmt: skip
    params = []
    for _ in range(EPOCHS):
        trainer.train_epoch()
        trainer.state.epoch += 1
        params.append(harness.snapshot(trainer.model))
    diffs = [harness.max_param_diff(p, h, mapping) for p, h in zip(params, histories[0], strict=True)]
    control = [harness.max_param_diff(p, h, mapping) for p, h in zip(params, histories[1], strict=True)]
    assert max(diffs) < TOLERANCE, f"per-epoch max |framework - authors| = {diffs}"
    weaker = (0, ALPHA) if dominant == "audio" else (ALPHA, 0)
    assert len(log) == EPOCHS * 4 and all(coefficients == weaker for coefficients in log[:4]), log
    assert control[0] < TOLERANCE, control
    assert control[-1] > 1e3 * TOLERANCE, f"prototypes never updated changed nothing: {control}"
