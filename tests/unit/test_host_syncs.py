"""Host synchronisations (device-to-host reads) of a training step, counted.

On CUDA every read of a device tensor by the host (``.item()``, ``float(t)``, ``bool(t)``,
``.tolist()``, ``.cpu()``, a boolean mask, ...) stalls the pipeline until the device has caught up.
On CPU nothing stalls, so these tests count the *calls* to the reading methods during one call
(:class:`HostReads`, a :class:`~torch.overrides.TorchFunctionMode`): a call that reads on CPU
reads on CUDA too. The counts are pinned so that a new read on the integration path fails here;
``tests/cuda/test_cuda_syncs.py`` checks the same calls under ``torch.cuda.set_sync_debug_mode``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from framework.integrators import get_integrator
from framework.losses import MultitaskLoss
from framework.training.gradients import GradientEngine
from tests.unit.test_gradient_engine import make

READS = {
    "item",
    "tolist",
    "numpy",
    "cpu",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "__repr__",
    "__str__",
    "__format__",
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
}
"""Tensor methods and torch functions that read a tensor's values (or a data-dependent shape) on the host."""


def _to_host(args: tuple, kwargs: dict) -> bool:
    """Whether a ``Tensor.to`` call moves a device tensor to the CPU, or names the CPU (``"cpu"``).

    ``t.to(other.device)`` follows its operand: on one device it reads nothing, so on CPU a device
    object given as the target is not counted unless the tensor is elsewhere; the string ``"cpu"``
    (a move to the host as written) always is.
    """
    source = args[0] if args and isinstance(args[0], torch.Tensor) else None
    for value in (*args[1:], kwargs.get("device")):
        if isinstance(value, str) and torch.device(value).type == "cpu":
            return True
        if isinstance(value, torch.device) and value.type == "cpu" and source is not None:
            return source.device.type != "cpu"
    return False


def _boolean_index(args: tuple) -> bool:
    """Whether ``t[mask]`` / ``t[mask] = v`` indexes with a boolean tensor (a data-dependent shape)."""
    index = args[1] if len(args) > 1 else None
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class HostReads(TorchFunctionMode):
    """Counts host reads of tensors in its ``with`` block, by name (:attr:`counts`, :attr:`total`)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if (
            name in READS
            or (name == "to" and _to_host(args, kwargs))
            or (name in ("__getitem__", "__setitem__") and _boolean_index(args))
        ):
            self.counts[name] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def test_the_counter_counts_each_kind_of_read():
    """Positive control: every reading call is counted once, arithmetic is not."""
    x = torch.arange(4.0)
    with HostReads() as reads:
        y = x * 2 + 1
        for i in range(3):
            y[i].item()
    assert reads.total == 3
    with HostReads() as reads:
        bool(y.sum() > 0)
        if y[0]:
            pass
        float(y[1])
        int(y[2])
        y.tolist()
        y.cpu()
        y.to("cpu")
        y.numpy()
        y[y > 2]
        torch.nonzero(y)
        [0, 1, 2][x[1].long()]
        f"{y}"
    assert reads.total == 12, reads.counts
    with HostReads() as reads:
        torch.where(y > 2, y, 0.0).to(torch.float64).clamp_min(0).sqrt()
    assert reads.total == 0, reads.counts


def _grads(k: int, seed: int = 0) -> list[list[torch.Tensor]]:
    """``k`` per-loss gradients on a group of three tensors, with conflicts between them."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(16, 8), (8,), (4, 16)]
    rows = [[torch.randn(s, generator=generator) for s in shapes] for _ in range(k)]
    rows[1] = [-0.5 * a + 0.3 * b for a, b in zip(rows[0], rows[1], strict=True)]  # cosine < 0
    return rows


def integrate_reads(name: str, k: int) -> int:
    integrator = get_integrator(name)
    grads = _grads(k)
    integrator.integrate(_grads(k), inplace=True)  # first call: nothing is cached
    with HostReads() as reads:
        integrator.integrate(grads, inplace=True)
    return reads.total


def engine_reads(name: str, modalities: int) -> int:
    model, inputs, labels = make(modalities)
    engine = GradientEngine(model, get_integrator(name))
    for measured in (False, True):  # the first step plans; the second is measured
        model.zero_grad(set_to_none=True)
        features = model.encode(inputs)
        losses = MultitaskLoss()(model.classify(features), labels)
        if measured:
            with HostReads() as reads:
                engine.backward(features, losses, need_decisions=False)
        else:
            engine.backward(features, losses, need_decisions=False)
    return reads.total


