"""One run per job at a time: an advisory lock file per job in the state dir.

The lock is an `flock` on `locks/<job>.lock`; the kernel drops it when the holder dies,
however it dies, so a lock left by a killed process is simply free. The file's content
(pid, host, run id) only serves the refusal message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import IO

from batchrun.errors import EnvironmentProblem, RunActiveError
from batchrun.private import private_dir, private_file


class JobLock:
    def __init__(self, state_dir: Path, job: str) -> None:
        self.path = Path(state_dir) / "locks" / f"{job}.lock"
        self.job = job
        self._handle: IO[str] | None = None

    def acquire(self, run_id: str = "") -> JobLock:
        try:
            private_dir(private_dir(self.path.parent.parent) / self.path.parent.name)
            handle = open(private_file(self.path), "a+")  # noqa: SIM115 - held while locked
        except OSError as exc:
            raise EnvironmentProblem(f"cannot create lock {self.path}: {exc}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            handle.close()
            raise RunActiveError(self.job, str(holder.get("run_id", "?")),
                                 int(str(holder.get("pid", 0))), str(holder.get("host", "?"))) from None
        self._handle = handle
        self.describe(run_id)
        return self

    def describe(self, run_id: str) -> None:
        """Record who holds the lock (shown to anyone refused). Best effort: on a full
        state dir the lock still holds, and the catalog reports the full disk."""
        if self._handle is None:
            return
        try:
            self._handle.seek(0)
            self._handle.truncate()
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id},
                      self._handle)
            self._handle.flush()
        except OSError:
            pass

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):  # an unwritten holder note on a full disk
                self._handle.close()
            self._handle = None

    def __enter__(self) -> JobLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(handle: IO[str]) -> dict[str, object]:
    handle.seek(0)
    try:
        return dict(json.loads(handle.read() or "{}"))
    except ValueError:
        return {}


def process_alive(pid: int | None, host: str | None) -> bool:
    """Whether a recorded driver is still alive (only knowable on the same host)."""
    if not pid or host != socket.gethostname():
        return host != socket.gethostname() and bool(pid)
    return pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine is alive (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
