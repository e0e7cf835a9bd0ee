"""analysis.clip_binding counts conflict steps whose two-loss weight lies outside [0.001, 0.999]."""

from __future__ import annotations

import pandas as pd

from analysis.clip_binding import count_outside


def frame(steps, values) -> pd.DataFrame:
    return pd.DataFrame({"step": steps, "value": values})


def test_counts_only_conflict_steps_outside_the_clip():
    # w = 2a: a = 0.0005 (outside), 0.5, 0.9995 (outside), 0.0015 (inside), 0.0001 on a step without conflict
    weights = frame([0, 1, 2, 3, 4, 9], [0.001, 1.0, 1.999, 0.003, 0.0002, 0.0001])
    conflicts = frame([0, 1, 2, 3, 4, 5], [1.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    count = count_outside(weights, conflicts)
    assert (count.steps, count.conflicts, count.outside) == (5, 4, 2)


def test_the_edges_of_the_clip_are_inside():
    count = count_outside(frame([0, 1], [0.002, 1.998]), frame([0, 1], [1.0, 1.0]))
    assert count.outside == 0
