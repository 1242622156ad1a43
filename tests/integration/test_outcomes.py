"""Honest outcomes: what a run ends as, which run `resume` picks, what it may change, and
how much a stored message may hold. Real Ray, real DuckDB, real catalogs; counts checked
against the truth of the data written here."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, invoke
from batchrun.model import RunRecord, RunState
from batchrun.tools.demo import DemoSpec, DemoTruth, generate
from batchrun.tools.faults import FAULTS_ENV
from tests.conftest import kill_group, parse_json, staged_counts, wait_for, write_job

from .test_kill import some_committed_others_in_flight, start_slow_run

HEADER = "order_id,supplier_id,quantity\n"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoTruth]:
    """4 small supplier files (~800 rows), every row valid."""
    out = tmp_path_factory.mktemp("tiny")
    return out, generate(DemoSpec(out_dir=out, suppliers=2, files_per_supplier=2,
                                  file_bytes=20_000, seed=11))


def small_job(directory: Path, name: str, body: dict[str, str], validation: str = "") -> Path:
    """A job over CSV files written here (supplier folders), with a three-column schema."""
    for relative, rows in body.items():
        path = directory / "in" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(HEADER + rows)
    job = directory / "job.toml"
    job.write_text(f"""
[job]
name = "{name}"
table = "orders"
[source]
paths = ["in/*/*.csv"]
[batch]
max_files = 1
[validation]
{validation}
[schema.columns]
order_id = {{ type = "int64", required = true }}
supplier_id = {{ type = "string" }}
quantity = {{ type = "int32", min = 1 }}
""")
    return job


def run_json(job: Path, state: Path, capsys: pytest.CaptureFixture[str], *extra: str
             ) -> tuple[int, dict]:
    code = invoke(["run", str(job), "--state-dir", str(state), "--json", "--no-progress", *extra])
    return code, parse_json(capsys.readouterr().out)


def rows(n: int, good: bool, start: int = 1) -> str:
    return "".join(f"{i},S,{5 if good else 0}\n" for i in range(start, start + n))


# -- a run that staged nothing, or rejected too much, is not a success ---------------------------


@pytest.mark.usefixtures("ray_session")
def test_run_that_rejects_every_row_fails_with_exit_1_and_says_why(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = small_job(tmp_path, "all_bad", {"a/1.csv": rows(7, good=False),
                                          "b/2.csv": rows(5, good=False, start=8)})
    code, report = run_json(job, tmp_path / "state", capsys)
    assert code == EXIT_PARTIAL
    assert report["state"] == "failed"
    assert report["message"] == "no rows staged: all 12 rows rejected"
    assert report["rows"] == {"staged": 0, "rejected": 12}
    assert report["files"]["failed"] == 0  # each file committed; the run as a whole failed
    counts = staged_counts(tmp_path / "state", key="order_id")
    assert counts == {"rows": 0, "distinct": 0, "rejected": 12}


@pytest.mark.usefixtures("ray_session")
def test_a_run_whose_quarantines_a_resume_cannot_fix_offers_no_resume(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = small_job(tmp_path, "bad_file", {"a/1.csv": rows(4, good=True), "b/2.csv": ""})
    (tmp_path / "in" / "b" / "2.csv").write_bytes(b"")  # empty: bad in itself
    state = tmp_path / "state"
    code = invoke(["run", str(job), "--state-dir", str(state), "--no-progress"])
    err = capsys.readouterr().err
    assert code == EXIT_PARTIAL
    assert "resume with:" not in err and "nothing a resume can retry" in err
    assert staged_counts(state) == {"rows": 4, "distinct": 4, "rejected": 0}
    # a batch that failed (its source's endpoint down): a resume may succeed, and says so
    code = invoke(["run", str(job), "--state-dir", str(state), "--no-progress", "--full-refresh",
                   "--set", "execution.max_retries=0", "--set", 'faults={fail_paths=["/a/"]}'])
    assert code == EXIT_PARTIAL and "resume with: batchrun resume" in capsys.readouterr().err


@pytest.mark.usefixtures("ray_session")
def test_run_rejecting_more_than_max_run_reject_ratio_fails_with_the_ratio(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = {"a/1.csv": rows(6, good=True) + rows(2, good=False, start=7),
            "b/2.csv": rows(1, good=True, start=9) + rows(1, good=False, start=10)}
    job = small_job(tmp_path, "some_bad", body, "max_run_reject_ratio = 0.25")
    code, report = run_json(job, tmp_path / "state", capsys)
    assert code == EXIT_PARTIAL
    assert report["state"] == "failed"
    assert report["message"] == ("3 of 10 rows rejected (30.00%), more than"
                                 " validation.max_run_reject_ratio = 0.25")
    assert staged_counts(tmp_path / "state") == {"rows": 7, "distinct": 7, "rejected": 3}
    looser = small_job(tmp_path, "some_bad", body, "max_run_reject_ratio = 0.3")
    code, report = run_json(looser, tmp_path / "state", capsys, "--full-refresh")
    assert code == EXIT_OK
    assert report["state"] == "succeeded" and report["message"] is None
    assert staged_counts(tmp_path / "state") == {"rows": 7, "distinct": 7, "rejected": 3}


# -- which run `resume` picks -------------------------------------------------------------------


def cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchrun", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_resume_without_run_id_finishes_the_killed_job_not_a_later_success(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], tiny_data: tuple[Path, DemoTruth]
        ) -> None:
    data, truth = demo_data
    killed, state = start_slow_run(tmp_path, data)
    try:
        wait_for(lambda: some_committed_others_in_flight(state))
        kill_group(killed, signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        kill_group(killed, signal.SIGKILL)
    run_a = Catalog(state).latest_run_id()
    (tmp_path / "b").mkdir()
    job_b = write_job(tmp_path / "b", tiny_data[0], name="other_job")
    assert cli("run", job_b, "--state-dir", state, "--no-progress").returncode == EXIT_OK
    run_b = Catalog(state).latest_run_id()
    assert run_b != run_a
    resumed = cli("resume", "--state-dir", state, "--no-progress")
    assert resumed.returncode == EXIT_OK, resumed.stderr
    catalog = Catalog(state)
    assert catalog.run(run_a).state is RunState.SUCCEEDED
    assert staged_counts(state, run_a) == {"rows": truth.total_rows, "distinct": truth.total_rows,
                                           "rejected": 0}
    assert staged_counts(state, run_b) == {"rows": tiny_data[1].total_rows,
                                           "distinct": tiny_data[1].total_rows, "rejected": 0}
    again = cli("resume", "--state-dir", state, "--no-progress")
    assert again.returncode == EXIT_OK
    assert again.stderr.strip() == f"nothing to resume: no failed or interrupted run in {state}"


def failed_run(tmp_path: Path, name: str, data: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> str:
    """A run of `name` whose supplier_01 batches fail (an injected endpoint outage)."""
    (tmp_path / name).mkdir()
    job = write_job(tmp_path / name, data, name=name, execution="workers = 2\nmax_retries = 0")
    monkeypatch.setenv(FAULTS_ENV, 'fail_paths = ["supplier_01"]')
    code, report = run_json(job, tmp_path / "state", capsys)
    monkeypatch.delenv(FAULTS_ENV)
    assert code == EXIT_PARTIAL and report["batches"]["failed"] > 0
    return str(report["run_id"])


@pytest.mark.usefixtures("ray_session")
def test_resume_without_run_id_lists_several_unfinished_runs_and_an_explicit_id_still_works(
        tmp_path: Path, tiny_data: tuple[Path, DemoTruth], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = tiny_data
    state = str(tmp_path / "state")
    first = failed_run(tmp_path, "job_one", data, monkeypatch, capsys)
    second = failed_run(tmp_path, "job_two", data, monkeypatch, capsys)
    assert invoke(["resume", "--state-dir", state, "--no-progress"]) == EXIT_USAGE
    listed = capsys.readouterr().err
    assert "2 unfinished runs" in listed and "batchrun resume RUN_ID" in listed
    assert f"{second}  job job_two  failed" in listed and f"{first}  job job_one  failed" in listed
    assert listed.index(second) < listed.index(first)  # the run recorded last first
    assert invoke(["resume", first, "--state-dir", state, "--no-progress"]) == EXIT_OK
    assert staged_counts(Path(state), first) == {"rows": truth.total_rows,
                                                 "distinct": truth.total_rows, "rejected": 0}
    assert invoke(["resume", "--state-dir", state, "--no-progress"]) == EXIT_OK  # job_two's
    assert Catalog(Path(state)).run(second).state is RunState.SUCCEEDED
    assert staged_counts(Path(state), second)["rows"] == truth.total_rows


def test_latest_run_is_the_one_recorded_last_even_if_the_clock_stepped_back(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = Catalog(tmp_path / "state")
    for run_id, created_at in [("run-before-the-step", 2_000_000_000.0),
                               ("run-after-the-step", 1_000_000_000.0)]:
        catalog.create_run(RunRecord(
            run_id=run_id, job="j", table="t", job_file="j.toml", staging_dir=str(tmp_path),
            config={}, schema={}, state=RunState.SUCCEEDED, pid=None, host=None,
            created_at=created_at, started_at=None, finished_at=None, message=None), [])
    assert catalog.latest_run_id() == "run-after-the-step"
    assert catalog.run_ids() == ["run-after-the-step", "run-before-the-step"]
    assert invoke(["runs", "--state-dir", str(tmp_path / "state"), "--json"]) == EXIT_OK
    history = parse_json(capsys.readouterr().out)
    assert [r["run_id"] for r in history] == ["run-after-the-step", "run-before-the-step"]


# -- what a resume may change -------------------------------------------------------------------


@pytest.mark.usefixtures("ray_session")
def test_resume_refuses_keys_that_change_what_is_staged_and_allows_execution_keys(
        tmp_path: Path, tiny_data: tuple[Path, DemoTruth], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = tiny_data
    run_id = failed_run(tmp_path, "job_one", data, monkeypatch, capsys)
    state = str(tmp_path / "state")
    for key, value in [("schema.columns.order_id.type", '"string"'),
                       ("validation.max_reject_ratio", "0.5"), ("source.group_by", '"none"'),
                       ("batch.max_files", "10"), ("staging.dir", '"elsewhere"'),
                       ("job.table", '"other"')]:
        code = invoke(["resume", run_id, "--state-dir", state, "--set", f"{key}={value}"])
        assert code == EXIT_USAGE, key
        message = capsys.readouterr().err.strip()
        assert message.count("\n") == 0 and key in message and "cannot change on resume" in message
    catalog = Catalog(Path(state))
    assert catalog.run(run_id).state is RunState.FAILED  # nothing was started
    code = invoke(["resume", run_id, "--state-dir", state, "--no-progress", "--workers", "1",
                   "--set", "execution.max_retries=2", "--max-in-flight", "3"])
    assert code == EXIT_OK
    assert catalog.run(run_id).config["execution"]["max_retries"] == 0  # stored job unchanged
    assert staged_counts(Path(state), run_id) == {"rows": truth.total_rows,
                                                  "distinct": truth.total_rows, "rejected": 0}


# -- bounded messages ---------------------------------------------------------------------------


@pytest.mark.usefixtures("ray_session")
def test_a_very_wide_header_leaves_a_bounded_catalog_and_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = small_job(tmp_path, "wide", {"a/good.csv": rows(4, good=True)})
    wide = tmp_path / "in" / "b" / "wide.csv"
    wide.parent.mkdir()
    columns = 120_000  # the header stays under Arrow's 1 MB read block
    wide.write_text(",".join(f"c{i}" for i in range(columns)) + "\n"
                    + ",".join("1" for _ in range(columns)) + "\n")
    assert wide.stat().st_size > 1_000_000
    code, report = run_json(job, tmp_path / "state", capsys)
    assert code == EXIT_PARTIAL
    assert report["files"]["failed"] == 1 and report["rows"]["staged"] == 4
    assert staged_counts(tmp_path / "state") == {"rows": 4, "distinct": 4, "rejected": 0}
    [failed] = report["failed_files"]
    assert failed["path"].endswith("wide.csv")
    assert len(failed["error"]) <= 1000 and failed["error"].endswith("…")
    assert len(json.dumps(report)) < 20_000
    assert (tmp_path / "state" / "catalog.sqlite").stat().st_size < 1_000_000
    db = sqlite3.connect(tmp_path / "state" / "catalog.sqlite")
    longest = db.execute("SELECT max(max(length(coalesce(error, ''))),"
                         " max(length(coalesce(warning, '')))) FROM files").fetchone()[0]
    longest_attempt = db.execute("SELECT max(length(coalesce(error, ''))) FROM attempts"
                                 ).fetchone()[0]
    assert longest <= 1000 and longest_attempt <= 1000


# -- read-only commands on a state dir without a catalog ------------------------------------------


@pytest.mark.parametrize("command", ["status", "runs", "report", "resume", "verify", "rejects",
                                     "query"])
@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_read_only_commands_on_a_state_dir_without_runs_say_so_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, kind: str) -> None:
    state = tmp_path / "state"
    if kind == "empty":
        state.mkdir()
    sql = ["SELECT 1"] if command == "query" else []
    assert invoke([command, *sql, "--state-dir", str(state)]) == EXIT_USAGE
    message = capsys.readouterr().err.strip()
    assert message == (f"error: no runs in {state}: it holds no catalog"
                       " (a job's runs live in .batchrun beside its job file: pass --job"
                       " JOB_FILE, or --state-dir DIR)")
    assert state.exists() == (kind == "empty")
    assert not (state / "catalog.sqlite").exists()
