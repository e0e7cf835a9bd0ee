"""Every config composes, and every experiment preset runs in a fast mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from framework.config import build
from framework.integrators import get_integrator

CONF = Path(__file__).resolve().parents[2] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in ("dataset", "model", "loss", "integrator", "optimizer", "scheduler") for o in options(g)]
)
def test_every_config_option_composes_and_resolves(compose_cfg, group, option):
    cfg = compose_cfg(f"{group}={option}")
    OmegaConf.resolve(cfg)
    assert cfg[group] is not None


@pytest.mark.parametrize("name", sorted(INTEGRATOR := [p.stem for p in (CONF / "integrator").glob("*.yaml")]))
def test_integrator_configs_build(compose_cfg, name):
    cfg = compose_cfg(f"integrator={name}")
    assert get_integrator(**cfg.integrator).name == name


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_optimizer_configs_build(compose_cfg, name):
    import torch

    cfg = compose_cfg(f"optimizer={name}")
    optimizer = build(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.Optimizer)
