"""batchrun the way clusters are used: `ray job submit ... -- batchrun run`, each address form.

One real `ray start --head` (dashboard and job server on 127.0.0.1, Ray Client server) in a
network namespace of its own is shared by the module. It runs without token
authentication while its users' home holds a token (`ray start` leaves ~/.ray/auth_token
behind on any machine it ran on): batchrun must not take that token as a reason to use
token auth (test_registered_ray.py has a token cluster). `ray job submit` runs the
entrypoint on the head with RAY_ADDRESS set: batchrun joins that cluster. The catalog and
staging are outside the cluster (tmp_path).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchrun.cli import EXIT_OK, EXIT_USAGE, invoke
from batchrun.tools.demo import DemoTruth
from tests.conftest import assert_exactly_once, wait_for, write_job
from tests.integration.test_registered_ray import (
    answers_in,
    free_port,
    joined_address,
    joined_run,
    standing_head,
)

pytestmark = pytest.mark.slow


class Head:
    def __init__(self, process: subprocess.Popen[bytes], port: int, dashboard: int,
                 client: int, env: dict[str, str], temp_dir: Path) -> None:
        self.process, self.port, self.dashboard, self.client = process, port, dashboard, client
        self.temp_dir = temp_dir
        """Its own Ray temp dir: Ray's job supervisor gives an entrypoint the RAY_ADDRESS
        registered there, which in /tmp/ray any other `ray start` may have rewritten."""
        self.env = env
        """What a user of this cluster has: its token, a home of their own."""

    def ray_job(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`ray job ARGS --address http://127.0.0.1:DASHBOARD` inside the head's namespace."""
        ray_cli = Path(sys.executable).with_name("ray")
        return subprocess.run(
            ["nsenter", f"--net=/proc/{self.process.pid}/ns/net", str(ray_cli), "job", args[0],
             "--address", f"http://127.0.0.1:{self.dashboard}", *args[1:]],
            env=self.env, capture_output=True, text=True, timeout=300, check=False)


