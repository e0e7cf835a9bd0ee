"""MLA: the framework's ``method=mla`` against the alternating step of the cited code.

References:

* GeWu-Lab/BalanceBenchmark@4c1482fca5aaa8d4278af8e26020daa039e3ccf3
  ``balancemm/trainer/MLA_trainer.py:129-179`` (``training_step``, in the modulation window): per
  modality in turn, ``feature_extract(batch, modality)`` (that encoder alone,
  ``balancemm/models/avclassify_model.py:731-734``), the shared ``fc_out``
  (``balancemm/models/fusion_arch.py:15-21``), the cross-entropy, ``backward``,
  ``gs_plugin.before_update(fc_out, feature.detach(), batch_idx, len_dataloader, exp_count)``,
  ``optimizer.step()``, ``zero_grad()``, ``exp_count += 1``; ``MLA_trainer.py:20-53``
  (``GSPlugin``: ``alpha = 0.1 ** (batch_idx / len + 1)``, ``r`` the batch mean of the features,
  ``k = P r^T``, ``P -= k k^T / (alpha + k r)``, ``P /= ||P||_F``, ``grad += grad P^T``, from the
  second update on).
* Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation@ab6c184579f9ff390e9c9b8216c9900c2a43545b
  ``main.py:419-470``: the same alternation, each encoder run once per step.

``denominator=elementwise`` is compared with ``GSPlugin`` as written (``alpha + torch.mm(k, r)``,
a ``d x d`` matrix); the default ``denominator=scalar`` with that one expression replaced by the
paper's ``alpha + r k`` (``framework/methods/mla.py``, MLA docstring, says why). The encoders are
the framework's small CNNs (BatchNorm) on CG-MNIST-shaped data, so the BatchNorm running
statistics are compared too: the control runs every encoder in every sub-step (the loss still
only its own), which leaves the parameters alone and moves the running statistics.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

STEPS = 5
TOLERANCE = 1e-10
LR = 0.05


# ---- transcription (imports nothing from framework) -------------------------------------------


class GSPlugin:
    """``MLA_trainer.py:20-53``; ``denominator="scalar"`` swaps in the paper's ``alpha + r k``."""

    def __init__(self, dim: int, denominator: str) -> None:
        self.Pl = torch.eye(dim)
        self.exp_count = 0
        self.denominator = denominator

    def before_update(self, model, before_batch_input, batch_index, len_dataloader, train_exp_counter):
        lamda = batch_index / len_dataloader + 1
        alpha = 1.0 * 0.1**lamda
        if train_exp_counter != 0:
            for n, w in model.named_parameters():
                if n == "weight":
                    r = torch.mean(before_batch_input, 0, True)
                    k = torch.mm(self.Pl, torch.t(r))
                    product = torch.mm(k, r) if self.denominator == "elementwise" else torch.mm(r, k)
                    self.Pl = torch.sub(self.Pl, torch.mm(k, torch.t(k)) / (alpha + product))
                    pnorm2 = torch.norm(self.Pl.data, p="fro")
                    self.Pl.data = self.Pl.data / pnorm2
                    w.grad.add_(torch.mm(w.grad.data, torch.t(self.Pl.data)))


class SharedHeadModel(nn.Module):
    """One encoder per modality and the shared ``fc_out``."""

    def __init__(self, encoders: nn.ModuleDict, fc_out: nn.Linear) -> None:
        super().__init__()
        self.encoders, self.fc_out = encoders, fc_out

    def feature_extract(self, batch, modality):
        return self.encoders[modality](batch[modality])


def training_step(model, batch, label, batch_idx, len_dataloader, optimizer, gs_plugin, every_encoder=False):
    """``MLA_trainer.py:140-170``; ``every_encoder`` (the control) also runs the other encoders."""
    for modality in batch:
        if every_encoder:
            features = {m: model.feature_extract(batch, m) for m in batch}
            feature = features[modality]
        else:
            feature = model.feature_extract(batch, modality)
        out = model.fc_out(feature)
        loss = F.cross_entropy(out, label)
        loss.backward()
        encoder_out = feature.detach()
        gs_plugin.before_update(model.fc_out, encoder_out, batch_idx, len_dataloader, gs_plugin.exp_count)
        optimizer.step()
        optimizer.zero_grad()
        gs_plugin.exp_count += 1
    for p in model.parameters():
        if p.grad is not None:
            del p.grad


