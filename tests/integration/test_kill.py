"""Real subprocesses killed with real signals, then resumed: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_LOCKED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM
from batchrun.tools.demo import DemoTruth
from batchrun.tools.faults import FAULTS_ENV
from tests.conftest import (
    ON_RAY,
    assert_exactly_once,
    committed_batches,
    kill_group,
    spawn_cli,
    wait_for,
    write_job,
)

pytestmark = pytest.mark.slow
SLOW_BATCHES = {FAULTS_ENV: "batch_delay = 0.8"}


def start_slow_run(tmp_path: Path, data: Path, *extra: str | Path
                   ) -> tuple[subprocess.Popen[bytes], Path]:
    """A run of 12 one-file batches, each held 0.8 s in its worker."""
    job = write_job(tmp_path, data, batch="max_files = 1", execution=ON_RAY)
    state = tmp_path / "state"
    process = spawn_cli("run", job, "--state-dir", state, "--no-progress", *extra,
                        env=SLOW_BATCHES, log=tmp_path / "run.log")
    return process, state


def resume(state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchrun", "resume", "latest",
                           "--state-dir", str(state), "--no-progress"],
                          capture_output=True, text=True, timeout=300)


def some_committed_others_in_flight(state: Path) -> bool:
    if committed_batches(state) < 2:
        return False
    catalog = Catalog(state)
    counts = catalog.counts(catalog.latest_run_id())
    return counts.batches.running > 0 and counts.batches.pending > 0


@pytest.mark.parametrize("victim", ["process_group", "driver_only"])
def test_killed_run_resumes_without_loss_or_duplicates(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], victim: str) -> None:
    data, truth = demo_data
    process, state = start_slow_run(tmp_path, data)
    try:
        wait_for(lambda: some_committed_others_in_flight(state))
        if victim == "process_group":
            kill_group(process, signal.SIGKILL)
        else:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        kill_group(process, signal.SIGKILL)  # Ray's helpers outlive a driver killed alone
    catalog = Catalog(state)
    before = catalog.counts(catalog.latest_run_id())
    assert 2 <= before.batches.committed < before.batches.total
    finished = resume(state)
    assert finished.returncode == EXIT_OK, finished.stderr
    run_id = assert_exactly_once(state, truth.total_rows)
    after = catalog.counts(run_id)
    assert after.batches.committed == after.batches.total
    assert catalog.run(run_id).state.value == "succeeded"


def test_status_json_works_from_a_second_process_while_a_run_is_going(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    data, truth = demo_data
    process, state = start_slow_run(tmp_path, data)
    try:
        wait_for(lambda: committed_batches(state) >= 1)
        follow = subprocess.Popen([sys.executable, "-m", "batchrun", "logs", "--follow",
                                   "--state-dir", str(state)], stdout=subprocess.PIPE, text=True)
        polled = subprocess.run([sys.executable, "-m", "batchrun", "status", "--json",
                                 "--state-dir", str(state)], capture_output=True, text=True,
                                timeout=60)
        runs = subprocess.run([sys.executable, "-m", "batchrun", "runs", "--json",
                               "--state-dir", str(state)], capture_output=True, text=True,
                              timeout=60)
        assert process.wait(timeout=240) == EXIT_OK
        followed, _ = follow.communicate(timeout=30)  # it stops by itself once the run ended
    finally:
        kill_group(process)
        follow.kill()
    assert follow.returncode == EXIT_OK
    assert "| starting job" in followed  # from the log's start, and on to the run's end:
    assert "run succeeded: 12 batch(es) committed" in followed
    report = json.loads(polled.stdout)
    assert report["state"] == "running"
    assert 1 <= report["batches"]["committed"] < report["batches"]["total"] == 12
    assert set(report) >= {"run_id", "job", "state", "batches", "files", "rows",
                           "started_at", "finished_at"}
    assert json.loads(runs.stdout)[0]["run_id"] == report["run_id"]
    assert_exactly_once(state, truth.total_rows)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, EXIT_SIGTERM),
                                              (signal.SIGINT, EXIT_SIGINT)])
def test_signal_stops_cleanly_and_the_run_resumes(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], signum: int, code: int) -> None:
    data, truth = demo_data
    metrics = tmp_path / "batchrun.prom"
    process, state = start_slow_run(tmp_path, data, "--metrics-file", metrics)
    try:
        wait_for(lambda: some_committed_others_in_flight(state))
        kill_group(process, signum)  # as a terminal's Ctrl-C does: the whole group
        assert process.wait(timeout=60) == code
    finally:
        kill_group(process)
    output = (tmp_path / "run.log").read_text()
    catalog = Catalog(state)
    run_id = catalog.latest_run_id()
    assert f"batchrun resume {run_id} --state-dir {state}" in output
    assert "stopping: waiting for " in output  # the drain, on the console too
    assert f'batchrun_exit_code{{job="orders_job"}} {code}' in metrics.read_text()
    assert catalog.run(run_id).state.value == "interrupted"
    assert resume(state).returncode == EXIT_OK
    assert_exactly_once(state, truth.total_rows)


def test_ctrl_c_while_ray_starts_leaves_the_run_interrupted_with_its_resume_command(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    """The plan is recorded while Ray starts (seconds); a Ctrl-C then names the run and
    its resume, like a Ctrl-C later on, and the resume stages every row once."""
    data, truth = demo_data
    process, state = start_slow_run(tmp_path, data)
    try:
        wait_for(lambda: (state / "catalog.sqlite").exists() and Catalog(state).run_ids(),
                 every=0.02)
        kill_group(process, signal.SIGINT)
        assert process.wait(timeout=60) == EXIT_SIGINT
    finally:
        kill_group(process)
    output = (tmp_path / "run.log").read_text()
    run_id = Catalog(state).latest_run_id()
    assert "Traceback" not in output
    assert f"interrupted: run {run_id} was stopped; resume with: " in output
    assert f"batchrun resume {run_id} --state-dir {state}" in output
    assert Catalog(state).run(run_id).state.value == "interrupted"
    assert resume(state).returncode == EXIT_OK
    assert_exactly_once(state, truth.total_rows)


def test_the_same_job_run_from_two_directories_shares_one_state_and_its_lock(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    """No --state-dir: the state is .batchrun beside the job file, whatever the current
    directory, so a second run of the job from elsewhere meets the first one's lock."""
    data, truth = demo_data
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir(), second_dir.mkdir()
    write_job(tmp_path, data, batch="max_files = 1")
    process = spawn_cli("run", "../job.toml", "--no-progress", env=SLOW_BATCHES,
                        log=tmp_path / "run.log", cwd=first_dir)
    state = tmp_path / ".batchrun"
    try:
        wait_for(lambda: committed_batches(state) >= 1)
        second = subprocess.run([sys.executable, "-m", "batchrun", "run",
                                 str(tmp_path / "job.toml")], cwd=second_dir,
                                capture_output=True, text=True, timeout=60)
        assert process.wait(timeout=240) == EXIT_OK
    finally:
        kill_group(process)
    assert second.returncode == EXIT_LOCKED
    run_id = Catalog(state).latest_run_id()
    assert run_id in second.stderr and f"pid {process.pid}" in second.stderr
    assert len(Catalog(state).run_ids()) == 1
    assert_exactly_once(state, truth.total_rows)
    shown = subprocess.run([sys.executable, "-m", "batchrun", "status", "--json", "--job",
                            "../job.toml"], cwd=second_dir, capture_output=True, text=True)
    assert json.loads(shown.stdout)["run_id"] == run_id
    assert not (first_dir / ".batchrun").exists() and not (second_dir / ".batchrun").exists()