def head_session(head: Head) -> Path:
    """The head's Ray session folder (named after its pid; the newest, pids are reused)."""
    return max(head.temp_dir.glob(f"session_*_{head.process.pid}"))


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    home = tmp_path_factory.mktemp("home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))},
           "HOME": str(home)}
    dashboard, client = free_port(), free_port()
    root = Path(tempfile.mkdtemp(prefix="br-"))  # short: Ray's socket paths live there
    temp_dir = root / "ray"  # where RAY_TMPDIR=root makes `auto` look
    options = (f"--include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port={dashboard}"
               f" --ray-client-server-port={client} --temp-dir={temp_dir}")
    try:
        with standing_head(cpus=2, env={**env, "RAY_AUTH_MODE": "disabled"}, options=options) as (
                process, port):
            for server in (dashboard, client):
                wait_for(lambda: answers_in(process.pid, server), timeout=120)  # noqa: B023
            yield Head(process, port, dashboard, client, env, temp_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_submitted_run_joins_the_cluster_and_takes_the_submission_id_as_its_run_id(
        head: Head, tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    data, truth = demo_data
    job, state = write_job(tmp_path, data), tmp_path / "state"
    submitted = head.ray_job("submit", "--submission-id", "nightly-0001", "--",
                             "batchrun", "run", str(job), "--state-dir", str(state),
                             "--run-id", "nightly-0001", "--no-progress")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "succeeded" in head.ray_job("status", "nightly-0001").stdout.lower()
    assert assert_exactly_once(state, truth.total_rows) == "nightly-0001"
    assert joined_address(state) == f"127.0.0.1:{head.port}"  # RAY_ADDRESS: not a new instance
    again = invoke(["run", str(job), "--state-dir", str(state), "--run-id", "nightly-0001"])
    assert again == EXIT_USAGE  # the retry of a submission is `batchrun resume nightly-0001`


def test_a_submitted_run_of_a_bad_job_file_fails_with_batchrun_s_one_line(
        head: Head, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-job.toml"
    submitted = head.ray_job("submit", "--submission-id", "bad-0001", "--",
                             "batchrun", "run", str(missing), "--state-dir", str(tmp_path / "s"))
    assert submitted.returncode != 0
    assert "failed" in head.ray_job("status", "bad-0001").stdout.lower()
    logs = head.ray_job("logs", "bad-0001").stdout
    assert f"error: {missing}: job file not found" in logs
    assert "Traceback" not in logs


def test_an_auth_less_cluster_is_joined_by_address_and_auto_with_a_token_on_disk(
        head: Head, tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    """A driver that took the token on disk as a reason to use token auth connected, then
    saw every actor "cancelled before it started running" (an internal error, exit 70)."""
    data, truth = demo_data
    gcs = f"127.0.0.1:{head.port}"
    registered_here = {"RAY_TMPDIR": str(head.temp_dir.parent)}  # where `ray start` registered
    # ray://: joined runs passed here, but Ray Client's server on the head now and then
    # fails to start one for a driver ("Initialization failure from server"), so it is
    # not in the suite; its refusal is (test_registered_ray.py, the token cluster)
    for case, address, env in [("gcs", gcs, {}), ("auto", "auto", registered_here)]:
        done = joined_run(tmp_path / case, data, head.process, head.port, {**head.env, **env},
                          address)
        assert done.returncode == EXIT_OK, (case, done.stderr)
        assert_exactly_once(tmp_path / case / "state", truth.total_rows)
        assert joined_address(tmp_path / case / "state") == gcs


def test_a_chosen_run_id_must_be_a_plain_name(tmp_path: Path,
                                              demo_data: tuple[Path, DemoTruth]) -> None:
    job = write_job(tmp_path, demo_data[0])
    assert invoke(["run", str(job), "--state-dir", str(tmp_path / "s"), "--run-id",
                   "../elsewhere"]) == EXIT_USAGE


STEPS = """
import pyarrow as pa
import pyarrow.compute as pc


def read_pipes(path):
    rows = [line.split("|") for line in open(path).read().splitlines()]
    return pa.table({"id": [r[0] for r in rows], "amount": [r[1] for r in rows]})


def add_cents(table):
    return table.append_column("cents", pc.cast(pc.multiply(table["amount"], 100), pa.int64()))
"""


def test_batchrun_and_a_jobs_custom_steps_are_shipped_to_the_cluster_it_joins(
        head: Head, tmp_path: Path) -> None:
    """py_modules: batchrun's package folder (no __pycache__) and the job's step module,
    unpacked by the cluster in its session's runtime_resources."""
    (tmp_path / "steps.py").write_text(STEPS)
    (tmp_path / "in" / "s1").mkdir(parents=True)
    (tmp_path / "in" / "s1" / "a.pipe").write_text("1|2.50\n3|4\n")
    (tmp_path / "in" / "s1" / "b.pipe").write_text("4|1\n5|2\n6|0.01\n")
    job = tmp_path / "job.toml"
    job.write_text('''[job]\nname = "pipes"\ntable = "amounts"\n[source]\npaths = ["in/*/*.pipe"]
reader = "steps:read_pipes"\n[transform]\nfunction = "steps:add_cents"\n[schema.columns]
id = { type = "int64", unique = true }\namount = { type = "decimal(10,2)" }\n''')
    state = tmp_path / "state"
    done = subprocess.run(
        ["nsenter", f"--net=/proc/{head.process.pid}/ns/net", sys.executable, "-m", "batchrun",
         "run", str(job), "--state-dir", str(state), "--no-progress", "--address",
         f"127.0.0.1:{head.port}"], env=head.env, capture_output=True, text=True, timeout=300,
        check=False)
    assert done.returncode == EXIT_OK, done.stderr
    assert_exactly_once(state, 5, key="id")
    unpacked = head_session(head) / "runtime_resources" / "py_modules_files"
    packages = [p for p in unpacked.glob("_ray_pkg_*") if p.is_dir()]
    assert any((p / "batchrun" / "pipeline.py").is_file() for p in packages), packages
    assert any((p / "steps.py").is_file() for p in packages), packages
    assert not list(unpacked.rglob("*.pyc"))
