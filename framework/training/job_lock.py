"""One live process per job: a lock file in the job's checkpoint folder.

``<checkpoint dir>/job.lock`` holds the holder's PID, host, scheduler job and a random token
(JSON); its modification time is the holder's heartbeat, renewed by a daemon thread every
``heartbeat_s`` seconds. A second process for the same job refuses to start (:class:`JobLocked`,
one line naming the holder's PID and host) while the holder lives. A lock is stale, and taken
over, when its holder's PID is dead on this host, when its holder was this same scheduler job
(a requeue: the scheduler runs one instance of a job id at a time, so the earlier one is gone,
maybe on another host), or when its heartbeat is older than ``$FRAMEWORK_LOCK_STALE_S`` seconds
(default 300: a holder on another host, or one that hangs).

The lock is created with ``link()`` of a private file, which is atomic and fails when the name
exists (also on NFS). A takeover first takes ``job.lock.takeover`` (created exclusively, itself
stale after a few seconds), checks that the lock is still the stale one it read, and only then
replaces it, so two processes that find the same stale lock cannot both take it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

from .checkpoint import current_job

LOCK_NAME = "job.lock"
TAKEOVER_STALE_S = 10.0

log = logging.getLogger("framework")


class JobLocked(RuntimeError):
    """Another live process holds the job's lock."""


def stale_after_s() -> float:
    """``$FRAMEWORK_LOCK_STALE_S`` (default 300): a heartbeat older than this is a dead holder's."""
    return float(os.environ.get("FRAMEWORK_LOCK_STALE_S", "300"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _read(path: Path) -> tuple[dict[str, Any], float] | None:
    """The holder's record and the lock's heartbeat (mtime); None when there is no lock."""
    try:
        text = path.read_text(encoding="utf-8")
        heartbeat = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        holder = {}
    return (holder if isinstance(holder, dict) else {}), heartbeat


def stale_reason(holder: dict[str, Any], heartbeat: float, stale_s: float) -> str | None:
    """Why the lock of ``holder`` may be taken over, or None while its holder lives."""
    age = time.time() - heartbeat
    job = current_job()
    if job is not None and holder.get("job") == job:
        return f"it is an earlier run of this job ({job}), requeued"
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return f"its process {pid} is gone"
    if age > stale_s:
        return f"its heartbeat is {age:.0f} s old (> {stale_s:.0f} s)"
    if not holder:
        return "it is unreadable" if age > TAKEOVER_STALE_S else None
    return None


class JobLock:
    """The lock of the job whose checkpoints live in ``folder``; :meth:`acquire`, :meth:`release`."""

    def __init__(self, folder: str | Path, heartbeat_s: float | None = None, stale_s: float | None = None) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.stale_s = stale_after_s() if stale_s is None else stale_s
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else max(1.0, min(30.0, self.stale_s / 10))
        self.record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "job": current_job(),
            "token": uuid.uuid4().hex,
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`JobLocked` naming the live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            if self._link():
                self._start_heartbeat()
                return
            found = _read(self.path)
            if found is None:
                continue  # released in between
            holder, heartbeat = found
            reason = stale_reason(holder, heartbeat, self.stale_s)
            if reason is None:
                raise JobLocked(
                    f"job {self.path.parent} is already running: process {holder.get('pid', '?')} on host "
                    f"{holder.get('host', '?')} holds {self.path} (heartbeat {time.time() - heartbeat:.0f} s ago)"
                )
            if self._take_over(holder, reason):
                self._start_heartbeat()
                return
            time.sleep(0.05)
        raise JobLocked(f"could not take {self.path}: other processes keep taking it")

    def _link(self) -> bool:
        private = self.path.with_name(f".{LOCK_NAME}.{self.record['token']}")
        private.write_text(json.dumps(self.record), encoding="utf-8")
        try:
            os.link(private, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            private.unlink(missing_ok=True)

    def _take_over(self, stale: dict[str, Any], reason: str) -> bool:
        guard = self.path.with_name(f"{LOCK_NAME}.takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            with suppress(FileNotFoundError):
                if time.time() - guard.stat().st_mtime > TAKEOVER_STALE_S:
                    guard.unlink()  # its taker died in the middle
            return False
        os.close(fd)
        try:
            found = _read(self.path)
            if found is not None and found[0] != stale:
                return False  # someone else took it: look again
            self.path.unlink(missing_ok=True)
            if not self._link():
                return False
        finally:
            guard.unlink(missing_ok=True)
        log.warning(
            "took over the stale lock %s of process %s on host %s (%s)",
            self.path,
            stale.get("pid", "?"),
            stale.get("host", "?"),
            reason,
        )
        return True

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="job-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.held():
                log.warning("lost the job lock %s to another process", self.path)
                return
            with suppress(OSError):
                os.utime(self.path)

    def held(self) -> bool:
        found = _read(self.path)
        return found is not None and found[0].get("token") == self.record["token"]

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still this process's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.held():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> JobLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
