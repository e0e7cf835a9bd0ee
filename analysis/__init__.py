"""Paper-style tables, figures and claim checks from the runs in MLflow.

Entry point: ``python -m analysis.report --experiment NAME --out DIR`` (see :mod:`analysis.report`).
Modules: :mod:`~analysis.records` (one run), :mod:`~analysis.loading` (which runs count, filters,
metric histories), :mod:`~analysis.grouping` (rows, their names and order, means over seeds),
:mod:`~analysis.tables`, :mod:`~analysis.figures`, :mod:`~analysis.claims`, :mod:`~analysis.report`.
"""

from .grouping import RunSet
from .loading import load_runs
from .records import Excluded, RunRecord

__all__ = ["Excluded", "RunRecord", "RunSet", "load_runs"]