def train_step_reads(compose_cfg: Any, name: str) -> int:
    from framework.main import build_trainer
    from framework.training.checkpoint import seed_everything

    cfg = compose_cfg(
        "experiment=smoke",
        f"integrator={name}",
        "trainer.statistics.log_every=0",
        "trainer.statistics.noise_every=0",
    )
    seed_everything(int(cfg.seed))
    trainer = build_trainer(cfg, None, None)
    batches = iter(trainer._source(trainer.splits.train, train=True))
    trainer.train_step(*next(batches))  # plans
    trainer.state.step += 1
    assert not trainer.statistics.wants_step(trainer.state.step)
    inputs, labels = next(batches)
    with HostReads() as reads:
        trainer.train_step(inputs, labels)
    return reads.total


# Host reads per call (at HEAD before the integrators kept their work on the device, in brackets).
# Every integration reads one flag: tensor_grams' check for Gram entries to recompute in float64
# (_kernels.py). PCGrad also reads its random order, k permutations drawn on the CPU generator
# (host tensors: no device read on CUDA). Three losses: MGDA's and MMPareto's exact min-norm
# solver runs on the host (the Gram matrix to numpy), MMPareto reads its branch first.
INTEGRATE = {
    ("sum", 2): 1,  # [11]
    ("sum", 3): 1,  # [14]
    ("mgda", 2): 1,  # [13]
    ("mgda", 3): 3,  # [16]: + .cpu(), .numpy() of the Gram matrix
    ("mmpareto", 2): 1,  # [20]
    ("mmpareto", 3): 5,  # [22]: + a boolean mask, bool(all cosines > 0), + .cpu(), .numpy()
    ("pcgrad", 2): 3,  # [19]: + 2 permutations (host)
    ("pcgrad", 3): 4,  # [31]: + 3 permutations (host)
}
# One engine backward on a late-fusion model with 2 or 3 modalities: one group per modality, two
# losses per group (multimodal, unimodal), so one integration per group. ``sum`` is one backward
# of the summed losses (no integration).
ENGINE = {
    ("sum", 2): 0,  # [0]
    ("sum", 3): 0,  # [0]
    ("mgda", 2): 2,  # [26]
    ("mgda", 3): 3,  # [39]
    ("mmpareto", 2): 2,  # [37]
    ("mmpareto", 3): 3,  # [57]
    ("pcgrad", 2): 6,  # [34]: + 2 permutations (host) per group
    ("pcgrad", 3): 9,  # [53]
}
# A whole train step of experiment=smoke (two modalities) with no statistics due: the trainer's 2
# (bool of _finite on the losses before the backward, so that no stateful integrator sees a
# non-finite gradient, and on the gradients before the step), then per group the integration's 1.
# The plain losses stay on the device until the epoch's mean, and EpochStatistics keeps the Gram
# matrices there until the epoch's summary. [Before: 5, 35, 43, 39.]
TRAIN_STEP = {
    "sum": 2,  # the summed backward, no decisions
    "mgda": 4,
    "mmpareto": 4,
    "pcgrad": 8,  # + 2 permutations (host) per group
}


@pytest.mark.parametrize(("name", "k"), list(INTEGRATE))
def test_host_reads_of_one_integration(name, k):
    assert integrate_reads(name, k) == INTEGRATE[(name, k)]


@pytest.mark.parametrize(("name", "modalities"), list(ENGINE))
def test_host_reads_of_one_engine_backward(name, modalities):
    assert engine_reads(name, modalities) == ENGINE[(name, modalities)]


@pytest.mark.parametrize("name", list(TRAIN_STEP))
def test_host_reads_of_one_train_step(compose_cfg, name):
    assert train_step_reads(compose_cfg, name) == TRAIN_STEP[name]


def test_a_logged_step_fetches_its_statistics_in_one_transfer():
    """Every group's Gram matrix, weights and update norm come to the host in one transfer (``.cpu()``),
    then one ``tolist`` of that host tensor (a read here on CPU, no device wait on CUDA)."""
    from framework.integrators.base import fetch_decisions

    decisions = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        grads = [[torch.randn(7, generator=g), torch.randn(3, 2, generator=g)] for _ in range(2)]
        decisions.append(get_integrator("mmpareto").integrate(grads).decision)
    with HostReads() as reads:
        fetch_decisions(decisions)
    assert reads.counts == {"cpu": 1, "tolist": 1}
    with HostReads() as reads:
        for d in decisions:
            d.gram, d.weights, d.update_norm  # noqa: B018
    assert reads.total == 0
