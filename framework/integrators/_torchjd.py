"""Adapters for torchjd's aggregators: the three ways a torchjd method can decide.

torchjd (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024;
https://github.com/TorchJD/torchjd, pinned at 0.18.0) splits an aggregator into a weighting and
the combination ``w^T J`` of the rows of the Jacobian ``J`` (here: the ``k`` per-loss gradients on
one group, ``k x d``). An adapter subclasses one of:

- :class:`GramianWeightingIntegrator`: the weighting needs only the Gramian ``J J^T``. The engine
  already has the group Gram matrix, so the group is never flattened: no extra cost.
- :class:`MatrixWeightingIntegrator`: the weighting needs ``J`` itself (Nash-MTL, ExcessMTL, MoDo,
  SDMGrad, RLW). ``J`` is built by :func:`group_matrix`, one copy of the group's per-loss gradients
  (``k x d`` floats); the combination is the framework's own, tensor by tensor.
- :class:`MatrixAggregatorIntegrator`: the method is not a weighting of the rows (ConFIG, GradDrop,
  TrimmedMean). ``J`` is built the same way and torchjd's aggregator returns the update vector,
  which is split back into the group's tensors. Its ``weights`` in the decision are the
  least-squares coefficients of the update on the gradients (exact when the update lies in their
  span, as ConFIG's does; a projection otherwise).

:func:`group_matrix` is the one documented path to the matrix. State (EMAs, step counters) lives in
the torchjd module; :meth:`state_dict` saves its attributes as tensors and plain values (what
``torch.load(..., weights_only=True)`` reads), and :meth:`load_state_dict` sets them on the
integrator's own module, so resuming is exact; stateful methods keep one copy per parameter group.
Methods that draw random numbers from torch's global RNG get their own generator state, seeded
by the integrator's ``seed`` (the run's seed in config) and checkpointed, and never disturb the
global RNG.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ._kernels import TensorLists, accumulate, upcast
from .base import Integrator


def aggregation() -> ModuleType:
    """``torchjd.aggregation``, imported on first use: it imports cvxpy, scipy and qpsolvers (about
    a second), which a run that uses none of torchjd's methods does not pay at start-up."""
    import torchjd.aggregation

    return torchjd.aggregation


def group_matrix(grads: TensorLists) -> Tensor:
    """The ``(k, d)`` matrix of the group's per-loss gradients, flattened over its tensors.

    In the gradients' working precision (float32 for half types), on their device: one copy of
    the group's per-loss gradients.
    """
    return torch.stack([torch.cat([upcast(t).reshape(-1) for t in row]) for row in grads])


class _PrivateRNG:
    """A generator state that torchjd's global-RNG draws run on, restored after each call."""

    def __init__(self, seed: int) -> None:
        self.cpu = torch.Generator().manual_seed(int(seed)).get_state()
        self.cuda: Tensor | None = None
        self.seed = int(seed)

    @contextmanager
    def active(self, device: torch.device) -> Iterator[None]:
        cuda = device.type == "cuda"
        with torch.random.fork_rng(devices=[device] if cuda else [], device_type="cuda"):
            torch.set_rng_state(self.cpu)
            if cuda:
                if self.cuda is None:
                    torch.cuda.manual_seed(self.seed)
                else:
                    torch.cuda.set_rng_state(self.cuda, device)
            try:
                yield
            finally:
                self.cpu = torch.get_rng_state()
                if cuda:
                    self.cuda = torch.cuda.get_rng_state(device)


_MODULE_INTERNALS = frozenset(vars(nn.Module()))


def _plain(value: Any) -> bool:
    """Whether ``value`` is made of what ``torch.load(..., weights_only=True)`` reads back."""
    if isinstance(value, np.generic):
        return False
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device, Tensor)):
        return True
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _copy(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_copy(v) for v in value)
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def module_state(module: nn.Module) -> dict[str, dict[str, Any]]:
    """The attributes of ``module`` and its submodules (by name) as tensors and plain values.

    Buffers and plain attributes are copied; numpy arrays and scalars become tensors (under
    ``"numpy"`` and ``"numpy_scalars"``); anything else (the constructor's objects, a solver's
    problem) is left out: the loading module has the former and rebuilds the latter
    (:meth:`_TorchJDIntegrator._rebuild`).
    """
    state: dict[str, dict[str, Any]] = {}
    for name, sub in module.named_modules():
        plain: dict[str, Any] = {k: _copy(v) for k, v in sub._buffers.items()}
        arrays: dict[str, Tensor] = {}
        scalars: dict[str, Tensor] = {}
        for key, value in vars(sub).items():
            if key in _MODULE_INTERNALS:
                continue
            if isinstance(value, (np.ndarray, np.generic)):
                with contextlib.suppress(TypeError):  # a dtype torch has not: left out
                    (scalars if isinstance(value, np.generic) else arrays)[key] = torch.from_numpy(
                        np.array(value, copy=True)
                    )
            elif _plain(value):
                plain[key] = _copy(value)
        state[name] = {"plain": plain, "numpy": arrays, "numpy_scalars": scalars}
    return state


