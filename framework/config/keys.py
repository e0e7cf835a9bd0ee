"""Bookkeeping config keys: flattened config params (as MLflow logs them) that never tell runs apart.

A run's params are its resolved config flattened to dotted keys (``trainer.epochs``). Two runs of
the same label whose params differ *only* in bookkeeping keys are repeats of one experiment: the
analysis groups them into one table row (see ``analysis.grouping``). Bookkeeping is where a run
writes, how fast or verbosely it runs, or what it is called, never what it computes:
:data:`BOOKKEEPING` (exact keys) and :data:`BOOKKEEPING_PREFIXES` (whole subtrees). The seed is
bookkeeping here because seeds are the repeats a row averages over.

Not the same list: ``hydra.job.config.override_dirname.exclude_keys`` in ``conf/train.yaml``.
That one lists command-line *overrides* left out of the job's override string, which names the
job's checkpoint folder (``checkpoint.dir``); two jobs that share a folder resume each other. It
must keep every key that makes a different job, the seed above all, and it also names Hydra
choices that are no config key at all (``hydra.launcher``, ``hydra.sweeper``, the
``hparams_search`` group). The two agree in one direction only: a config key that does not name a
checkpoint folder (``resume``, ``trainer.progress``, ``tracking.uri``) cannot tell runs apart, so
it is bookkeeping (``tests/analysis/test_config_keys.py`` checks this). Hydra reads the exclude
list while it composes the config, before any of our code could supply it, so it stays in the
YAML.
"""

from __future__ import annotations

BOOKKEEPING: frozenset[str] = frozenset(
    {
        "seed",
        "name",
        "resume",
        "device",
        "data_dir",
        "dataset.data_dir",
        "objective",
        "trusted_targets",
        "extra_trusted_targets",
        "trainer.progress",
        "trainer.num_workers",
        "trainer.pin_memory",
        "trainer.persistent_workers",
        "trainer.prefetch_factor",
        "trainer.checkpoint_every",
        "trainer.eval_batch_size",
    }
)
"""Flattened config keys that never tell runs apart."""

BOOKKEEPING_PREFIXES: tuple[str, ...] = ("checkpoint.", "tracking.", "hydra.")
"""Subtrees of bookkeeping keys: where checkpoints go, where and how runs are tracked, Hydra's own."""


def is_bookkeeping(key: str) -> bool:
    """Whether the flattened config key ``key`` is bookkeeping (never tells runs apart)."""
    return key in BOOKKEEPING or key.startswith(BOOKKEEPING_PREFIXES)
