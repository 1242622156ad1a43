"""Driver capacity: how many batches per second one driver can admit, dispatch and commit.

The real scheduler, admission, catalog and run log run over a planned run of N one-file
batches in a temporary state dir; the workers are an `InlinePool` whose work does nothing
but return a tiny `BatchResult`, so what is timed is the driver alone. The controls are a
job's defaults for that many workers (2 × workers in flight, at most 3 per source), with
enough sources (suppliers) that the per-source cap never starves a worker.

    python scripts/capacity_commits.py [--batches N] [--workers W]   # prints JSON

Target: ≥ 1,000 commits/s, so one driver can feed ~1,000 workers running one-second
batches. `scripts/bench.py --driver-capacity` reports it with the planning figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from batchrun import logs
from batchrun.catalog import Catalog
from batchrun.execution.admission import Controls
from batchrun.execution.pool import InlinePool, Work
from batchrun.execution.scheduler import Limits, Scheduler, pending_batches
from batchrun.model import (
    BatchResult,
    BatchTask,
    FileOutcome,
    PlannedBatch,
    PlannedFile,
    RunRecord,
    RunState,
)

RUN_ID = "capacity"
PER_SOURCE = 3
"""`execution.per_source_concurrency`'s default."""


def measure_commits(batches: int, workers: int) -> dict[str, Any]:
    """Run `batches` no-op batches on `workers` in-process workers; commits per second."""
    with tempfile.TemporaryDirectory(prefix="batchrun-capacity-") as tmp:
        state = Path(tmp) / "state"
        catalog = Catalog(state)
        try:
            sources = _plan(catalog, batches, workers, Path(tmp))
            return {"batches": batches, "workers": workers, "sources": sources,
                    **_timed_run(catalog, state, workers)}
        finally:
            catalog.close()


def _timed_run(catalog: Catalog, state: Path, workers: int) -> dict[str, Any]:
    limits = Limits(workers=workers, controls=Controls(in_flight=2 * workers,
                                                       per_source=PER_SOURCE, max_bytes=None))
    logs.silence_default_sink()
    sink = logs.open_run_log(state, RUN_ID)  # a real run logs every dispatch and commit
    try:
        started = time.perf_counter()
        scheduler = Scheduler(catalog, RUN_ID, InlinePool(_noop_work), limits)
        outcome = scheduler.execute(pending_batches(catalog, RUN_ID), catalog.attempts(RUN_ID))
        seconds = time.perf_counter() - started
    finally:
        logs.close_run_log(sink)
    committed = catalog.counts(RUN_ID).batches.committed
    if committed != outcome.committed:
        raise RuntimeError(f"{outcome.committed} commits counted, {committed} in the catalog")
    return {"committed": committed, "seconds": round(seconds, 3),
            "commits_per_s": round(committed / seconds, 1),
            "catalog_s": round(outcome.catalog_s, 3),
            "catalog_share_pct": round(100 * outcome.catalog_s / seconds, 1),
            "driver_peak_rss_mb": round(_peak_rss_mb(), 1)}


def _plan(catalog: Catalog, batches: int, workers: int, folder: Path) -> int:
    """A planned run of one-file batches spread over enough sources; returns their count."""
    sources = max(1, -(-2 * workers // PER_SOURCE))
    planned = []
    for seq in range(batches):
        source = f"supplier_{seq % sources:04d}"
        path = str(folder / "data" / source / f"orders_{seq:07d}.csv")
        planned.append(PlannedBatch(batch_id=f"{seq:07d}", seq=seq, source=source, files=(
            PlannedFile(path=path, size=1_000, mtime=0.0, source=source),)))
    catalog.create_run(RunRecord(
        run_id=RUN_ID, job="capacity", table="orders", job_file=str(folder / "job.toml"),
        staging_dir=str(folder / "staging"), config={}, schema=None, state=RunState.PLANNED,
        pid=None, host=None, created_at=time.time(), started_at=None, finished_at=None,
        message=None), planned)
    return sources


def _noop_work(worker: int) -> Work:
    def work(task: BatchTask) -> BatchResult:
        now = time.time()
        return BatchResult(batch_id=task.batch_id, worker=worker, output_path=None,
                           rejects_path=None, rows_staged=1, rows_rejected=0, bytes_read=1_000,
                           started_at=now, finished_at=now,
                           files=tuple(FileOutcome(path, rows_staged=1) for path in task.files))
    return work


def _peak_rss_mb() -> float:
    """This process's peak resident set (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1_000)
    args = parser.parse_args(argv)
    print(json.dumps(measure_commits(args.batches, args.workers), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
