"""Run metrics from the catalog's per-attempt records: what `batchrun report` prints and
`batchrun compare` tabulates.

Latency is a batch's time from dispatch to commit as the driver saw it (queueing on the
actor included); processing is the worker's own start-to-finish. Throughput divides the
committed input bytes and staged rows by the *active* time: the union of the intervals in
which at least one batch was in flight, so Ray start-up, planning and the gap between a
kill and its resume do not count (the run's wall time is reported next to it).

Steady throughput leaves out the start-up transient too (actors starting, the first
batches warming up): the bytes committed after the first commit, over the active time from
the first commit to the last. With 20 batches of 40 MB on 2 workers, the first commit came
~1.1 s after the first dispatch, a fifth of the run's active time.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from batchrun.catalog import Catalog
from batchrun.execution.admission import peak_overlap, per_source_peaks
from batchrun.model import AttemptOutcome
from batchrun.report import run_status


def run_metrics(catalog: Catalog, run_id: str) -> dict[str, Any]:
    status = run_status(catalog, run_id)
    attempts = [a for a in catalog.attempt_rows(run_id) if a["ended_at"] is not None]
    committed = [a for a in attempts if a["outcome"] == AttemptOutcome.COMMITTED]
    intervals = [(a["source"] or "", a["queued_at"], a["ended_at"]) for a in attempts]
    active = _union_length([(start, end) for _, start, end in intervals])
    staged_bytes = sum(a["bytes"] or 0 for a in committed)
    retried = sum(a["outcome"] == AttemptOutcome.RETRIED for a in attempts)
    failed = sum(a["outcome"] == AttemptOutcome.FAILED for a in attempts)
    latency = [a["ended_at"] - a["queued_at"] for a in committed]
    processing = [a["finished_at"] - a["started_at"] for a in committed
                  if a["finished_at"] is not None and a["started_at"] is not None]
    return {
        "run_id": run_id, "job": status["job"], "state": status["state"],
        "wall_s": status["duration_s"], "active_s": round(active, 3),
        "bytes": staged_bytes, "rows_staged": status["rows"]["staged"],
        "rows_rejected": status["rows"]["rejected"],
        "mb_per_s": round(staged_bytes / 1e6 / active, 2) if active else 0.0,
        "rows_per_s": round(status["rows"]["staged"] / active, 1) if active else 0.0,
        "steady_mb_per_s": steady_throughput(committed, intervals),
        "batches": status["batches"], "attempts": len(attempts), "retries": retried,
        "failed_batches": status["batches"]["failed"],
        "skipped_batches": status["batches"]["skipped"],
        "error_rate": round((retried + failed) / len(attempts), 4) if attempts else 0.0,
        **_percentiles("latency", latency), **_percentiles("processing", processing),
        "max_in_flight": peak_overlap(_points(intervals)),
        "max_bytes_in_flight": peak_bytes_in_flight(attempts),
        "max_concurrency_per_source": max(per_source_peaks(intervals).values(), default=0),
        "sources": _per_source(attempts, intervals),
        "concurrency": concurrency_timeline(intervals),
    }


def steady_throughput(committed: list[dict[str, Any]],
                      intervals: list[tuple[str, float, float]]) -> float | None:
    """MB/s from the first commit to the last (None with fewer than two commits)."""
    ends = sorted(a["ended_at"] for a in committed)
    if len(ends) < 2:
        return None
    first, last = ends[0], ends[-1]
    window = _union_length([(max(start, first), min(end, last)) for _, start, end in intervals
                            if end > first and start < last])
    later = sum(a["bytes"] or 0 for a in committed if a["ended_at"] > first)
    return round(later / 1e6 / window, 2) if window else None


def _percentiles(name: str, values: list[float]) -> dict[str, float | None]:
    keys = [f"{name}_p50_s", f"{name}_p95_s", f"{name}_p99_s"]
    if not values:
        return dict.fromkeys(keys)
    found = np.percentile(np.array(values), [50, 95, 99])
    return {key: round(float(v), 3) for key, v in zip(keys, found)}


def _per_source(attempts: list[dict[str, Any]],
                intervals: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
    peaks = per_source_peaks(intervals)
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for attempt in attempts:
        grouped[attempt["source"] or ""].append(attempt)
    rows = []
    for source in sorted(grouped):
        mine = grouped[source]
        done = [a for a in mine if a["outcome"] == AttemptOutcome.COMMITTED]
        rows.append({
            "source": source, "attempts": len(mine), "committed": len(done),
            "retries": sum(a["outcome"] == AttemptOutcome.RETRIED for a in mine),
            "failed": sum(a["outcome"] == AttemptOutcome.FAILED for a in mine),
            "bytes": sum(a["bytes"] or 0 for a in done),
            "rows": sum(a["rows_staged"] or 0 for a in done),
            "first_dispatch": min(a["queued_at"] for a in mine),
            "max_concurrency": peaks.get(source, 0),
        })
    return rows


def concurrency_timeline(intervals: list[tuple[str, float, float]]) -> list[tuple[float, int]]:
    """(seconds since the first dispatch, batches in flight) at every change."""
    points = _points(intervals)
    if not points:
        return []
    origin = min(t for t, _ in points)
    level, timeline = 0, []
    for moment, step in sorted(points):
        level += step
        timeline.append((round(moment - origin, 3), level))
    return timeline


def peak_bytes_in_flight(attempts: list[dict[str, Any]]) -> int:
    """Most input bytes in flight at once, from the recorded dispatch and end times."""
    ended = [a for a in attempts if a["ended_at"] is not None]
    points = [(a["queued_at"], a["bytes"] or 0) for a in ended]
    points += [(a["ended_at"], -(a["bytes"] or 0)) for a in ended]
    level = peak = 0
    for _, step in sorted(points):
        level += step
        peak = max(peak, level)
    return peak


def _points(intervals: list[tuple[str, float, float]]) -> list[tuple[float, int]]:
    return [p for _, start, end in intervals for p in ((start, 1), (end, -1))]


def _union_length(spans: list[tuple[float, float]]) -> float:
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total
