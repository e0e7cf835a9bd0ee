"""SIGTERM (``kill``, Slurm's ``scancel``) stops a run the way Ctrl-C does.

Inside :func:`sigterm_stops`, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``, so the
run ends KILLED with its ``interrupted`` tag and its journal flushed). While the trainer is inside
an epoch (:func:`deferred`), the signal is only recorded and :func:`check` raises it at the next
step boundary or after the epoch's checkpoint, so a checkpoint that is due is still written and
no step stops half-way. The process then exits with 143 (128 + SIGTERM), as a plain SIGTERM would.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_CODE = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""

    def __init__(self) -> None:
        super().__init__("SIGTERM")


class _State:
    requested = False
    deferring = 0


_state = _State()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _state.deferring:
        _state.requested = True
        return
    raise Terminated()


@contextmanager
def sigterm_stops() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` inside the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _state.requested, _state.deferring = False, 0
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _state.requested, _state.deferring = False, 0


@contextmanager
def deferred() -> Iterator[None]:
    """A SIGTERM inside the block waits for the next :func:`check` (or the block's end)."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    check()


def check() -> None:
    """Raise :class:`Terminated` if SIGTERM arrived while it was deferred."""
    if _state.requested and not _state.deferring:
        _state.requested = False
        raise Terminated()


def stop_point() -> None:
    """A safe point inside a :func:`deferred` block: raise a pending SIGTERM here."""
    if _state.requested:
        _state.requested = False
        raise Terminated()
