"""``python -m framework.bench --world-size 2 --quick``: both paths run on two gloo ranks."""

from __future__ import annotations

import pytest

from framework.bench.cli import main

pytestmark = pytest.mark.distributed


def test_world_size_two_reports_step_time_and_bytes_for_ddp_sum_and_per_loss_mmpareto(tmp_path, capsys):
    results = main(
        [
            "--world-size",
            "2",
            "--quick",
            "--models",
            "transformer_xmodal",
            "--rounds",
            "1",
            "--json",
            str(tmp_path / "bench.json"),
        ]
    )
    rows = results["transformer_xmodal"]
    assert rows["sum"]["path"] == "ddp" and rows["mmpareto"]["path"] == "per_loss"
    assert rows["mmpareto"]["bytes_per_step"] > rows["sum"]["bytes_per_step"] > 0
    assert rows["sum"]["ring8_mb"] == pytest.approx(1.75 * rows["sum"]["bytes_per_step"] / 2**20)
    assert "ring8 MB/rank" in capsys.readouterr().out
