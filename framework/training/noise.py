"""Gradient noise on a probe batch: the trace of each loss's per-sample gradient covariance.

For loss ``l`` and parameter group ``G``, with ``g_i`` the gradient of sample ``i``'s loss on the
group's parameters (flattened over all its tensors) and ``n`` the probe size::

    tr Cov_l(G) = mean_i |g_i - mean_j g_j|^2

Per-sample gradients come from ``torch.func``: ``vmap`` over ``grad`` of a ``functional_call`` of
the whole model on one sample; no Python loop over samples. Losses that reach disjoint groups are
differentiated together, as in :class:`~framework.training.gradients.GradientEngine` (the packs
of its :class:`~framework.training.plan.GradientPlan`), so a late-fusion model costs two vmapped
backward passes whatever its number of modalities. The probe can be split into chunks
(``chunk_size``); chunk means and sums of squares are merged with the exact parallel-variance rule
(Chan et al.), so the result does not depend on chunking and memory holds only ``chunk_size``
per-sample gradients of one group at a time.

Fallback: some modules cannot be vmapped (``nn.GRU`` and ``nn.LSTM``: their kernels write into a
tensor of the unbatched shape). The first probe call on a model tries ``vmap``; if it raises, the
probe logs one warning and computes the per-sample gradients with an exact loop instead (the same
``functional_call`` on one sample, then ``torch.autograd.grad``; cuDNN off, whose RNN backward
exists in train mode only), and remembers the choice for that model (:func:`probe_method`). Both
paths feed the same chunks to the same merge, so they agree up to float rounding; the loop costs
one forward and backward per sample and pack.

BatchNorm: the probe runs the model in **eval mode** (running statistics; dropout off) and restores
the previous mode afterwards. In train mode BatchNorm couples the samples of a batch, so a
per-sample gradient is not defined, and a batch of one would both normalise over the wrong axis
and update the running buffers. In eval mode each sample's loss depends on that sample only,
the buffers are read, never written, and the probe leaves the model, its buffers and the global
RNG state untouched. Parameters are passed detached: the probe never touches ``.grad``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..integrators._kernels import upcast
from ..metric_names import COV_TRACE
from ..metric_names import grad as grad_metric  # torch.func.grad is ``grad`` here
from .plan import GradientPlan

LossFn = Callable[[dict[str, Tensor], Tensor], Mapping[str, Tensor]]
PerSample = Callable[[dict[str, Tensor], dict[str, Tensor], Tensor], dict[str, Tensor]]
"""``(params, inputs, labels) -> {name: (c, *shape) per-sample gradients}`` for a chunk of ``c``."""

VMAP, LOOP = "vmap", "loop"
"""How the probe computes per-sample gradients: ``torch.func.vmap``, or a loop over samples."""
METHODS = (VMAP, LOOP)

log = logging.getLogger("framework")


class ProbeError(RuntimeError):
    """Per-sample gradients failed both with ``vmap`` and with the loop over samples."""


_method_of: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


class _Moments:
    """Running count, mean tensor and sum of squared deviations (float64) of per-sample gradients."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2 = 0.0

    def add(self, samples: Tensor) -> None:
        """Merge a ``(c, n)`` chunk (consumed: centred in place), then the exact pairwise merge rule."""
        c = samples.shape[0]
        work = upcast(samples)
        chunk_mean = work.mean(0)
        chunk_m2 = float(torch.linalg.vector_norm(work.sub_(chunk_mean))) ** 2
        if self.mean is None:
            self.count, self.mean, self.m2 = c, chunk_mean, chunk_m2
            return
        n = self.count
        delta = chunk_mean - self.mean
        self.m2 += chunk_m2 + float(torch.linalg.vector_norm(delta)) ** 2 * n * c / (n + c)
        self.mean = self.mean + delta * (c / (n + c))
        self.count = n + c


