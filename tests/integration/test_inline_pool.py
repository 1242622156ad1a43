"""Small local jobs run inline: in the batchrun process, with no Ray started, and with the
same guarantees (the plan first, a checkpoint per batch, kill and resume exactly once).

Every run here is a `python -m batchrun` process of its own: in the test process, a Ray
another test connected would be used instead (settings.choose_pool)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, EXIT_PARTIAL, EXIT_SIGINT, invoke
from batchrun.logs import run_log_path
from batchrun.tools.demo import DemoSpec, DemoTruth, generate
from batchrun.tools.faults import FAULTS_ENV
from tests.conftest import (
    assert_exactly_once,
    committed_batches,
    kill_group,
    parse_json,
    spawn_cli,
    wait_for,
    write_job,
)

INLINE = 'workers = 2\npool = "inline"'


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchrun", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def run_log(state: Path) -> str:
    catalog = Catalog(state)
    return run_log_path(state, catalog.latest_run_id()).read_text()


def test_a_small_local_job_runs_inline_without_ray_and_stages_every_row_once(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    data, truth = demo_data
    state = tmp_path / "state"
    done = cli("run", write_job(tmp_path, data), "--state-dir", state, "--no-progress")
    assert done.returncode == EXIT_OK, done.stderr
    assert "(pool: inline)" in done.stderr
    assert_exactly_once(state, truth.total_rows)
    log = run_log(state)
    assert "pool: inline (auto: a local plan of " in log and "connected to Ray" not in log
    assert "first batch dispatched " in log and re.search(r"planned \d+ batch\(es\) of 12 file", log)


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoTruth]:
    out = tmp_path_factory.mktemp("messy-inline")
    truth = generate(DemoSpec(out_dir=out, suppliers=2, files_per_supplier=2, file_bytes=60_000,
                              quoted_newline_rate=0.01, bad_row_rate=0.02, bad_files=True,
                              seed=12))
    return out, truth


def test_a_messy_feed_inline_rejects_each_bad_row_once_with_its_line(
        tmp_path: Path, messy: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]
        ) -> None:
    data, truth = messy
    state = tmp_path / "state"
    done = cli("run", write_job(tmp_path, data), "--state-dir", state, "--no-progress")
    assert done.returncode == EXIT_PARTIAL, done.stderr  # the broken files are quarantined
    assert "pool: inline" in run_log(state)
    assert_exactly_once(state, truth.total_valid_rows, truth.total_rejects)
    assert len(Catalog(state).failed_files(Catalog(state).latest_run_id())) == truth.quarantined_files
    assert invoke(["rejects", "--state-dir", str(state), "--json"]) == EXIT_OK
    staged = sorted((Path(r["file"]).name, r["line"], r["rule"])
                    for r in parse_json(capsys.readouterr().out))
    wanted = sorted((Path(p).name, r.line, r.rule) for p, f in truth.details.items()
                    for r in f.kept_rejects)
    assert staged == wanted and truth.total_rejects > 0


def some_committed_others_pending(state: Path) -> bool:
    if committed_batches(state) < 2:
        return False
    catalog = Catalog(state)
    return catalog.counts(catalog.latest_run_id()).batches.pending > 0


@pytest.mark.parametrize("kill", ["sigkill_from_outside", "after_rename_before_commit"])
def test_an_inline_run_killed_mid_run_resumes_exactly_once(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], kill: str) -> None:
    """From outside: wherever the batch in progress happens to be. From inside: the batch's
    files are renamed into place, not committed (they are orphans the resume removes)."""
    data, truth = demo_data
    state = tmp_path / "state"
    job = write_job(tmp_path, data, batch="max_files = 1", execution=INLINE)
    faults = ("batch_delay = 0.3" if kill == "sigkill_from_outside"
              else 'kill_driver = "after_rename", kill_driver_after = 3')
    process = spawn_cli("run", job, "--state-dir", state, "--no-progress",
                        env={FAULTS_ENV: faults}, log=tmp_path / "run.out")
    try:
        if kill == "sigkill_from_outside":
            wait_for(lambda: some_committed_others_pending(state), every=0.05)
            kill_group(process, signal.SIGKILL)
        assert process.wait(timeout=120) == -signal.SIGKILL
    finally:
        kill_group(process)
    catalog = Catalog(state)
    before = catalog.counts(catalog.latest_run_id()).batches
    assert 2 <= before.committed < before.total == 12
    resumed = cli("resume", "--state-dir", state, "--no-progress")
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert "(pool: inline)" in resumed.stderr
    run_id = assert_exactly_once(state, truth.total_rows)
    assert catalog.counts(run_id).batches.committed == 12


HANGING_TRANSFORM = """
import pathlib, time

def hang(table):
    here = pathlib.Path(__file__).parent
    (here / "in-transform").touch()
    while (here / "hang").exists():
        time.sleep(0.05)
    return table
"""


def test_a_second_ctrl_c_stops_an_inline_batch_that_hangs_and_the_resume_stages_each_row_once(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    """A batch runs in the driver: the first signal lets it finish (a drain), the second
    must stop it, as it stops a Ray run at once, not wait for it forever. (SIGTERM takes
    the same handler; its exit code is 143.)"""
    data, truth = demo_data
    state = tmp_path / "state"
    (tmp_path / "hanging.py").write_text(HANGING_TRANSFORM)
    (tmp_path / "hang").touch()
    job = write_job(tmp_path, data, execution=INLINE, extra='[transform]\nfunction = "hanging:hang"\n')
    process = spawn_cli("run", job, "--state-dir", state, "--no-progress", log=tmp_path / "run.out")
    try:
        wait_for(lambda: (tmp_path / "in-transform").exists(), timeout=60, every=0.05)
        for _ in range(2):
            kill_group(process, signal.SIGINT)
            time.sleep(0.5)  # two signals, not one: nothing to see until the second
        assert process.wait(timeout=20) == EXIT_SIGINT
    finally:
        kill_group(process)
    (tmp_path / "hang").unlink()
    resumed = cli("resume", "--state-dir", state, "--no-progress")
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert_exactly_once(state, truth.total_rows)
