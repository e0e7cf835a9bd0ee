"""Reading runs from MLflow: which runs count, how they group, and their metric histories.

A run *counts* when it is FINISHED, is not a report's summary run (tag ``summary=true``) and
has its final metrics. Everything else found is kept in :attr:`RunSet.excluded` with the reason,
so a report lists it instead of silently mixing it in or dropping it.

Runs group into *rows* by dataset, by the ``label`` tag (integrator and its non-default
hyper-parameters, or ``one_joint``) and by every other *swept* parameter: a parameter of the
resolved config that takes more than one value among runs of the same label, leaving out the
seed, parameters that just repeat the seed (``integrator.seed``) and bookkeeping
(``checkpoint.*``, ``tracking.*``...).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

MULTIMODAL = "multimodal"
SUMMARY_TAG = "summary"
"""Tag set to ``"true"`` on a report's summary run; such runs never count as training runs."""

BOOKKEEPING = frozenset(
    {
        "seed",
        "name",
        "resume",
        "device",
        "data_dir",
        "dataset.data_dir",
        "objective",
        "trusted_targets",
        "trainer.progress",
        "trainer.num_workers",
        "trainer.checkpoint_every",
        "trainer.eval_batch_size",
    }
)
BOOKKEEPING_PREFIXES = ("checkpoint.", "tracking.", "hydra.")
TARGET_SUFFIX = "._target_"
LABEL_ORDER = ("one_joint", "sum", "pcgrad", "mgda", "mmpareto")
FINAL_METRIC = f"best/test/acc/{MULTIMODAL}"


@dataclass
class RunRecord:
    """One MLflow run, flattened to what the analysis needs."""

    run_id: str
    name: str
    experiment: str
    status: str
    label: str
    seed: str
    dataset: str
    start_time: int
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def heads(self) -> list[str]:
        """``multimodal`` first, then the modalities, as found in the final metrics."""
        found = sorted(k.rsplit("/", 1)[1] for k in self.metrics if k.startswith("best/test/acc/"))
        return ([MULTIMODAL] if MULTIMODAL in found else []) + [h for h in found if h != MULTIMODAL]

    @property
    def modalities(self) -> list[str]:
        return [h for h in self.heads if h != MULTIMODAL]

    @property
    def epochs(self) -> int | None:
        value = self.params.get("trainer.epochs")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def groups(self) -> dict[str, list[str]]:
        """Parameter group -> the ``a.b`` loss pairs whose cosine is logged (``grad/G/cos/a.b``)."""
        return {g: sorted(p) for g, p in self._logged_by_group("cos").items()}

    def norm_groups(self) -> dict[str, list[str]]:
        """Parameter group -> losses whose per-step gradient norm is logged (``grad/G/norm/i``)."""
        return {g: _multimodal_first(v) for g, v in self._logged_by_group("norm").items()}

    def _logged_by_group(self, kind: str) -> dict[str, list[str]]:
        """Group -> the ``X`` of every ``grad/<group>/<kind>/X`` metric, groups sorted."""
        out: dict[str, list[str]] = defaultdict(list)
        for key in self.metrics:
            match = re.fullmatch(rf"grad/(.+)/{kind}/([^/]+)", key)
            if match:
                out[match.group(1)].append(match.group(2))
        return dict(sorted(out.items()))


