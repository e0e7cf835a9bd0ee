"""``distributed.shutdown`` ends the process group while the interpreter is alive: no gloo thread is
left to be cut off during finalization (which aborted ranks at exit: "terminate called without
an active exception"), even after an optimizer imported ``torch._dynamo``, which pins a group
created before it was imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.ports import free_port

pytestmark = [pytest.mark.distributed]

ROOT = Path(__file__).resolve().parents[2]

RANK = textwrap.dedent(
    """
    import os, sys, torch
    import torch.distributed as dist
    from framework.training import distributed

    def gloo_threads():
        names = []
        for task in os.listdir("/proc/self/task"):
            try:
                names.append(open(f"/proc/self/task/{task}/comm").read().strip())
            except OSError:
                pass
        return sum(name.startswith(("pt_gloo", "gloo")) for name in names)

    context = distributed.init(distributed.DistributedSettings(timeout_s=60), "cpu")
    model = torch.nn.Linear(4, 2)
    torch.optim.Adam(model.parameters())  # imports torch._dynamo, after the group exists
    distributed.DataParallel(context, model)  # collectives: rank 0's weights on every rank
    context.sum([float(context.rank)])
    running = gloo_threads()
    distributed.shutdown()
    print(running, gloo_threads(), dist.is_initialized())
    """
)


def test_shutdown_joins_every_gloo_thread_after_an_optimizer_imported_dynamo(tmp_path):
    port = str(free_port())
    ranks = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        }
        ranks.append(
            subprocess.Popen(
                [sys.executable, "-c", RANK], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    for process in ranks:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()[-3000:]
        running, left, initialized = out.decode().split()
        assert int(running) >= 2, "gloo's worker threads run while the group exists"
        assert (int(left), initialized) == (0, "False"), "shutdown leaves no gloo thread behind"
