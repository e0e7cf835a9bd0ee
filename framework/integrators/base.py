"""Base classes of integrators: turn the per-loss gradients on one parameter group into one update.

An integrator is split, as torchjd's aggregators are, into *what to weigh* and *how to combine*:

- :meth:`Integrator.weights` is the method: a function of the group Gram matrix
  ``G[i, j] = <g_i, g_j>`` giving the coefficients ``w`` of the update direction
  ``d = sum_i w_i g_i``.
- An optional :class:`MagnitudeRule` maps the per-tensor Gram matrices and the direction's
  per-tensor norms to per-tensor scales ``s_p`` (MMPareto's restore-and-enlarge rule lives there).
- The combine step, ``update_p = s_p * sum_i w_i g_{i,p}``, is written once, here.

The group is never flattened: Gram matrices are accumulated tensor by tensor and the update is
written tensor by tensor. The flat ``(k, d)`` API of :meth:`Integrator.__call__` runs the very
same code on views. Every call returns the update together with its :class:`Decision`.

Capabilities the trainer reads instead of testing a method's name:

- :meth:`Integrator.fixed_combination`: the weights when they do not depend on the gradients and no
  magnitude rule applies (then the update is a fixed linear combination, and the engine can use
  one backward pass of the weighted losses when nothing else needs the per-loss gradients);
- :attr:`Integrator.label_params`: which hyperparameters a run's label shows when they differ
  from their defaults.
"""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import torch
from torch import Tensor

from ._kernels import TensorLists, accumulate, robust_norms, scale_, tensor_grams, working_dtype
from .magnitude import MAGNITUDE_DEFAULTS, MagnitudeRule, magnitude_rule


class Decision:
    """What an integrator decided for one group on one step (CPU, float64, read on first access).

    ``gram`` is the group Gram matrix ``G[i, j] = <g_i, g_j>``; ``weights`` are the coefficients of
    the update direction ``sum_i w_i g_i`` (before any magnitude rule); ``update_norm`` is
    ``|update|``. ``events`` counts what the method did besides its rule on this step (e.g. a solver
    that failed and fell back), one key per event the method can report, 0 when it did not happen.

    The integration leaves ``gram``, ``weights`` and ``update_norm`` where it computed them (on the
    gradients' device) and they move to the host when first read, so that a step whose decision
    nobody reads (no statistics due) waits for no device.
    """

    __slots__ = ("_gram", "_update_norm", "_weights", "events")

    def __init__(
        self, gram: Tensor, weights: Tensor, update_norm: float | Tensor, events: dict[str, int] | None = None
    ) -> None:
        self._gram, self._weights, self._update_norm = gram, weights, update_norm
        self.events: dict[str, int] = {} if events is None else events

    @property
    def gram(self) -> Tensor:
        if self._gram.device.type != "cpu" or self._gram.dtype != torch.float64:
            self._gram = self._gram.detach().to("cpu", torch.float64)  # read on first access only
        return self._gram

    @property
    def weights(self) -> Tensor:
        if self._weights.device.type != "cpu" or self._weights.dtype != torch.float64:
            self._weights = self._weights.detach().to("cpu", torch.float64)  # read on first access only
        return self._weights

    @property
    def update_norm(self) -> float:
        if isinstance(self._update_norm, Tensor):
            self._update_norm = float(self._update_norm)  # read on first access only
        return self._update_norm

    @property
    def gram_on_device(self) -> Tensor:
        """The Gram matrix where the integration left it (no host read until it is used there)."""
        return self._gram

    @property
    def norms(self) -> Tensor:
        return self.gram.diagonal().clamp_min(0).sqrt()

    @property
    def cosine(self) -> Tensor:
        return cosine_from_gram(self.gram)

    @property
    def sum_norm(self) -> float:
        return float(self.gram.sum().clamp_min(0).sqrt())

    def __repr__(self) -> str:
        return (
            f"Decision(gram={self.gram!r}, weights={self.weights!r}, update_norm={self.update_norm!r}, "
            f"events={self.events!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return (
            torch.equal(self.gram, other.gram)
            and torch.equal(self.weights, other.weights)
            and self.update_norm == other.update_norm
            and self.events == other.events
        )

    __hash__ = None  # type: ignore[assignment]


def fetch_decisions(decisions: Sequence[Decision]) -> None:
    """Read every decision's Gram matrix, weights and update norm to the host in one transfer."""
    pending = [d for d in decisions if isinstance(d._update_norm, Tensor) or d._gram.device.type != "cpu"]
    if not pending:
        return
    parts = [t for d in pending for t in (d._gram, d._weights, torch.as_tensor(d._update_norm, device=d._gram.device))]
    if len({t.device for t in parts}) > 1:
        return  # mixed devices: each is read on its first access
    host = torch.cat([t.detach().to(torch.float64).reshape(-1) for t in parts]).cpu()
    values = host.tolist()  # already on the host: no device wait
    position = 0
    for d in pending:
        k = d._gram.shape[0]
        d._gram = host[position : position + k * k].view(k, k)
        d._weights = host[position + k * k : position + k * k + k]
        d._update_norm = values[position + k * k + k]
        position += k * k + k + 1


