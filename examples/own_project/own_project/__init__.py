"""A user's own project for ``python -m framework.main``: a dataset factory and a GRU encoder.

Nothing here is part of the framework: the configs in ``examples/own_project/conf`` reference
:func:`own_project.data.own3_splits` and :class:`own_project.encoders.GRUEncoder` by ``_target_``,
and ``extra_trusted_targets: [own_project.*]`` lets the framework instantiate them.
"""

from .data import own3_splits
from .encoders import GRUEncoder

__all__ = ["GRUEncoder", "own3_splits"]
