"""What a killed batchrun driver leaves of the local Ray instance it started, and its removal.

A driver that ends normally stops its instance and removes the session folder
(`ray_session.shutdown_local`). A driver killed with SIGKILL cannot: its GCS, raylet and
dashboard die with it within a second, but the raylet's dashboard agent and runtime-env
agent (reparented to init) first try to report the raylet's death to the dead GCS, with
a 60 s timeout, and so live on for ~65 s; the session folder stays for good.

So batchrun marks the session folder of each local instance it starts with a MARKER file
naming its driver ("PID:START_TIME": a reused pid is another process). The next local
start removes what belongs to a driver that no longer runs: the processes that still
hold files open in such a folder (SIGKILL; their own titles and environments are
overwritten by Ray, their open log files are not), then the folder. A cluster's
processes, another user's Ray and any session batchrun did not start have no marker and
are never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from loguru import logger

MARKER = "batchrun-driver"


@dataclass(frozen=True)
class Reaped:
    processes: int
    folders: int


def this_driver() -> str:
    """This process's mark: its pid and start time (a reused pid is another process)."""
    return f"{os.getpid()}:{psutil.Process().create_time():.2f}"


def driver_alive(mark: str) -> bool:
    pid, _, started = mark.partition(":")
    try:
        return f"{psutil.Process(int(pid)).create_time():.2f}" == started
    except (ValueError, psutil.Error):
        return False


def mark_session(session: Path | None) -> None:
    if session is None:
        return
    try:
        (session / MARKER).write_text(this_driver())
    except OSError as exc:
        logger.debug("cannot mark {} as batchrun's: {}", session, exc)


def reap(ray_dir: Path) -> Reaped:
    """Kill the processes and remove the session folders (under `ray_dir`) of local
    instances whose batchrun driver is gone."""
    dead = list(_dead_sessions(ray_dir))
    processes = sum(_kill(process) for process in _holding_files_in(dead)) if dead else 0
    folders = sum(remove_session(folder) for folder in dead)
    if processes or folders:
        logger.info("removed what killed runs left of their local Ray: {} process(es), {}"
                    " session folder(s)", processes, folders)
    return Reaped(processes, folders)


def _holding_files_in(folders: list[Path]) -> Iterator[psutil.Process]:
    """This user's processes with a file open under one of `folders`."""
    uid, prefixes = os.getuid(), tuple(f"{folder}{os.sep}" for folder in folders)
    for process in psutil.process_iter(["uids"]):
        try:
            if process.info["uids"] is None or process.info["uids"].real != uid:
                continue
            if any(f.path.startswith(prefixes) for f in process.open_files()):
                yield process
        except psutil.Error:
            continue


def _kill(process: psutil.Process) -> bool:
    try:
        process.send_signal(signal.SIGKILL)
    except psutil.Error:
        return False
    return True


def _dead_sessions(ray_dir: Path) -> Iterator[Path]:
    for marker in ray_dir.glob(f"session_*/{MARKER}"):
        try:
            mark = marker.read_text().strip()
        except OSError:
            continue
        if not driver_alive(mark):
            yield marker.parent


def remove_session(folder: Path) -> bool:
    """Remove a Ray session folder, and Ray's `session_latest` link when it points there;
    whether the folder is gone."""
    shutil.rmtree(folder, ignore_errors=True)
    latest = folder.parent / "session_latest"
    try:
        if latest.is_symlink() and Path(os.readlink(latest)).name == folder.name:
            latest.unlink()
    except OSError as exc:
        logger.debug("left {}: {}", latest, exc)
    return not folder.exists()