U = TypeVar("U", Tensor, list[Tensor])


class Integration(NamedTuple, Generic[U]):
    """An update (a ``(d,)`` tensor, or one tensor per parameter) and the decision behind it."""

    update: U
    decision: Decision


def cosine_from_gram(gram: Tensor) -> Tensor:
    """Pairwise cosines; 0 where either gradient is zero."""
    norms = gram.diagonal().clamp_min(0).sqrt()
    denom = norms[:, None] * norms[None, :]
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, gram / safe, torch.zeros_like(gram)).clamp(-1.0, 1.0)


class Integrator(ABC):
    """Turns ``k`` per-loss gradients on one parameter group into one update.

    A single loss passes through unchanged (a parameter that one loss reaches gets its plain
    gradient). Subclasses implement :meth:`weights` (a function of the group Gram matrix) and may
    set :attr:`magnitude`. Methods that need the gradients themselves, not only their Gram matrix,
    override :meth:`direction` instead (see :mod:`framework.integrators._torchjd`).
    """

    name: ClassVar[str] = ""
    label_params: ClassVar[tuple[str, ...] | None] = None
    """Hyperparameters a run label shows when changed from their default (``None``: all)."""
    scale_degree: int | None = 1
    """``h`` with ``update(c * g) = c**h * update(g)`` for ``c > 0`` (1 for most methods; 0 for
    Nash-MTL, whose update does not depend on the gradients' scale; ``None``: neither)."""
    per_group_state: ClassVar[bool] = False
    """Whether each parameter group needs its own copy of the integrator's state (EMAs of a
    group's gradients); the engine then integrates each group with its own :meth:`for_group` copy."""

    default_magnitude: ClassVar[str] = "none"
    """The method's published magnitude choice (see :func:`~.magnitude.magnitude_rule`)."""
    first_loss_is_primary: ClassVar[bool] = False
    """Whether the first loss reaching a group has a role of its own (the primary objective), so
    that reordering the losses changes the update. ``False``: the losses are treated alike, and no
    loss is special (a multi-task model's tasks; the multimodal loss gets no special treatment)."""

    magnitude: MagnitudeRule | None = None
    _magnitude_choice: tuple[str, float, str] | None = None
    _events: dict[str, int] | None = None

    def report(self, event: str, happened: bool) -> None:
        """Record on this call's :class:`Decision` whether ``event`` happened (see ``Decision.events``)."""
        if self._events is None:
            self._events = {}
        self._events[event] = self._events.get(event, 0) + int(happened)

    def _take_events(self) -> dict[str, int]:
        events, self._events = self._events or {}, None
        return events

    @abstractmethod
    def weights(self, gram: Tensor) -> Tensor:
        """``(k,)`` float64 coefficients of the update direction, from the ``(k, k)`` group Gram matrix."""

    def fixed_weights(self, k: int) -> Tensor | None:
        """The weights for ``k`` losses if they never depend on the gradients, else ``None``."""
        del k
        return None

    def fixed_combination(self, k: int) -> Tensor | None:
        """The weights for ``k`` losses when the update is a fixed linear combination of the
        gradients (fixed weights, no magnitude rule); ``None`` otherwise."""
        if self.magnitude is not None:
            return None
        if k == 1:  # a single loss passes through as its plain gradient
            return torch.ones(1, dtype=torch.float64)
        return self.fixed_weights(k)

    def set_magnitude(
        self,
        magnitude: str | None = None,
        gamma: float = MAGNITUDE_DEFAULTS["gamma"],
        rescale: str = MAGNITUDE_DEFAULTS["rescale"],
    ) -> None:
        """Choose the magnitude rule (``none``, ``restore``, ``restore_gamma``; ``None``: the method's
        default), independently of the method's direction."""
        choice = self.default_magnitude if magnitude is None else magnitude
        self.magnitude = magnitude_rule(choice, gamma, rescale, owner=self.name or type(self).__name__)
        self._magnitude_choice = (choice, float(gamma), rescale)

    def magnitude_hparams(self) -> dict[str, Any]:
        """The magnitude choice as constructor parameters: ``magnitude`` when it is not the method's
        default, ``gamma`` and ``rescale`` where the rule uses them."""
        choice, gamma, rescale = self._magnitude_choice or (self.default_magnitude, *MAGNITUDE_DEFAULTS.values())
        out: dict[str, Any] = {} if choice == self.default_magnitude else {"magnitude": choice}
        if choice == "restore_gamma":
            out["gamma"] = gamma
        if choice != "none":
            out["rescale"] = rescale
        return out

    def for_group(self) -> Integrator:
        """The integrator a parameter group uses: ``self``, or a fresh copy when state is per group."""
        return copy.deepcopy(self) if self.per_group_state else self

    def direction(
        self, grads: TensorLists, grams: Tensor, inplace: bool
    ) -> tuple[list[Tensor], Tensor | float, Tensor]:
        """``(base, factor, weights)``: the direction is ``factor * base`` (per tensor), and ``weights``
        its coefficients on the gradients. ``base`` may live in ``grads[0]`` when ``inplace``."""
        k = len(grads)
        weights = self.weights(grams.sum(0)).detach().to(grams.device, torch.float64)
        if weights.shape != (k,):
            raise ValueError(
                f"{self.name or type(self).__name__}: weights must have shape ({k},), got {tuple(weights.shape)}"
            )
        base, factor = accumulate(grads, weights, inplace)
        return base, factor, weights

    def integrate(self, grads: TensorLists, inplace: bool = False) -> Integration[list[Tensor]]:
        """The per-tensor update from per-loss per-tensor ``grads`` (``inplace`` reuses ``grads[0]``)."""
        if len(grads) == 0 or len(grads[0]) == 0:
            raise ValueError("integrator needs at least one loss and one parameter tensor")
        shapes = [tuple(t.shape) for t in grads[0]]
        for i, row in enumerate(grads[1:], start=1):
            if [tuple(t.shape) for t in row] != shapes:
                raise ValueError(
                    f"the gradients of loss {i} have tensor shapes {[tuple(t.shape) for t in row]}, loss 0's {shapes}"
                )
        grams = tensor_grams(grads)
        if len(grads) == 1:
            update = grads[0] if inplace else [g.clone() for g in grads[0]]
            return Integration(update, _decision(grams, torch.ones(1, dtype=torch.float64), robust_norms(update)))
        # d = factor * base: one fused pass forms base; a magnitude rule and the factor then go in
        # one multiplication pass per group.
        if type(self).direction is not Integrator.direction:
            # Methods that overrode direction (torchjd's matrix methods) solve on the host: they get
            # the Gram matrices there, as before.
            grams = grams.cpu()
        base, factor, weights = self.direction(grads, grams, inplace)
        weights = weights.to(grams.device, torch.float64)
        events = self._take_events()
        direction_norms = robust_norms(base).to(grams.device) * (
            factor.abs() if isinstance(factor, Tensor) else abs(factor)
        )
        if self.magnitude is None:
            scale_(base, factor)
            return Integration(base, _decision(grams, weights, direction_norms, events))
        scales = self.magnitude.scales(grams, direction_norms, working_dtype(base[0]), weights)
        scale_(base, scales * factor)
        return Integration(base, _decision(grams, weights, scales * direction_norms, events))

    def __call__(self, grads: Tensor, segments: Sequence[int] | None = None) -> Integration[Tensor]:
        """Combine a ``(k, d)`` matrix of per-loss gradients into a ``(d,)`` update.

        ``segments`` are the sizes of the group's parameter tensors, in order (default: one).
        """
        if grads.dim() != 2 or grads.shape[0] == 0:
            raise ValueError(f"grads must have shape (k, d) with k >= 1, got {tuple(grads.shape)}")
        sizes = [grads.shape[1]] if segments is None else [int(s) for s in segments]
        if sum(sizes) != grads.shape[1] or any(s < 0 for s in sizes):
            raise ValueError(f"segments {sizes} must be non-negative and sum to d={grads.shape[1]}")
        per_loss = [list(torch.split(row, sizes)) for row in grads]
        update, decision = self.integrate(per_loss, inplace=False)
        return Integration(torch.cat(update), decision)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    def method_hparams(self) -> dict[str, Any]:
        """The method's own constructor arguments."""
        return {}

    def hparams(self) -> dict[str, Any]:
        """The parameters that rebuild this integrator with :func:`~.registry.get_integrator`."""
        return {**self.method_hparams(), **self.magnitude_hparams()}

    def label(self) -> str:
        """``name`` or ``name(p=v,...)`` with the label parameters that differ from their defaults."""
        defaults = {
            name: p.default
            for name, p in inspect.signature(type(self).__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        defaults.update(MAGNITUDE_DEFAULTS, magnitude=self.default_magnitude)
        shown = self.label_params
        changed = {
            k: v for k, v in self.hparams().items() if (shown is None or k in shown) and defaults.get(k, object()) != v
        }
        suffix = ",".join(f"{k}={_compact(v)}" for k, v in changed.items())
        return f"{self.name}({suffix})" if suffix else self.name

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({params})"


def _compact(value: Any) -> str:
    """A parameter value as run names show it: sequences without spaces (``[0.25,0.75]``)."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    return str(value)


def _decision(grams: Tensor, weights: Tensor, update_norms: Tensor, events: dict[str, int] | None = None) -> Decision:
    update_norm = update_norms.square().sum().sqrt()  # a device scalar until read (see Decision)
    return Decision(gram=grams.sum(0), weights=weights, update_norm=update_norm, events=events or {})
