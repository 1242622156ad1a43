"""A run's history written through the real catalog API, no Ray: the known truth the
status and metrics tests check against.

Four batches over two sources, times in seconds from T0:
- b1 (source a, two files): dispatched at 0, committed at 2 (12 rows, one rejected, a warning)
  by node A (10.0.0.1), which worked on it from 0.5 to 1.5;
- b2 (source a, one file): attempt 1 dispatched at 0, retried at 1 (transient); attempt 2
  dispatched at 1, committed at 4 by node B (10.0.0.2), which worked on it from 2 to 3.5,
  its one file quarantined by the worker;
- b3 (source b): dispatched at 1, failed at 3 (permanent);
- b4 (source b): skipped, its source's breaker stayed open.
"""

from __future__ import annotations

import socket
from pathlib import Path

from batchrun.catalog import Catalog
from batchrun.model import (
    AttemptEnd,
    AttemptOutcome,
    BatchResult,
    Dispatch,
    ErrorKind,
    FileOutcome,
    PlannedBatch,
    PlannedFile,
    RoundRecord,
    RunRecord,
    RunState,
)

T0 = 1_700_000_000.0
MB = 1_000_000
RUN_ID = "20231114-221320-abcd"
NODE_A, NODE_B = "a" * 56, "b" * 56
NODE_IPS = {NODE_A: "10.0.0.1", NODE_B: "10.0.0.2"}


def planned(batch_id: str, seq: int, source: str, *names: str) -> PlannedBatch:
    files = tuple(PlannedFile(f"/in/{source}/{n}", 2 * MB if source == "a" else MB, T0, source)
                  for n in names)
    return PlannedBatch(batch_id, seq, source, files)


BATCHES = [planned("b1", 1, "a", "f1.csv", "f2.csv"), planned("b2", 2, "a", "f3.csv.gz"),
           planned("b3", 3, "b", "f4.csv"), planned("b4", 4, "b", "f5.csv")]


def run_record(state: RunState = RunState.FAILED, pid: int | None = 4242,
               finished_at: float | None = T0 + 10.5) -> RunRecord:
    return RunRecord(run_id=RUN_ID, job="orders_job", table="orders", job_file="/jobs/job.toml",
                     staging_dir="/staging", config={}, schema={"id": "int64"}, state=state,
                     pid=pid, host=socket.gethostname(), created_at=T0 - 1, started_at=T0,
                     finished_at=finished_at, message="1 batch(es) skipped")


def dispatch(batch: PlannedBatch, attempt: int, at: float) -> Dispatch:
    return Dispatch(batch.batch_id, attempt, 0, batch.source, batch.bytes, len(batch.files),
                    T0 + at)


def committed(batch_id: str, attempt: int, at: float, started: float, finished: float,
              node: str, *files: FileOutcome) -> AttemptEnd:
    result = BatchResult(batch_id, 0, f"/staging/{batch_id}.parquet", None,
                         sum(f.rows_staged for f in files), sum(f.rows_rejected for f in files),
                         0, T0 + started, T0 + finished, files, node=node,
                         node_ip=NODE_IPS[node])
    return AttemptEnd(batch_id, attempt, AttemptOutcome.COMMITTED, T0 + at, result=result)


def write_history(state_dir: Path, record: RunRecord | None = None) -> Catalog:
    catalog = Catalog(state_dir)
    catalog.create_run(record or run_record(), BATCHES)
    b1, b2, b3, _ = BATCHES
    rounds = [
        RoundRecord(dispatched=[dispatch(b1, 1, 0), dispatch(b2, 1, 0)]),
        RoundRecord(dispatched=[dispatch(b2, 2, 1), dispatch(b3, 1, 1)], ended=[
            AttemptEnd("b2", 1, AttemptOutcome.RETRIED, T0 + 1, "OSError: flaky disk",
                       ErrorKind.TRANSIENT)]),
        RoundRecord(ended=[committed("b1", 1, 2, 0.5, 1.5, NODE_A,
                                     FileOutcome("/in/a/f1.csv", 7, 1, warning="BOM removed"),
                                     FileOutcome("/in/a/f2.csv", 5))]),
        RoundRecord(ended=[AttemptEnd("b3", 1, AttemptOutcome.FAILED, T0 + 3, "ValueError: bad",
                                        ErrorKind.PERMANENT)],
                    skipped=[("b4", "source b: circuit breaker open")]),
        RoundRecord(ended=[committed("b2", 2, 4, 2.0, 3.5, NODE_B,
                                     FileOutcome("/in/a/f3.csv.gz", error="corrupt gzip"))]),
    ]
    for current in rounds:
        catalog.record_progress(RUN_ID, current)
    return catalog