def load_module_state(module: nn.Module, state: dict[str, dict[str, Any]]) -> None:
    """Set the attributes that :func:`module_state` saved on ``module`` (built like the saved one)."""
    subs = dict(module.named_modules())
    if set(state) != set(subs):
        raise ValueError(f"torchjd state for submodules {sorted(state)}, the module has {sorted(subs)}")
    for name, saved in state.items():
        sub = subs[name]
        for key, value in saved["plain"].items():
            setattr(sub, key, _copy(value))
        for key, tensor in saved["numpy"].items():
            setattr(sub, key, tensor.numpy().copy())
        for key, tensor in saved["numpy_scalars"].items():
            setattr(sub, key, tensor.numpy()[()])


class _TorchJDIntegrator(Integrator):
    """What every torchjd adapter shares: the torchjd module, its state, its private RNG."""

    module: nn.Module
    random: ClassVar[bool] = False
    """Whether the torchjd method draws from torch's global RNG (then ``seed`` seeds its own)."""
    _rng: _PrivateRNG | None = None

    def _use(self, module: nn.Module, seed: int = 0) -> None:
        self.module = module
        if self.random:
            self._rng = _PrivateRNG(seed)

    def _call(self, argument: Tensor) -> Tensor:
        """The torchjd module on ``argument`` (detached), on the private RNG if it draws numbers."""
        if self._rng is None:
            return self.module(argument).detach()
        with self._rng.active(argument.device):
            return self.module(argument).detach()

    def _rebuild(self) -> None:
        """After :meth:`load_state_dict`: rebuild what :func:`module_state` leaves out (a solver's
        problem); nothing by default."""

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"module_state": module_state(self.module)}
        if self._rng is not None:
            state["rng"] = {
                "cpu": self._rng.cpu.clone(),
                "cuda": None if self._rng.cuda is None else self._rng.cuda.clone(),
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "module" in state:  # a checkpoint holding the module itself
            self.module = copy.deepcopy(state["module"])
        else:
            load_module_state(self.module, state["module_state"])
            self._rebuild()
        if self._rng is not None and "rng" in state:
            self._rng.cpu, self._rng.cuda = state["rng"]["cpu"].clone(), state["rng"]["cuda"]


class GramianWeightingIntegrator(_TorchJDIntegrator):
    """Weights from a torchjd Gramian ``Weighting`` called on the ``(k, k)`` group Gram matrix (float64).

    With :attr:`normalise_gram` the Gram matrix is divided by its trace first. torchjd's dual-cone
    projector (UPGrad, DualProj) has absolute tolerances: it treats a Gramian whose trace is below
    1e-4 as zero (then the weights are uniform whatever the conflict) and regularises by 1e-4 in
    absolute terms. Gradient groups that small are common in training; normalising makes the
    tolerances relative and the weights independent of the gradients' scale, as the methods are.
    """

    normalise_gram: ClassVar[bool] = False

    def weights(self, gram: Tensor) -> Tensor:
        gram = gram.double()
        if self.normalise_gram:
            trace = float(gram.diagonal().sum())
            if trace > 0:
                gram = gram / trace
        return self._call(gram).double().cpu()


class MatrixWeightingIntegrator(_TorchJDIntegrator):
    """Weights from a torchjd matrix ``Weighting`` called on :func:`group_matrix`; combined per tensor."""

    def weights(self, gram: Tensor) -> Tensor:
        raise TypeError(f"{self.name}: weights need the gradient matrix, not only its Gram matrix")

    def direction(
        self, grads: TensorLists, grams: Tensor, inplace: bool
    ) -> tuple[list[Tensor], Tensor | float, Tensor]:
        matrix = group_matrix(grads)
        weights = self._call(matrix).double().cpu()
        del matrix
        base, factor = accumulate(grads, weights, inplace)
        return base, factor, weights


class MatrixAggregatorIntegrator(_TorchJDIntegrator):
    """The update vector of a torchjd ``Aggregator`` called on :func:`group_matrix`, split into tensors."""

    def weights(self, gram: Tensor) -> Tensor:
        raise TypeError(f"{self.name}: this method is not a weighting of the gradients")

    def direction(
        self, grads: TensorLists, grams: Tensor, inplace: bool
    ) -> tuple[list[Tensor], Tensor | float, Tensor]:
        matrix = group_matrix(grads)
        vector = self._call(matrix)
        inner = (matrix.double() @ vector.double()).cpu()
        del matrix
        weights = torch.linalg.lstsq(grams.sum(0), inner.unsqueeze(1), driver="gelsd").solution.squeeze(1)
        pieces = torch.split(vector, [t.numel() for t in grads[0]])
        if inplace:
            for target, piece in zip(grads[0], pieces, strict=True):
                target.copy_(piece.reshape(target.shape))
            return grads[0], 1.0, weights
        return [p.reshape(t.shape).to(t.dtype) for p, t in zip(pieces, grads[0], strict=True)], 1.0, weights
