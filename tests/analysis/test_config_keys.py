"""Bookkeeping keys (framework.config.keys) against the config and Hydra's checkpoint-folder list."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from framework.config.keys import BOOKKEEPING, is_bookkeeping
from framework.tracking import flatten

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_keys_left_out_of_the_checkpoint_folder_name_are_bookkeeping():
    """A config key that does not name a job's checkpoint folder cannot tell runs apart (the
    converse does not hold: the seed names the folder and is bookkeeping)."""
    train = OmegaConf.load(CONF / "train.yaml")
    excluded = list(train.hydra.job.config.override_dirname.exclude_keys)
    groups = {next(iter(entry)) for entry in train.defaults if not isinstance(entry, str)}
    config_keys = [k for k in excluded if not k.startswith("hydra.") and k not in groups]
    assert config_keys, excluded
    assert [k for k in config_keys if not is_bookkeeping(k)] == []
    assert not {"seed", "name"} & set(excluded)  # they must name different jobs' folders


def test_every_exact_bookkeeping_key_is_a_key_of_the_default_config():
    """No stale names: each exact key is in the flattened default config (as MLflow logs it)."""
    train = OmegaConf.to_container(OmegaConf.load(CONF / "train.yaml"))
    train.pop("hydra")
    train.pop("defaults")
    keys = set(flatten(train))
    dataset = OmegaConf.to_container(OmegaConf.load(CONF / "dataset" / "cgmnist.yaml"))
    keys |= {f"dataset.{k}" for k in flatten(dataset)}
    assert sorted(BOOKKEEPING - keys) == []
    assert is_bookkeeping("checkpoint.dir") and is_bookkeeping("tracking.uri") and not is_bookkeeping("optimizer.lr")
