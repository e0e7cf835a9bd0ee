"""One way to run ``mlflow server`` in the tests: over one sqlite file, on one loopback port.

:class:`MlflowServer` starts the server (``--workers 1``, artifacts served from a folder beside the
store, no job execution), waits until ``/health`` answers, and stops its whole process group. The
port and the store stay the same across a stop and a start, so a test can simulate an outage (or a
server that comes up late) with the same object. ``tests/conftest.py`` builds the session-wide
``mlflow_server`` fixture on it; tests that stop, start or need a store of their own make their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.ports import free_port

MLFLOW = Path(sys.executable).with_name("mlflow")


class MlflowServer:
    """``mlflow server`` over ``db`` on ``port`` (a free one by default), started and stopped at will."""

    def __init__(
        self,
        db: Path,
        port: int | None = None,
        log: Path | None = None,
        artifacts: Path | None = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self.db = Path(db)
        self.port = free_port() if port is None else port
        self.log = Path(log) if log is not None else self.db.with_suffix(".log")
        self.artifacts = Path(artifacts) if artifacts is not None else self.db.parent / "artifacts"
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and return once ``/health`` answers (AssertionError if it never does)."""
        args = [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{self.db}", "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", "1", "--artifacts-destination", str(self.artifacts),
                "--serve-artifacts"]  # fmt: skip
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(
            args, env=env, stdout=self.log.open("a"), stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=1)
                return
            except OSError:
                assert self.process.poll() is None, self.log.read_text()[-2000:]
                time.sleep(0.25)
        self.stop()
        raise AssertionError(f"mlflow server did not start within {self.start_timeout:.0f} s")

    def stop(self) -> None:
        """SIGTERM to the server's process group (SIGKILL after ``stop_timeout``); a no-op when stopped."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
