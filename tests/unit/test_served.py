"""`Catalog.served_files`: which version of each source file a job's table serves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from batchrun.catalog import Catalog
from batchrun.model import (
    AttemptEnd,
    AttemptOutcome,
    FileOutcome,
    PlanCounts,
    PlannedBatch,
    PlannedFile,
    RoundRecord,
    RunState,
)
from tests.unit.history import RUN_ID, T0, committed, run_record, write_history


def _second_run(catalog: Catalog, run_id: str, job: str = "orders_job") -> None:
    """A later run of the job that commits a changed /in/a/f1.csv (size 99) and nothing else."""
    batch = PlannedBatch("b1", 1, "a", (PlannedFile("/in/a/f1.csv", 99, T0 + 50, "a"),))
    catalog.create_run(dataclasses.replace(run_record(RunState.SUCCEEDED), run_id=run_id, job=job),
                       [batch])
    end = committed("b1", 1, 60, 55, 58, "a" * 56, FileOutcome("/in/a/f1.csv", 9))
    catalog.record_progress(run_id, RoundRecord(ended=[end]))


def test_each_path_is_served_from_the_latest_run_that_committed_it(tmp_path: Path) -> None:
    with write_history(tmp_path) as catalog:
        _second_run(catalog, "run-2")
        served = {f.path: f for f in catalog.served_files("orders_job")}
    assert sorted(served) == ["/in/a/f1.csv", "/in/a/f2.csv"]  # f3 quarantined, f4/f5 not committed
    assert (served["/in/a/f1.csv"].run_id, served["/in/a/f1.csv"].fingerprint.size) == ("run-2", 99)
    assert served["/in/a/f1.csv"].rows_staged == 9
    assert (served["/in/a/f2.csv"].run_id, served["/in/a/f2.csv"].rows_staged) == (RUN_ID, 5)


def test_another_jobs_runs_never_supersede_a_jobs_files(tmp_path: Path) -> None:
    with write_history(tmp_path) as catalog:
        _second_run(catalog, "run-2", job="other_job")
        served = {f.path: f.run_id for f in catalog.served_files("orders_job")}
    assert served == {"/in/a/f1.csv": RUN_ID, "/in/a/f2.csv": RUN_ID}


def test_a_file_committed_once_then_pending_in_a_later_run_stays_served_from_the_first(
        tmp_path: Path) -> None:
    with write_history(tmp_path) as catalog:
        batch = PlannedBatch("b1", 1, "a", (PlannedFile("/in/a/f2.csv", 7, T0 + 50, "a"),))
        catalog.create_run(dataclasses.replace(run_record(RunState.RUNNING), run_id="run-2"),
                           [batch])
        catalog.record_progress("run-2", RoundRecord(ended=[AttemptEnd(
            "b1", 1, AttemptOutcome.RETRIED, T0 + 51, "OSError: flaky")]))
        served = {f.path: f.run_id for f in catalog.served_files("orders_job")}
    assert served["/in/a/f2.csv"] == RUN_ID


def _full_refresh(catalog: Catalog, run_id: str, state: RunState) -> None:
    """A --full-refresh run that commits /in/a/f1.csv only (f2.csv is gone from the source)."""
    batch = PlannedBatch("b1", 1, "a", (PlannedFile("/in/a/f1.csv", 99, T0 + 50, "a"),))
    record = dataclasses.replace(run_record(state), run_id=run_id,
                                 selection=PlanCounts(0, 0, 1, full_refresh=True))
    catalog.create_run(record, [batch])
    end = committed("b1", 1, 60, 55, 58, "a" * 56, FileOutcome("/in/a/f1.csv", 9))
    catalog.record_progress(run_id, RoundRecord(ended=[end]))


def test_a_succeeded_full_refresh_rebuilds_the_table_from_the_files_it_matched(
        tmp_path: Path) -> None:
    with write_history(tmp_path) as catalog:
        _full_refresh(catalog, "refresh", RunState.SUCCEEDED)
        _second_run(catalog, "after")
        served = {f.path: f.run_id for f in catalog.served_files("orders_job")}
        serving = {(b["run_id"], b["batch_id"]) for b in catalog.serving_batches("orders_job")}
    assert served == {"/in/a/f1.csv": "after"}  # f2.csv (first run only) is no longer served
    assert serving == {("after", "b1")}


def test_a_full_refresh_that_has_not_succeeded_only_supersedes_what_it_committed(
        tmp_path: Path) -> None:
    with write_history(tmp_path) as catalog:
        _full_refresh(catalog, "refresh", RunState.FAILED)
        served = {f.path: f.run_id for f in catalog.served_files("orders_job")}
    assert served == {"/in/a/f1.csv": "refresh", "/in/a/f2.csv": RUN_ID}