# ---- the comparison ---------------------------------------------------------------------------


def buffers(model: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in model.named_buffers() if n.startswith(prefix)}


def max_buffer_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and a, (sorted(a), sorted(b))
    return max(float((a[n].double() - b[n].double()).abs().max()) for n in a)


@pytest.mark.parametrize("denominator", ["scalar", "elementwise"])
def test_mla_matches_the_cited_step(framework_trainer, harness, writers, tmp_path, denominator):
    data = writers.dataset("cgmnist_file", tmp_path / "data")
    trainer, cfg = framework_trainer(
        "dataset=cgmnist_file",
        "model=cnn",
        *data,
        "method=mla",
        f"method.denominator={denominator}",
        f"optimizer.lr={LR}",
    )
    model = trainer.model
    modalities = list(model.modalities)
    head = model.unimodal_heads[modalities[0]]
    assert all(model.unimodal_heads[m] is head for m in modalities)
    assert any(isinstance(b, nn.BatchNorm2d) for b in model.encoders.modules())
    batches = harness.draw_batches(trainer, STEPS, size=16)
    prefixes = {"encoders.": "encoders.", f"unimodal_heads.{modalities[0]}.": "fc_out."}

    def reference() -> SharedHeadModel:
        return SharedHeadModel(copy.deepcopy(model.encoders), harness.fresh_linear(head))

    other = {"scalar": "elementwise", "elementwise": "scalar"}[denominator]
    runs = {"cited": reference(), "control": reference(), "other_denominator": reference()}
    initial = harness.snapshot(runs["cited"])
    assert harness.max_param_diff(model, runs["cited"], prefixes) == 0.0
    history: dict[str, list] = {k: [] for k in runs}
    for key, net in runs.items():
        optimizer = harness.sgd_like(cfg, net.parameters())
        plugin = GSPlugin(head.in_features, other if key == "other_denominator" else denominator)
        for index, (inputs, labels) in enumerate(batches):
            training_step(net, inputs, labels, index, len(batches), optimizer, plugin, every_encoder=key == "control")
            history[key].append((harness.snapshot(net), buffers(net, "encoders.")))
        assert plugin.exp_count == STEPS * len(modalities)
    params, _ = harness.framework_steps(trainer, batches)
    assert trainer.method.projector.count == STEPS * len(modalities)

    param_diffs = [harness.max_param_diff(p, h, prefixes) for p, (h, _) in zip(params, history["cited"], strict=True)]
    assert max(param_diffs) < TOLERANCE, f"per-step max |framework - cited| = {param_diffs}"
    buffer_diff = max_buffer_diff(buffers(model, "encoders."), history["cited"][-1][1])
    assert buffer_diff < TOLERANCE, f"BatchNorm statistics differ by {buffer_diff}"
    moved = harness.max_param_diff(runs["cited"], initial)
    assert moved > 1e-3, f"the parameters barely moved: {moved}"
    control_params = harness.max_param_diff(runs["control"], runs["cited"])
    statistics = {n: b for n, b in history["control"][-1][1].items() if "num_batches_tracked" not in n}
    cited = {n: history["cited"][-1][1][n] for n in statistics}
    control_statistics = max_buffer_diff(statistics, cited)
    assert control_statistics > 1e6 * TOLERANCE, f"every encoder in every sub-step: statistics {control_statistics}"
    other_params = harness.max_param_diff(params[-1], harness.snapshot(runs["other_denominator"]), prefixes)
    assert other_params > 1e6 * TOLERANCE, f"the {other} denominator changed nothing: {other_params}"
    print(
        f"mla[{denominator}]: steps {STEPS}, moved {moved:.2e}, max param diff {max(param_diffs):.2e}, "
        f"buffers {buffer_diff:.2e}; control (every encoder): params {control_params:.2e}, running statistics "
        f"{control_statistics:.2e}; {other} denominator: params {other_params:.2e}"
    )
