"""The console: one line per epoch with the train losses, validation accuracy, conflict rate per
group and the time taken."""

from __future__ import annotations

import logging
import re

import pytest

from framework.main import train

LINE = re.compile(
    r"^epoch (\d+)/2  loss multimodal \d+\.\d{3} strong \d+\.\d{3} weak \d+\.\d{3}  val acc \d\.\d{4}"
    r"  conflict rate encoder\.strong \d\.\d\d encoder\.weak \d\.\d\d  \(\d+\.\d s\)$"
)


def test_one_line_per_epoch(compose_cfg, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="framework"):
        train(compose_cfg("experiment=smoke"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [LINE.match(line).group(1) for line in lines] == ["1", "2"], lines
