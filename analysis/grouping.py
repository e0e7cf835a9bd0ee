"""How runs group into table rows, how rows are named and ordered, and means over a row's seeds.

Runs group into *rows* by dataset, by the ``label`` tag (integrator and its non-default
hyper-parameters, or ``one_joint``) and by every other *swept* parameter: a parameter of the
resolved config that takes more than one value among runs of the same label, leaving out the
seed, parameters that just repeat the seed (``integrator.seed``) and bookkeeping
(:mod:`framework.config.keys`: ``checkpoint.*``, ``tracking.*``...).

Rows are ordered by label: ``one_joint`` first, then the integrators in the order of the
registry (:data:`framework.integrators.INTEGRATORS`), then unknown labels alphabetically; a
label with parameters (``sum(scale=1.5)``) right after its bare integrator.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from framework.config.keys import is_bookkeeping
from framework.integrators import INTEGRATORS
from framework.metric_names import MEAN, MULTIMODAL

from .records import Excluded, RunRecord

ONE_JOINT = "one_joint"
"""The label of the one-joint-loss baseline (the unimodal heads are probes)."""

TARGET_SUFFIX = "._target_"

Rows = dict[tuple[str, ...], list[RunRecord]]
"""Row key ``(label, value of each swept parameter)`` -> its runs, one per seed."""


@dataclass
class RunSet:
    """The runs that count, the ones left out (with why) and the swept parameters per dataset."""

    runs: list[RunRecord]
    excluded: list[Excluded]
    swept: dict[str, list[str]]
    """Dataset -> swept parameters (besides the label), in column order."""
    aliases: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """Dataset -> swept parameter -> other parameters that vary exactly with it (not shown)."""

    experiments: list[str] = field(default_factory=list)
    """The experiments read, in the order asked for."""

    target_names: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    """Dataset -> swept ``_target_`` parameter -> value -> the class name tables show, when
    class names still tell that dataset's targets apart (else absent: shown in full)."""

    @classmethod
    def of(cls, counted: Sequence[RunRecord], excluded: Sequence[Excluded], experiments: Sequence[str]) -> RunSet:
        """Group the ``counted`` runs (in start order); of the same row and seed twice (a rerun),
        keep the newest and add the others to ``excluded``."""
        counted = list(counted)
        swept, aliases = {}, {}
        for dataset in sorted({r.dataset for r in counted}):
            swept[dataset], aliases[dataset] = swept_params([r for r in counted if r.dataset == dataset])
        targets = {d: _target_names([r for r in counted if r.dataset == d], params) for d, params in swept.items()}
        runset = cls(counted, list(excluded), swept, aliases, list(experiments), targets)

        latest: dict[tuple, RunRecord] = {}
        for record in counted:
            key = (record.dataset, runset.row_key(record), record.seed)
            if key in latest:
                older = latest[key] if latest[key].start_time <= record.start_time else record
                newer = record if older is latest[key] else latest[key]
                reason = f"superseded by the newer run {newer.run_id} (same row and seed)"
                runset.excluded.append(Excluded(older, reason))
                latest[key] = newer
            else:
                latest[key] = record
        keep = {r.run_id for r in latest.values()}
        runset.runs = [r for r in counted if r.run_id in keep]
        return runset

    @property
    def datasets(self) -> list[str]:
        """Datasets in the order of the experiments asked for, then by name."""
        order = {name: i for i, name in enumerate(self.experiments)}
        first: dict[str, tuple] = {}
        for r in self.runs:
            key = (order.get(r.experiment, len(order)), r.dataset)
            first[r.dataset] = min(first.get(r.dataset, key), key)
        return sorted(first, key=first.__getitem__)

    def in_dataset(self, dataset: str) -> list[RunRecord]:
        return [r for r in self.runs if r.dataset == dataset]

    def row_key(self, run: RunRecord) -> tuple[str, ...]:
        """``(label, value of each swept parameter)``: the table row the run belongs to."""
        return (run.label, *(self.value(run, p) for p in self.swept.get(run.dataset, [])))

    def value(self, run: RunRecord, param: str) -> str:
        """The run's value of ``param`` as tables show it: ``-`` when it has none; a ``_target_``
        by its class name when that still tells the dataset's targets apart."""
        value = run.params.get(param, "-")
        return self.target_names.get(run.dataset, {}).get(param, {}).get(value, value)

    def row_name(self, dataset: str, key: tuple[str, ...]) -> str:
        """A legend entry for a row: the label, plus ``param=value`` for swept parameters."""
        extra = [f"{short_param(p)}={v}" for p, v in zip(self.swept.get(dataset, []), key[1:], strict=False)]
        return ", ".join([key[0], *extra])

    def rows(self, dataset: str) -> Rows:
        """Row key -> its runs (one per seed), rows in a stable, paper-like order."""
        grouped: Rows = defaultdict(list)
        for run in self.in_dataset(dataset):
            grouped[self.row_key(run)].append(run)
        ordered = sorted(grouped, key=lambda k: (label_sort_key(k[0]), [_value_sort_key(v) for v in k[1:]]))
        return {k: sorted(grouped[k], key=lambda r: _value_sort_key(r.seed)) for k in ordered}

    def blocks_by_groups(self, dataset: str) -> list[tuple[str, Rows]]:
        """The rows split by the parameter groups their runs log (models with different groups:
        one block each), as ``(what sets the block apart, rows)``; one block, named ``""``, when
        all rows have the same groups. Rows without any group (one joint loss) join every block."""
        rows = self.rows(dataset)
        group_sets = {k: frozenset(g for r in runs for g in r.norm_groups()) for k, runs in rows.items()}
        distinct = list(dict.fromkeys(s for s in group_sets.values() if s))
        if len(distinct) <= 1:
            return [("", rows)]
        blocks = []
        params = self.swept.get(dataset, [])
        for groups in distinct:
            inside = list(zip(*(k for k, s in group_sets.items() if s == groups), strict=False))[1:]  # per swept param
            outside = list(zip(*(k for k, s in group_sets.items() if s and s != groups), strict=False))[1:]
            own = [
                f"{short_param(p)}={mine[0]}"
                for p, mine, theirs in zip(params, inside, outside, strict=False)
                if len(set(mine)) == 1 and mine[0] not in theirs
            ]
            name = ", ".join(own) or "groups " + ", ".join(sorted(groups))
            blocks.append((name, {k: v for k, v in rows.items() if group_sets[k] in (groups, frozenset())}))
        return blocks

    def modalities(self, dataset: str) -> list[str]:
        seen: list[str] = []
        for run in self.in_dataset(dataset):
            seen.extend(m for m in run.modalities if m not in seen)
        return seen

    def heads(self, dataset: str) -> list[str]:
        """The heads with a final accuracy in the dataset's runs: ``multimodal`` and the modalities
        (multimodal models), or the tasks and their ``mean`` last (multi-task models)."""
        found = {h for run in self.in_dataset(dataset) for h in run.heads}
        heads = [h for h in [MULTIMODAL, *self.modalities(dataset)] if h in found and h != MEAN]
        return [*heads, MEAN] if MEAN in found else heads