@dataclass
class Excluded:
    run: RunRecord
    reason: str


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

    @property
    def datasets(self) -> list[str]:
        """Datasets in the order of the experiments asked for, then by name."""
        order = {name: i for i, name in enumerate(self.experiments)}
        first: dict[str, tuple] = {}
        for r in self.runs:
            key = (order.get(r.experiment, len(order)), r.dataset)
            first[r.dataset] = min(first.get(r.dataset, key), key)
        return sorted(first, key=first.get)

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
        extra = [f"{short_param(p)}={v}" for p, v in zip(self.swept.get(dataset, []), key[1:])]
        return ", ".join([key[0], *extra])

    def rows(self, dataset: str) -> dict[tuple[str, ...], list[RunRecord]]:
        """Row key -> its runs (one per seed), rows in a stable, paper-like order."""
        grouped: dict[tuple[str, ...], list[RunRecord]] = defaultdict(list)
        for run in self.in_dataset(dataset):
            grouped[self.row_key(run)].append(run)
        ordered = sorted(grouped, key=lambda k: (label_sort_key(k[0]), [_value_sort_key(v) for v in k[1:]]))
        return {k: sorted(grouped[k], key=lambda r: _value_sort_key(r.seed)) for k in ordered}

    def blocks_by_groups(self, dataset: str) -> list[tuple[str, dict[tuple[str, ...], list[RunRecord]]]]:
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
            inside = list(zip(*(k for k, s in group_sets.items() if s == groups)))[1:]  # per swept param
            outside = list(zip(*(k for k, s in group_sets.items() if s and s != groups)))[1:]
            own = [
                f"{short_param(p)}={mine[0]}"
                for p, mine, theirs in zip(params, inside, outside)
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


def short_param(name: str) -> str:
    if name.endswith(TARGET_SUFFIX) and name != TARGET_SUFFIX[1:]:
        return name[: -len(TARGET_SUFFIX)]  # model._target_ -> model
    return name.split(".", 1)[1] if name.startswith(("integrator.", "trainer.", "dataset.")) else name


def label_sort_key(label: str) -> tuple:
    base = label.split("(", 1)[0]
    rank = LABEL_ORDER.index(base) if base in LABEL_ORDER else len(LABEL_ORDER)
    return (rank, base, label != base, label)


def _value_sort_key(value: str) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _multimodal_first(names: Iterable[str]) -> list[str]:
    names = sorted(set(names))
    return ([MULTIMODAL] if MULTIMODAL in names else []) + [n for n in names if n != MULTIMODAL]


def dataset_name(params: Mapping[str, str], experiment: str) -> str:
    """``framework.data.cgmnist.cgmnist_splits`` -> ``cgmnist``; the experiment if unknown."""
    target = params.get("dataset._target_")
    if not target:
        return experiment
    leaf = target.rsplit(".", 1)[-1]
    return re.sub(r"_splits$", "", leaf) or experiment


# ---------------------------------------------------------------------------------------------
# Filters


@dataclass(frozen=True)
class Filter:
    """``key=value``: ``key`` a param or a tag (``params.K`` / ``tags.K`` to say which)."""

    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Filter:
        if "=" not in text:
            raise ValueError(f"--filter expects key=value, got {text!r}")
        key, value = text.split("=", 1)
        if not key.strip():
            raise ValueError(f"--filter expects key=value, got {text!r}")
        return cls(key.strip(), value.strip())

    def values_of(self, run: RunRecord) -> list[str]:
        if self.key.startswith("params."):
            found = [run.params.get(self.key[7:])]
        elif self.key.startswith("tags."):
            found = [run.tags.get(self.key[5:])]
        elif self.key == "status":
            found = [run.status]
        else:
            found = [run.params.get(self.key), run.tags.get(self.key)]
        return [v for v in found if v is not None]


def matches(run: RunRecord, filters: Sequence[Filter]) -> bool:
    """Filters on different keys must all hold; several values for one key are alternatives."""
    by_key: dict[str, list[Filter]] = defaultdict(list)
    for f in filters:
        by_key[f.key].append(f)
    return all(any(f.value in f.values_of(run) for f in group) for group in by_key.values())


# ---------------------------------------------------------------------------------------------
# Loading


def _record(run, experiment: str) -> RunRecord:
    tags = {k: v for k, v in run.data.tags.items()}
    params = dict(run.data.params)
    name = run.info.run_name or tags.get("mlflow.runName", run.info.run_id)
    seed = tags.get("seed", params.get("seed", ""))
    label = tags.get("label") or re.sub(r"-seed\d+$", "", name) or tags.get("integrator", "unknown")
    return RunRecord(
        run_id=run.info.run_id,
        name=name,
        experiment=experiment,
        status=run.info.status,
        label=label,
        seed=str(seed),
        dataset=dataset_name(params, experiment),
        start_time=int(run.info.start_time or 0),
        params=params,
        tags=tags,
        metrics=dict(run.data.metrics),
    )


def search_all(client: MlflowClient, experiment_ids: list[str]) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def load_runs(
    client: MlflowClient, experiments: Sequence[str], filters: Sequence[Filter] = ()
) -> RunSet:
    """All runs of ``experiments`` that pass ``filters``, split into counted and excluded."""
    ids: dict[str, str] = {}
    for name in experiments:
        found = client.get_experiment_by_name(name)
        if found is None:
            known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
            raise ValueError(f"no MLflow experiment named {name!r} (known: {known})")
        ids[found.experiment_id] = name
    records = [_record(run, ids[run.info.experiment_id]) for run in search_all(client, list(ids))]
    records = [r for r in records if r.tags.get(SUMMARY_TAG, "").lower() != "true"]
    records = [r for r in records if matches(r, filters)]

    counted: list[RunRecord] = []
    excluded: list[Excluded] = []
    for record in sorted(records, key=lambda r: (r.experiment, r.start_time)):
        if record.status == "FINISHED":
            if FINAL_METRIC in record.metrics:
                counted.append(record)
            else:
                excluded.append(Excluded(record, f"finished without the final metric {FINAL_METRIC}"))
        elif record.status in ("RUNNING", "SCHEDULED"):
            excluded.append(Excluded(record, f"unfinished ({record.status}: still running, or died unclosed)"))
        else:
            error = record.tags.get("error", "")
            excluded.append(Excluded(record, record.status + (f": {error}" if error else "")))

    swept, aliases = {}, {}
    for dataset in sorted({r.dataset for r in counted}):
        swept[dataset], aliases[dataset] = swept_params([r for r in counted if r.dataset == dataset])
    targets = {d: _target_names([r for r in counted if r.dataset == d], params) for d, params in swept.items()}
    runset = RunSet(counted, excluded, swept, aliases, list(experiments), targets)

    # The same row and seed twice (a rerun): keep the newest, list the others.
    latest: dict[tuple, RunRecord] = {}
    for record in counted:
        key = (record.dataset, runset.row_key(record), record.seed)
        if key in latest:
            older = latest[key] if latest[key].start_time <= record.start_time else record
            newer = record if older is latest[key] else latest[key]
            excluded.append(Excluded(older, f"superseded by the newer run {newer.run_id} (same row and seed)"))
            latest[key] = newer
        else:
            latest[key] = record
    keep = {r.run_id for r in latest.values()}
    runset.runs = [r for r in counted if r.run_id in keep]
    return runset


def swept_params(runs: Sequence[RunRecord]) -> tuple[list[str], dict[str, list[str]]]:
    """Parameters that vary among runs of one label, besides seed and bookkeeping."""
    names = sorted({p for r in runs for p in r.params})
    candidates = []
    for name in names:
        if name in BOOKKEEPING or name.startswith(BOOKKEEPING_PREFIXES):
            continue
        having = [r for r in runs if name in r.params]
        if having and all(r.params[name] == r.params.get("seed", r.seed) for r in having) and len(
            {r.params[name] for r in having}
        ) > 1:
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


# ---------------------------------------------------------------------------------------------
# Metric histories


class Histories:
    """Cached ``get_metric_history`` as DataFrames (``step``, ``value``), fetched only on demand."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self._cache: dict[tuple[str, str], pd.DataFrame] = {}
        self.calls = 0

    def get(self, run: RunRecord, key: str) -> pd.DataFrame:
        cache_key = (run.run_id, key)
        if cache_key not in self._cache:
            if key in run.metrics:
                self.calls += 1
                history = self.client.get_metric_history(run.run_id, key)
                frame = pd.DataFrame(
                    {"step": [m.step for m in history], "value": [m.value for m in history]},
                    columns=["step", "value"],
                )
                # A resumed run may repeat steps: keep the last value logged for each.
                frame = frame.drop_duplicates("step", keep="last").sort_values("step", kind="stable")
            else:
                frame = pd.DataFrame({"step": pd.Series(dtype=int), "value": pd.Series(dtype=float)})
            self._cache[cache_key] = frame.reset_index(drop=True)
        return self._cache[cache_key]

    def steps_per_epoch(self, run: RunRecord, step_key: str) -> float | None:
        """Training steps per epoch, from the last logged step of a step-level metric."""
        frame = self.get(run, step_key)
        epochs = run.epochs
        if frame.empty or not epochs:
            return None
        return float(math.ceil((int(frame["step"].max()) + 1) / epochs))


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; NaN for one value) and count, NaNs dropped."""
    array = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if array.size == 0:
        return math.nan, math.nan, 0
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return float(array.mean()), std, int(array.size)
