"""Row order: one_joint, then the integrator registry's order, then unknown labels alphabetically."""

from __future__ import annotations

from analysis.grouping import ONE_JOINT, label_sort_key
from framework.integrators import INTEGRATORS


def test_labels_follow_one_joint_then_the_registry_then_unknown_alphabetically(monkeypatch):
    monkeypatch.setitem(INTEGRATORS, "zz_registered_last", object)  # a newly registered method
    registered = list(INTEGRATORS)
    labels = ["zeta", "alpha(x=1)", "alpha", f"{registered[0]}(p=2)", *reversed(registered), ONE_JOINT]
    expected = [ONE_JOINT, registered[0], f"{registered[0]}(p=2)", *registered[1:], "alpha", "alpha(x=1)", "zeta"]
    assert sorted(labels, key=label_sort_key) == expected
