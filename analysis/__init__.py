"""Paper-style tables, figures and claim checks from the runs in MLflow.

Entry point: ``python -m analysis.report --experiment NAME --out DIR`` (see :mod:`analysis.report`).
"""

from .runs import Excluded, RunRecord, RunSet, load_runs

__all__ = ["Excluded", "RunRecord", "RunSet", "load_runs"]
