"""RunStatus from a real catalog (no Ray): every count, every listed line, and the exact
JSON `status --json`, `runs --json` and `run --json` print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from batchrun.model import AttemptOutcome, BatchState, ErrorKind, RunState
from batchrun.report import RunStatus, iso, resumable_runs, run_status, runs_status
from tests.unit.history import NODE_A, NODE_B, RUN_ID, T0, run_record, write_history

EXPECTED = {
    "run_id": RUN_ID, "job": "orders_job", "table": "orders", "state": "failed",
    "batches": {"total": 4, "committed": 2, "failed": 1, "pending": 0, "running": 0,
                "skipped": 1},
    "files": {"total": 5, "committed": 2, "failed": 2, "skipped": 1},
    "rows": {"staged": 12, "rejected": 1},
    "bytes": 8_000_000, "attempts": 4,
    "started_at": "2023-11-14T22:13:20+00:00", "finished_at": "2023-11-14T22:13:30.500000+00:00",
    "duration_s": 10.5, "pid": 4242, "host": run_record().host, "job_file": "/jobs/job.toml",
    "staging_dir": "/staging", "message": "1 batch(es) skipped",
}
DETAIL = {
    "failed_files": [{"path": "/in/a/f3.csv.gz", "batch_id": "b2", "error": "corrupt gzip"},
                     {"path": "/in/b/f4.csv", "batch_id": "b3", "error": "ValueError: bad"}],
    "skipped_files": [{"path": "/in/b/f5.csv", "batch_id": "b4", "source": "b",
                       "reason": "source b: circuit breaker open"}],
    "warnings": [{"path": "/in/a/f1.csv", "batch_id": "b1", "warning": "BOM removed"}],
    "failed_batches": [{"batch_id": "b3", "state": "failed", "attempts": 1,
                        "last_error": "ValueError: bad", "error_kind": "permanent",
                        "node": None}],
    "retried_batches": [{"batch_id": "b2", "state": "committed", "attempts": 2,
                         "last_error": "OSError: flaky disk", "error_kind": "transient",
                         "node": "10.0.0.2 (bbbbbbbb)"}],
    "nodes": [{"node": "10.0.0.1 (aaaaaaaa)", "node_id": NODE_A, "node_ip": "10.0.0.1",
               "batches": 1, "rows_staged": 12, "bytes": 4_000_000},
              {"node": "10.0.0.2 (bbbbbbbb)", "node_id": NODE_B, "node_ip": "10.0.0.2",
               "batches": 1, "rows_staged": 0, "bytes": 2_000_000}],
}


def test_status_counts_every_batch_file_and_row_of_the_recorded_history(tmp_path: Path) -> None:
    status = run_status(write_history(tmp_path), RUN_ID)
    counts = status.counts
    assert (counts.batches.total, counts.batches.committed, counts.batches.failed,
            counts.batches.skipped) == (4, 2, 1, 1)
    assert (counts.files.committed, counts.files.failed, counts.files.skipped) == (2, 2, 1)
    assert (counts.rows.staged, counts.rows.rejected, counts.attempts) == (12, 1, 4)
    assert counts.unfinished and status.state is RunState.FAILED and status.detail is None


def test_status_json_is_exactly_the_documented_contract_in_key_order(tmp_path: Path) -> None:
    found = run_status(write_history(tmp_path), RUN_ID).as_json()
    assert found == EXPECTED
    assert list(found) == list(EXPECTED)
    assert json.loads(json.dumps(found)) == found


def test_status_detail_lists_failed_skipped_warned_and_retried_lines_as_typed_records(
        tmp_path: Path) -> None:
    status = run_status(write_history(tmp_path), RUN_ID, detail=True)
    assert status.as_json() == {**EXPECTED, **DETAIL}
    assert list(status.as_json()) == [*EXPECTED, *DETAIL]
    assert status.detail is not None
    retried = status.detail.retried_batches[0]
    assert retried.state is BatchState.COMMITTED and retried.error_kind is ErrorKind.TRANSIENT
    assert [f.path for f in status.detail.failed_files] == ["/in/a/f3.csv.gz", "/in/b/f4.csv"]


def test_runs_status_lists_runs_without_detail_the_last_recorded_first(tmp_path: Path) -> None:
    catalog = write_history(tmp_path)
    history = runs_status(catalog)
    assert [type(s) for s in history] == [RunStatus]
    assert history[0].as_json() == EXPECTED


def test_a_running_run_whose_driver_is_gone_reads_as_interrupted_with_no_duration(
        tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    catalog = write_history(tmp_path, run_record(RunState.RUNNING, gone.pid, None))
    status = run_status(catalog, RUN_ID)
    assert status.state is RunState.INTERRUPTED
    assert status.as_json()["state"] == "interrupted"
    assert status.duration_s is None and status.as_json()["finished_at"] is None
    assert [r.run_id for r in resumable_runs(catalog)] == [RUN_ID]


def test_iso_writes_utc_seconds_and_leaves_an_unknown_time_unknown() -> None:
    assert iso(T0) == "2023-11-14T22:13:20+00:00"
    assert iso(None) is None


def test_a_batch_that_failed_after_a_retry_is_listed_as_failed_and_as_retried(
        tmp_path: Path) -> None:
    from batchrun.catalog import Catalog
    from batchrun.model import AttemptEnd, RoundRecord
    from tests.unit.history import BATCHES, dispatch

    catalog = Catalog(tmp_path)
    catalog.create_run(run_record(), BATCHES[2:3])
    for current in (RoundRecord(dispatched=[dispatch(BATCHES[2], 1, 0)]),
                    RoundRecord(dispatched=[dispatch(BATCHES[2], 2, 1)], ended=[
                        AttemptEnd("b3", 1, AttemptOutcome.RETRIED, T0 + 1, "OSError: a",
                                   ErrorKind.TRANSIENT)]),
                    RoundRecord(ended=[AttemptEnd("b3", 2, AttemptOutcome.FAILED, T0 + 2, "OSError: b",
                                                  ErrorKind.TRANSIENT)])):
        catalog.record_progress(RUN_ID, current)
    detail = run_status(catalog, RUN_ID, detail=True).detail
    assert detail is not None
    assert [(b.batch_id, b.attempts) for b in detail.failed_batches] == [("b3", 2)]
    assert [(b.batch_id, b.state) for b in detail.retried_batches] == [("b3", BatchState.FAILED)]


def test_status_text_names_each_node_with_its_batches_and_where_a_retried_batch_committed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from batchrun.cli import EXIT_OK, invoke

    write_history(tmp_path).close()
    assert invoke(["status", RUN_ID, "--state-dir", str(tmp_path)]) == EXIT_OK
    text = " ".join(capsys.readouterr().out.split())
    assert "nodes 10.0.0.1 (aaaaaaaa) 1 batch(es), 12 rows, 10.0.0.2 (bbbbbbbb) 1" in text
    assert "retried b2 (committed on 10.0.0.2 (bbbbbbbb), 2 attempts)" in text


def test_report_text_shows_each_nodes_batches_rows_mb_and_mb_per_s(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from batchrun.cli import EXIT_OK, invoke

    write_history(tmp_path).close()
    assert invoke(["report", RUN_ID, "--state-dir", str(tmp_path)]) == EXIT_OK
    rows = [line.replace("│", " ").split() for line in capsys.readouterr().out.splitlines()]
    assert ["10.0.0.1", "(aaaaaaaa)", "1", "12", "4.0", "1.0", "4.0"] in rows
    assert ["10.0.0.2", "(bbbbbbbb)", "1", "0", "2.0", "1.5", "1.33"] in rows