def _batch_of(inputs: Mapping[str, Tensor]) -> int:
    sizes = {int(t.shape[0]) for t in inputs.values()}
    if len(sizes) != 1:
        raise ValueError(f"probe inputs disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()


def probe_method(model: nn.Module) -> str | None:
    """:data:`VMAP` or :data:`LOOP`: what the first probe call on ``model`` chose; ``None`` before it."""
    return _method_of.get(model)


def _vmapped(sample_loss: Callable[..., Tensor]) -> PerSample:
    return vmap(grad(sample_loss), in_dims=(None, 0, 0))


def _looped(sample_loss: Callable[..., Tensor]) -> PerSample:
    """One forward and one ``torch.autograd.grad`` per sample, stacked like ``vmap`` stacks them."""

    def per_sample(params: dict[str, Tensor], x: dict[str, Tensor], y: Tensor) -> dict[str, Tensor]:
        leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
        rows: list[list[Tensor]] = []
        # cuDNN's RNN backward exists in train mode only; the native kernels compute the same gradients
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            for i in range(y.shape[0]):
                value = sample_loss(leaves, {m: t[i] for m, t in x.items()}, y[i])
                found = (
                    torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
                    if value.requires_grad
                    else (None,) * len(leaves)
                )
                rows.append(
                    [torch.zeros_like(p) if g is None else g for g, p in zip(found, leaves.values(), strict=True)]
                )
        return {name: torch.stack([row[j] for row in rows]) for j, name in enumerate(leaves)}

    return per_sample


def covariance_traces(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Mapping[str, Tensor],
    labels: Tensor,
    groups: Mapping[str, Sequence[nn.Parameter]],
    plan: GradientPlan,
    chunk_size: int | None = None,
    forward_kwargs: Mapping[str, object] | None = None,
    method: str | None = None,
) -> dict[str, dict[str, float]]:
    """``{group: {loss: tr Cov}}`` from per-sample gradients on the probe batch, groups in plan order.

    ``groups`` maps group names to their parameters (``model.parameter_groups()``; every group of
    the plan must be there); ``plan`` says which losses reach which group (``plan.reach``) and which
    losses are differentiated together (``plan.packs``: disjoint reach). ``loss_fn(logits, labels)``
    returns the losses by name with mean reduction; ``forward_kwargs`` are passed to the model's
    ``forward``. ``method``: :data:`VMAP` or :data:`LOOP` forces one path (nothing is remembered);
    ``None`` uses the model's remembered one, or on the first call tries ``vmap`` and falls back to
    the loop (one warning) if it raises; if the loop raises too, :class:`ProbeError` (nothing remembered).
    """
    missing = [g for g in plan.groups if g not in groups]
    if missing:
        raise ValueError(f"the plan's groups {missing} have no parameters in groups {sorted(groups)}")
    n = _batch_of(inputs)
    if n < 1 or labels.shape[0] != n:
        raise ValueError(f"probe needs matching non-empty inputs and labels, got {n} and {labels.shape[0]}")
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} or None, got {method!r}")
    args = (model, loss_fn, inputs, labels, groups, plan, chunk_size, forward_kwargs)
    if method is not None:
        return _traces(*args, method=method)
    remembered = _method_of.get(model)
    if remembered is not None:
        return _traces(*args, method=remembered)
    try:
        traces = _traces(*args, method=VMAP)
    except Exception as error:  # any module torch.func cannot batch
        why = _describe(error)
        try:
            traces = _traces(*args, method=LOOP)
        except Exception as loop_error:
            raise ProbeError(
                f"per-sample gradients failed with vmap ({why}) and with a loop ({_describe(loop_error)})"
            ) from loop_error
        log.warning(
            "noise probe: per-sample gradients of %s cannot be vmapped (%s); the probe falls back to a per-sample "
            "loop (exact, slower)",
            type(model).__name__, why,
        )  # fmt: skip
        _method_of[model] = LOOP
    else:
        _method_of[model] = VMAP
    return traces


def _describe(error: BaseException) -> str:
    """``Type: first line of the message``."""
    return f"{type(error).__name__}: {next(iter(str(error).strip().splitlines()), '')}"


def _traces(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Mapping[str, Tensor],
    labels: Tensor,
    groups: Mapping[str, Sequence[nn.Parameter]],
    plan: GradientPlan,
    chunk_size: int | None,
    forward_kwargs: Mapping[str, object] | None,
    method: str,
) -> dict[str, dict[str, float]]:
    n = labels.shape[0]
    step = n if not chunk_size or chunk_size <= 0 else int(chunk_size)
    named = dict(model.named_parameters())
    name_of = {id(p): name for name, p in named.items()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    kwargs = dict(forward_kwargs or {})
    batched = _vmapped if method == VMAP else _looped
    traces: dict[str, dict[str, float]] = {}
    was_training = model.training
    model.eval()
    try:
        # vmap has batching rules for the math attention kernel only (the fused kernels fall back to a
        # slow per-sample loop with a warning each call); the math kernel computes the same gradients
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):  # no_grad: torch.func.grad ignores it
            for pack in plan.packs:
                reached = plan.groups_reached_by(pack)
                if not reached:
                    continue
                names = {g: [name_of[id(p)] for p in groups[g]] for g in reached}
                diff = {name: named[name].detach() for g in reached for name in names[g]}
                fixed = {name: p.detach() for name, p in named.items() if name not in diff}
                members = tuple(pack)

                def sample_loss(
                    params: dict[str, Tensor],
                    x: dict[str, Tensor],
                    y: Tensor,
                    fixed: dict[str, Tensor] = fixed,
                    members: tuple[str, ...] = members,
                ) -> Tensor:
                    batch = {m: t.unsqueeze(0) for m, t in x.items()}
                    logits = functional_call(model, ({**fixed, **params}, buffers), (batch,), kwargs)
                    values = loss_fn(logits, y.unsqueeze(0))
                    return torch.stack([values[name] for name in members]).sum()

                per_sample = batched(sample_loss)
                moments = {g: [_Moments() for _ in names[g]] for g in reached}
                for start in range(0, n, step):
                    x = {m: t[start : start + step] for m, t in inputs.items()}
                    grads = per_sample(diff, x, labels[start : start + step])
                    for g in reached:
                        for moment, name in zip(moments[g], names[g], strict=False):
                            moment.add(grads[name].reshape(grads[name].shape[0], -1))
                    del grads
                for g in reached:
                    loss_reaching_group = plan.loss_of_pack(pack, g)
                    traces.setdefault(g, {})[loss_reaching_group] = sum(m.m2 for m in moments[g]) / n
    finally:
        model.train(was_training)
    return {g: traces[g] for g in plan.groups if g in traces}


def covariance_trace_metrics(traces: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``grad/<group>/cov_trace/<loss>`` for each group and loss."""
    return {grad_metric(g, COV_TRACE, loss): value for g, by_loss in traces.items() for loss, value in by_loss.items()}
