"""Which Ray a run uses: a private local one, or exactly the cluster it is given.

A plain local run ignores whatever Ray cluster is registered on the machine.

`ray start --head` registers its address in /tmp/ray/ray_current_cluster, and a killed
head leaves that file behind; `ray.init()` without an address would join (or fail to join)
that cluster. Without `--address`/BATCHRUN_ADDRESS/`[execution] address`/RAY_ADDRESS,
batchrun starts its own private instance and leaves the registered cluster untouched.
The tests restore the machine's registration file as they found it.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from ray._common.utils import get_ray_address_file

from batchrun.cli import EXIT_ENVIRONMENT, EXIT_OK
from batchrun.tools.demo import DemoTruth
from tests.conftest import (
    ON_RAY,
    assert_exactly_once,
    committed_batches,
    kill_group,
    spawn_cli,
    wait_for,
    write_job,
)

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
    job = write_job(tmp_path, data, execution=ON_RAY)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "BATCHRUN_ADDRESS")}
    return subprocess.run([sys.executable, "-m", "batchrun", "run", str(job), "--state-dir",
                           str(tmp_path / "state"), "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@contextmanager
def standing_head(cpus: int = 1, env: dict[str, str] | None = None,
                  options: str = "--include-dashboard=false"
                  ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A real `ray start --head [options]`, as a user starts one, in a network namespace
    of its own with only `lo` (Ray's GCS listens on every interface; a test's servers stay
    on loopback); stopped (its whole process group) on the way out, the machine's cluster
    registration restored. This interpreter's `bin` leads its PATH, so that a submitted
    job's `batchrun` is this one."""
    port = free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    path = f"{ray_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with registration_restored():
        head = subprocess.Popen(
            ["unshare", "-n", "sh", "-c",
             f"ip link set lo up && exec {ray_cli} start --head --block --port={port}"
             f" --num-cpus={cpus} --node-ip-address=127.0.0.1 {options}"
             " --disable-usage-stats"],
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {}), "PATH": path},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(lambda: answers_in(head.pid, port), timeout=120)
            yield head, port
        finally:
            kill_group(head)
            head.wait(timeout=60)


@pytest.mark.slow
def test_a_local_run_beside_a_standing_ray_start_cluster_runs_privately_and_leaves_it_up(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    data, truth = demo_data
    with standing_head() as (head, port):
        wait_for(lambda: REGISTRATION.is_file() and str(port) in REGISTRATION.read_text())
        done = local_run(tmp_path, data)
        assert done.returncode == EXIT_OK, done.stderr
        assert_exactly_once(tmp_path / "state", truth.total_rows)
        assert head.poll() is None and answers_in(head.pid, port)  # left untouched


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
    for attempt in range(2):
        done = local_run(tmp_path / str(attempt), data)
        assert done.returncode == EXIT_OK, done.stderr
        state = tmp_path / str(attempt) / "state"
        assert_exactly_once(state, truth.total_rows)
        log = next((state / "logs").glob("2*.log")).read_text()
        session = Path(re.search(r"a new local instance \((/\S+/session_[^)\s]+)\)", log)[1])
        assert session.parent == REGISTRATION.parent and not session.exists()
        latest = session.parent / "session_latest"
        assert not (latest.is_symlink() and Path(os.readlink(latest)).name == session.name)


def joined_run(tmp_path: Path, data: Path, head: subprocess.Popen[bytes], port: int,
               env: dict[str, str], address: str | None = None
               ) -> subprocess.CompletedProcess[str]:
    """`batchrun run --address ADDRESS` (default 127.0.0.1:PORT) from inside the
    cluster's namespace."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    job = write_job(tmp_path, data, execution=ON_RAY)
    base = {k: v for k, v in os.environ.items()
            if k not in ("RAY_ADDRESS", "BATCHRUN_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE",
                         "RAY_AUTH_TOKEN_PATH")}
    return subprocess.run(
        ["nsenter", f"--net=/proc/{head.pid}/ns/net", sys.executable, "-m", "batchrun", "run",
         str(job), "--state-dir", str(tmp_path / "state"), "--no-progress",
         "--address", address or f"127.0.0.1:{port}"],
        env={**base, **env}, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_a_token_cluster_is_joined_with_its_token_and_refused_in_one_line_without(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    data, truth = demo_data
    token = secrets.token_hex(32)
    with standing_head(cpus=2, env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}) as (
            head, port):
        joined = joined_run(tmp_path / "right", data, head, port, {"RAY_AUTH_TOKEN": token})
        assert joined.returncode == EXIT_OK, joined.stderr
        assert_exactly_once(tmp_path / "right" / "state", truth.total_rows)
        no_token = {"HOME": str(tmp_path / "home-without-a-token")}
        for case, env, address in [("wrong", {"RAY_AUTH_TOKEN": secrets.token_hex(32)}, None),
                                   ("none", no_token, None),
                                   ("client", no_token, "ray://127.0.0.1:10001")]:  # Ray Client
            started = time.monotonic()
            refused = joined_run(tmp_path / case, data, head, port, env, address)
            assert refused.returncode == EXIT_ENVIRONMENT, (case, refused.stderr)
            assert time.monotonic() - started < 10 + 5, case  # + the interpreter's start
            assert refused.stderr.strip().count("\n") == 0, (case, refused.stderr)
            assert "not authorised" in refused.stderr and "RAY_AUTH_TOKEN" in refused.stderr
            assert "InvalidAuthToken" not in refused.stderr


def joined_address(state: Path) -> str:
    """The cluster the run's log says it joined."""
    log = next((state / "logs").glob("*.log")).read_text()
    return re.search(r"connected to Ray at (\S+) ", log)[1]


def holders(session: Path) -> list[int]:
    """Processes with a file open in Ray session folder `session`."""
    prefix = f"{session}{os.sep}"
    found = []
    for process in psutil.process_iter():
        try:
            if any(f.path.startswith(prefix) for f in process.open_files()):
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_what_a_killed_driver_left_of_its_local_ray_is_removed_by_the_next_run(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    """A SIGKILLed driver's dashboard and runtime-env agents outlive it by a minute (they
    report the raylet's death to the dead GCS, with a 60 s timeout); its session folder
    stays. The resume that follows removes both, and stages every row once."""
    data, truth = demo_data
    job = write_job(tmp_path, data, batch="max_files = 1", extra="\n[faults]\nbatch_delay = 0.5\n")
    state, no_cluster = tmp_path / "state", {"RAY_ADDRESS": "", "BATCHRUN_ADDRESS": ""}
    driver = spawn_cli("run", job, "--state-dir", state, "--no-progress", env=no_cluster)
    try:
        wait_for(lambda: committed_batches(state) >= 1)
        session = max(REGISTRATION.parent.glob(f"session_*_{driver.pid}"))  # pids are reused
        assert (session / "batchrun-driver").is_file()
        os.kill(driver.pid, signal.SIGKILL)  # the driver only, as `kill -9 PID` does
        driver.wait(timeout=30)
        wait_for(lambda: len(holders(session)) <= 2, timeout=30)  # gcs and raylet die at once
        assert session.exists()  # the folder stays, and the agents usually live on (not always:
        # under load they may see the GCS gone sooner), for the next run to remove
    finally:
        kill_group(driver)
    resumed = subprocess.run([sys.executable, "-m", "batchrun", "resume", "--state-dir",
                              str(state), "--no-progress"], env={**os.environ, **no_cluster},
                             capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert not holders(session) and not session.exists()
    assert_exactly_once(state, truth.total_rows)
