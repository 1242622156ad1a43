"""A plain local run ignores whatever Ray cluster is registered on the machine.

`ray start --head` registers its address in /tmp/ray/ray_current_cluster, and a killed
head leaves that file behind; `ray.init()` without an address would join (or fail to join)
that cluster. Without `--address`/BATCHRUN_ADDRESS/`[execution] address`/RAY_ADDRESS,
batchrun starts its own private instance and leaves the registered cluster untouched.
The tests restore the machine's registration file as they found it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from ray._common.utils import get_ray_address_file

from batchrun.cli import EXIT_OK
from batchrun.tools.demo import DemoTruth
from tests.conftest import assert_exactly_once, kill_group, wait_for, write_job

REGISTRATION = Path(get_ray_address_file(None))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers_in(pid: int, port: int) -> bool:
    """Whether 127.0.0.1:`port` answers inside the network namespace of process `pid`."""
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1).close()"
    done = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", probe],
                          capture_output=True, timeout=30, check=False)
    return done.returncode == 0


@contextmanager
def registration_restored() -> Iterator[None]:
    saved = REGISTRATION.read_bytes() if REGISTRATION.is_file() else None
    try:
        yield
    finally:
        if saved is None:
            REGISTRATION.unlink(missing_ok=True)
        else:
            REGISTRATION.write_bytes(saved)


def local_run(tmp_path: Path, data: Path) -> subprocess.CompletedProcess[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    job = write_job(tmp_path, data)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "BATCHRUN_ADDRESS")}
    return subprocess.run([sys.executable, "-m", "batchrun", "run", str(job), "--state-dir",
                           str(tmp_path / "state"), "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_a_local_run_beside_a_standing_ray_start_cluster_runs_privately_and_leaves_it_up(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    data, truth = demo_data
    port = free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    with registration_restored():
        # In a network namespace of its own with only `lo`: Ray's GCS listens on every
        # interface, and a test's servers stay on loopback.
        head = subprocess.Popen(
            ["unshare", "-n", "sh", "-c",
             f"ip link set lo up && exec {ray_cli} start --head --block --port={port}"
             " --num-cpus=1 --node-ip-address=127.0.0.1 --include-dashboard=false"
             " --disable-usage-stats"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(lambda: answers_in(head.pid, port) and REGISTRATION.is_file()
                     and str(port) in REGISTRATION.read_text(), timeout=120)
            done = local_run(tmp_path, data)
            assert done.returncode == EXIT_OK, done.stderr
            assert_exactly_once(tmp_path / "state", truth.total_rows)
            assert head.poll() is None and answers_in(head.pid, port)  # left untouched
        finally:
            kill_group(head)
            head.wait(timeout=60)


def test_a_dead_clusters_leftover_registration_does_not_stop_a_local_run(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    data, truth = demo_data
    with registration_restored():
        REGISTRATION.parent.mkdir(parents=True, exist_ok=True)
        REGISTRATION.write_text(f"127.0.0.1:{free_port()}")  # a head that was killed
        started = time.monotonic()
        done = local_run(tmp_path, data)
    assert done.returncode == EXIT_OK, done.stderr
    assert time.monotonic() - started < 120
    assert_exactly_once(tmp_path / "state", truth.total_rows)


def test_a_local_run_removes_the_ray_session_folder_it_created(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    data, truth = demo_data
    sessions = REGISTRATION.parent
    before = set(sessions.glob("session_2*"))
    for attempt in range(2):
        done = local_run(tmp_path / str(attempt), data)
        assert done.returncode == EXIT_OK, done.stderr
        assert_exactly_once(tmp_path / str(attempt) / "state", truth.total_rows)
    assert set(sessions.glob("session_2*")) - before == set()
    latest = sessions / "session_latest"
    assert not latest.is_symlink() or Path(os.readlink(latest)).exists()
