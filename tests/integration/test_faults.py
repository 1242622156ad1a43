"""Every fault a night can bring, injected for real: the run finishes or resumes exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, EXIT_PARTIAL, invoke
from batchrun.lock import JobLock
from batchrun.tools.demo import DemoSpec, DemoTruth, generate
from batchrun.tools.faults import FAULTS_ENV
from tests.conftest import (
    ON_RAY,
    assert_exactly_once,
    committed_batches,
    kill_group,
    parse_json,
    spawn_cli,
    wait_for,
    write_job,
)

DRIVER_KILL_POINTS = ["after_dispatch", "after_rename", "mid_commit", "after_commit"]


def run_with_faults(tmp_path: Path, data: Path, faults: str, capsys: pytest.CaptureFixture[str],
                    execution: str = "workers = 2", batch: str = "max_files = 1") -> tuple[int, dict]:
    job = write_job(tmp_path, data, batch=batch, execution=execution,
                    extra=f"\n[faults]\n{faults}\n")
    code = invoke(["run", str(job), "--state-dir", str(tmp_path / "s"), "--json", "--no-progress"])
    return code, parse_json(capsys.readouterr().out)


def batches(tmp_path: Path) -> list[dict]:
    catalog = Catalog(tmp_path / "s")
    return catalog.batches(catalog.latest_run_id())


@pytest.mark.usefixtures("ray_session")
class TestInProcess:
    def test_reads_failing_transiently_at_20_percent_are_retried_to_exact_counts(
            self, tmp_path: Path, demo_data: tuple[Path, DemoTruth],
            capsys: pytest.CaptureFixture[str]) -> None:
        data, truth = demo_data
        code, report = run_with_faults(tmp_path, data, "read_error_rate = 0.2\nseed = 3", capsys,
                                       execution="workers = 2\nmax_retries = 6")
        assert code == EXIT_OK and report["rows"]["staged"] == truth.total_rows
        retried = [b for b in batches(tmp_path) if b["attempts"] > 1]
        assert retried and all(b["error_kind"] == "transient" for b in retried)
        assert all("injected I/O error" in b["last_error"] for b in retried)
        assert report["attempts"] == 12 + sum(b["attempts"] - 1 for b in retried)
        assert_exactly_once(tmp_path / "s", truth.total_rows)

    def test_a_permanently_broken_file_is_quarantined_after_one_attempt(
            self, tmp_path: Path, demo_data: tuple[Path, DemoTruth],
            capsys: pytest.CaptureFixture[str]) -> None:
        data, truth = demo_data
        broken = tmp_path / "data"
        (broken / "supplier_zz").mkdir(parents=True)
        (broken / "supplier_00").symlink_to(data / "supplier_00")
        (broken / "supplier_zz" / "orders_0000.csv.gz").write_bytes(b"\x1f\x8b\x08\x00truncated")
        code, report = run_with_faults(tmp_path, broken, "seed = 0", capsys)
        assert code == EXIT_PARTIAL and report["files"]["failed"] == 1
        assert all(b["attempts"] == 1 for b in batches(tmp_path))
        expected = sum(n for f, n in truth.files.items() if f.startswith("supplier_00/"))
        assert_exactly_once(tmp_path / "s", expected)

    def test_a_hanging_batch_is_killed_at_its_timeout_and_retried(
            self, tmp_path: Path, demo_data: tuple[Path, DemoTruth],
            capsys: pytest.CaptureFixture[str]) -> None:
        data, truth = demo_data
        code, report = run_with_faults(
            tmp_path, data, "hang_batches = [2]\nhang_seconds = 600", capsys,
            execution='workers = 2\nbatch_timeout = "4s"')
        assert code == EXIT_OK and report["rows"]["staged"] == truth.total_rows
        hung = next(b for b in batches(tmp_path) if b["seq"] == 2)
        assert hung["attempts"] == 2 and "timed out after 4s" in hung["last_error"]
        assert_exactly_once(tmp_path / "s", truth.total_rows)

    def test_a_worker_dying_right_after_its_rename_leaves_no_visible_orphan(
            self, tmp_path: Path, demo_data: tuple[Path, DemoTruth],
            capsys: pytest.CaptureFixture[str]) -> None:
        data, truth = demo_data
        code, report = run_with_faults(
            tmp_path, data, 'crash_worker = "after_rename"\ncrash_batches = [1, 4]', capsys)
        assert code == EXIT_OK and report["rows"]["staged"] == truth.total_rows
        crashed = [b for b in batches(tmp_path) if b["seq"] in (1, 4)]
        assert all(b["attempts"] >= 2 and "died" in b["last_error"] for b in crashed)
        assert_exactly_once(tmp_path / "s", truth.total_rows)

    def test_a_storm_of_failures_spends_the_retry_budget_and_stops(
            self, tmp_path: Path, demo_data: tuple[Path, DemoTruth],
            capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        data, truth = demo_data
        code, report = run_with_faults(tmp_path, data, "read_error_rate = 1.0", capsys,
                                       execution="workers = 1\nretry_budget = 3")
        assert code == EXIT_PARTIAL and report["state"] == "failed"
        assert "retry budget (3) spent" in report["message"]
        assert report["rows"]["staged"] == 0 and report["batches"]["committed"] == 0
        assert sum(b["attempts"] for b in batches(tmp_path)) <= 5
        # Once the storm has passed, resume finishes the run exactly once.
        monkeypatch.setenv(FAULTS_ENV, "read_error_rate = 0.0")
        assert invoke(["resume", "--state-dir", str(tmp_path / "s"), "--no-progress"]) == EXIT_OK
        assert_exactly_once(tmp_path / "s", truth.total_rows)

    def test_a_lock_left_by_a_dead_process_is_taken_over(
            self, tmp_path: Path, demo_data: tuple[Path, DemoTruth],
            capsys: pytest.CaptureFixture[str]) -> None:
        data, truth = demo_data
        lock = JobLock(tmp_path / "s", "orders_job")
        lock.path.parent.mkdir(parents=True)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        lock.path.write_text(json.dumps({"pid": dead.pid, "host": "x", "run_id": "old"}))
        code, report = run_with_faults(tmp_path, data, "seed = 0", capsys)
        assert code == EXIT_OK
        assert_exactly_once(tmp_path / "s", truth.total_rows)


@pytest.fixture(scope="module")
def chaos_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoTruth]:
    out = tmp_path_factory.mktemp("chaos")
    truth = generate(DemoSpec(out_dir=out, suppliers=4, files_per_supplier=6, file_bytes=40_000,
                              bad_row_rate=0.02, seed=5))
    return out, truth


@pytest.mark.slow
def test_chaos_driver_killed_at_five_random_points_then_resumed_exactly_once(
        tmp_path: Path, chaos_data: tuple[Path, DemoTruth]) -> None:
    data, truth = chaos_data
    seed = int(os.environ.get("BATCHRUN_CHAOS_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    job = write_job(tmp_path, data, batch="max_files = 1", execution=ON_RAY)
    state = tmp_path / "state"
    points = ["after_plan", *rng.sample(DRIVER_KILL_POINTS, 3), "after_rename"]
    kills = []
    for round_number, point in enumerate(points):
        command = ("run", job) if round_number == 0 else ("resume", "latest")
        faults = f'kill_driver = "{point}", kill_driver_after = {rng.randint(1, 2)}'
        process = spawn_cli(*command, "--state-dir", state, "--no-progress",
                            env={FAULTS_ENV: faults, "BATCHRUN_FAULTS_SEED": str(seed)})
        try:
            kills.append((point, process.wait(timeout=240)))
        finally:
            kill_group(process)
    assert all(code == -signal.SIGKILL for _, code in kills), (seed, kills)
    catalog = Catalog(state)
    assert catalog.counts(catalog.latest_run_id()).batches.committed < 24, seed
    finished = subprocess.run([sys.executable, "-m", "batchrun", "resume", "--state-dir",
                               str(state), "--no-progress"], capture_output=True, text=True,
                              timeout=300)
    assert finished.returncode == EXIT_OK, (seed, finished.stderr)
    assert_exactly_once(state, truth.total_valid_rows, truth.total_rejects)


@pytest.mark.slow
def test_a_worker_process_killed_mid_batch_is_replaced_and_the_run_succeeds(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    data, truth = demo_data
    job = write_job(tmp_path, data, batch="max_files = 1")
    state = tmp_path / "state"
    process = spawn_cli("run", job, "--state-dir", state, "--no-progress",
                        env={FAULTS_ENV: "batch_delay = 1.0"})
    try:
        wait_for(lambda: committed_batches(state) >= 1)
        victim = wait_for(lambda: busy_worker(process.pid))
        victim.send_signal(signal.SIGKILL)
        assert process.wait(timeout=240) == EXIT_OK
    finally:
        kill_group(process)
    run_id = assert_exactly_once(state, truth.total_rows)
    died = [b for b in Catalog(state).batches(run_id) if b["last_error"]]
    assert died and all("died" in b["last_error"] for b in died)


def busy_worker(driver_pid: int) -> psutil.Process | None:
    """A Ray worker process of this run that is in the middle of a batch."""
    session = os.getsid(driver_pid)
    for candidate in psutil.process_iter(["cmdline"]):
        try:
            if (os.getsid(candidate.pid) == session
                    and "ray::PipelineActor.process" in " ".join(candidate.info["cmdline"] or [])):
                return candidate
        except (ProcessLookupError, psutil.Error):
            continue
    return None
