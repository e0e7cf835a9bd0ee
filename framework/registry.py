"""An explicit registry: a name -> entry dict filled by a decorator, with one-line errors.

Integrators, methods, benchmark variants and benchmark model cases each keep one. Registration
order is kept (reports list rows in it); registering a name twice is a programming error.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Generic, TypeVar

E = TypeVar("E")


class Registry(MutableMapping[str, E], Generic[E]):
    """``kind`` names what the entries are (``"integrator"``) in the error messages; ``error`` is the
    exception a bad name or parameter raises (a ``ValueError`` subclass the caller's validation knows)."""

    def __init__(self, kind: str, error: type[Exception] = ValueError) -> None:
        self.kind = kind
        self.error = error
        self._entries: dict[str, E] = {}

    def __getitem__(self, name: str) -> E:
        return self._entries[name]

    def __setitem__(self, name: str, entry: E) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, name: str, entry: E) -> E:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, *names: str, set_name: bool = False) -> Callable[[E], E]:
        """Decorator registering its target under each of ``names``; ``set_name`` also sets the
        target's ``name`` attribute (for classes that report their registered name)."""

        def decorate(entry: E) -> E:
            for name in names:
                self.add(name, entry)
                if set_name:
                    entry.name = name  # type: ignore[attr-defined]
            return entry

        return decorate

    def lookup(self, name: str, what: str | None = None) -> E:
        """The entry ``name``; else ``error`` naming ``what`` (default ``"unknown <kind> 'name'"``) and the choices."""
        if name not in self._entries:
            head = what or f"unknown {self.kind} {name!r}"
            raise self.error(f"{head}; valid choices: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def check_parameters(self, name: str, given: Mapping[str, object], valid: list[str]) -> None:
        """``error`` naming the parameters of ``given`` that are not in ``valid``, and the valid ones."""
        unknown = sorted(set(given) - set(valid))
        if unknown:
            raise self.error(
                f"{self.kind} {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"valid parameters: {', '.join(valid) or 'none'}"
            )


def parameters_of(cls: type[object]) -> list[str]:
    """The keyword parameters of ``cls``'s constructor, in order (``self`` and ``*args`` left out)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    signature = inspect.signature(cls.__init__)
    return [p.name for p in list(signature.parameters.values())[1:] if p.kind in kinds]