def short_param(name: str) -> str:
    if name.endswith(TARGET_SUFFIX) and name != TARGET_SUFFIX[1:]:
        return name[: -len(TARGET_SUFFIX)]  # model._target_ -> model
    return name.split(".", 1)[1] if name.startswith(("integrator.", "trainer.", "dataset.")) else name


def label_order() -> tuple[str, ...]:
    """``one_joint``, then the registered integrators in registration order."""
    return (ONE_JOINT, *INTEGRATORS)


def label_sort_key(label: str) -> tuple:
    """Known labels in :func:`label_order`, unknown ones after, alphabetically; ``base(params)``
    right after ``base``."""
    order = label_order()
    base = label.split("(", 1)[0]
    rank = order.index(base) if base in order else len(order)
    return (rank, base, label != base, label)


def _value_sort_key(value: str) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def swept_params(runs: Sequence[RunRecord]) -> tuple[list[str], dict[str, list[str]]]:
    """Parameters that vary among runs of one label, besides seed and bookkeeping."""
    names = sorted({p for r in runs for p in r.params})
    candidates = []
    for name in names:
        if is_bookkeeping(name):
            continue
        having = [r for r in runs if name in r.params]
        if (
            having
            and all(r.params[name] == r.params.get("seed", r.seed) for r in having)
            and len({r.params[name] for r in having}) > 1
        ):
            continue  # interpolated from the seed, e.g. integrator.seed: ${seed}
        by_label: dict[str, set] = defaultdict(set)
        for r in runs:
            by_label[r.label].add(r.params.get(name))
        if any(len(values) > 1 for values in by_label.values()):
            candidates.append(name)

    # Parameters that vary together (trainer.epochs and scheduler.T_max): show one. The one shown
    # is set in every run if possible, and a _target_ (it names what differs) before the rest.
    def shown_first(name: str) -> tuple:
        return (sum(name not in r.params for r in runs), not name.endswith(TARGET_SUFFIX), len(name), name)

    kept: list[str] = []
    aliases: dict[str, list[str]] = {}
    partitions: dict[tuple, str] = {}
    for name in sorted(candidates, key=shown_first):
        partition = _partition(runs, name)
        if partition in partitions:
            aliases.setdefault(partitions[partition], []).append(name)
            continue
        partitions[partition] = name
        kept.append(name)
    return sorted(kept), aliases


def _target_names(runs: Sequence[RunRecord], params: Sequence[str]) -> dict[str, dict[str, str]]:
    """Swept ``_target_`` parameter -> value -> class name, where class names are unambiguous."""
    names = {}
    for param in params:
        if not param.endswith(TARGET_SUFFIX):
            continue
        targets = {r.params[param] for r in runs if param in r.params}
        short = {t: t.rsplit(".", 1)[-1] for t in targets}
        if len(set(short.values())) == len(targets):
            names[param] = short
    return names


def _partition(runs: Sequence[RunRecord], name: str) -> tuple:
    first_seen: dict[str | None, int] = {}
    return tuple(first_seen.setdefault(r.params.get(name), len(first_seen)) for r in runs)


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; NaN for one value) and count over a row's runs,
    NaNs dropped."""
    array = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if array.size == 0:
        return math.nan, math.nan, 0
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return float(array.mean()), std, int(array.size)
