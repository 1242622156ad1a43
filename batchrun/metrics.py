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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from batchrun.catalog import Catalog
from batchrun.execution.admission import peak_overlap, per_source_peaks
from batchrun.model import AttemptOutcome, BatchCounts, RowCounts, RunState
from batchrun.report import node_label, run_status

COMMITTED, RETRIED, FAILED = AttemptOutcome.COMMITTED, AttemptOutcome.RETRIED, AttemptOutcome.FAILED


@dataclass(frozen=True)
class Percentiles:
    """Seconds at the 50th, 95th and 99th percentile; None without a value."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None

    def as_json(self, name: str) -> dict[str, float | None]:
        return {f"{name}_p50_s": self.p50, f"{name}_p95_s": self.p95, f"{name}_p99_s": self.p99}


@dataclass(frozen=True)
class SourceMetrics:
    source: str
    attempts: int
    committed: int
    retries: int
    failed: int
    bytes: int
    rows: int
    first_dispatch: float
    max_concurrency: int


@dataclass(frozen=True)
class NodeMetrics:
    """One node's committed work. Its throughput divides its input bytes by its busy
    time: the union of its workers' processing intervals (from reading the first file to
    the written output), so a node that joined late or died early is not diluted."""

    node: str
    """`report.node_label`: IP and the start of the Ray node id."""
    node_id: str
    node_ip: str | None
    batches: int
    rows: int
    bytes: int
    busy_s: float
    mb_per_s: float


@dataclass(frozen=True)
class RunMetrics:
    """What `batchrun report` prints; `as_json()` is `report --json`."""

    run_id: str
    job: str
    state: RunState
    wall_s: float | None
    active_s: float
    bytes: int
    """Input bytes of the committed attempts."""
    rows: RowCounts
    mb_per_s: float
    rows_per_s: float
    steady_mb_per_s: float | None
    batches: BatchCounts
    attempts: int
    retries: int
    error_rate: float
    latency: Percentiles
    processing: Percentiles
    max_in_flight: int
    max_bytes_in_flight: int
    max_concurrency_per_source: int
    sources: tuple[SourceMetrics, ...]
    concurrency: tuple[tuple[float, int], ...]
    nodes: tuple[NodeMetrics, ...] = ()

    @property
    def failed_batches(self) -> int:
        return self.batches.failed

    @property
    def skipped_batches(self) -> int:
        return self.batches.skipped

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "job": self.job, "state": self.state.value,
            "wall_s": self.wall_s, "active_s": self.active_s, "bytes": self.bytes,
            "rows_staged": self.rows.staged, "rows_rejected": self.rows.rejected,
            "mb_per_s": self.mb_per_s, "rows_per_s": self.rows_per_s,
            "steady_mb_per_s": self.steady_mb_per_s, "batches": self.batches.as_json(),
            "attempts": self.attempts, "retries": self.retries,
            "failed_batches": self.failed_batches, "skipped_batches": self.skipped_batches,
            "error_rate": self.error_rate, **self.latency.as_json("latency"),
            **self.processing.as_json("processing"), "max_in_flight": self.max_in_flight,
            "max_bytes_in_flight": self.max_bytes_in_flight,
            "max_concurrency_per_source": self.max_concurrency_per_source,
            "sources": [asdict(s) for s in self.sources],
            "concurrency": [list(point) for point in self.concurrency],
            "nodes": [asdict(n) for n in self.nodes],
        }


def run_metrics(catalog: Catalog, run_id: str) -> RunMetrics:
    status = run_status(catalog, run_id)
    attempts = [a for a in catalog.attempt_rows(run_id) if a["ended_at"] is not None]
    committed = [a for a in attempts if a["outcome"] == COMMITTED]
    intervals = [(a["source"] or "", a["queued_at"], a["ended_at"]) for a in attempts]
    active = _union_length([(start, end) for _, start, end in intervals])
    staged_bytes = sum(a["bytes"] or 0 for a in committed)
    retried = sum(a["outcome"] == RETRIED for a in attempts)
    failed = sum(a["outcome"] == FAILED for a in attempts)
    rows = status.counts.rows
    return RunMetrics(
        run_id=run_id, job=status.job, state=status.state, wall_s=status.duration_s,
        active_s=round(active, 3), bytes=staged_bytes, rows=rows,
        mb_per_s=round(staged_bytes / 1e6 / active, 2) if active else 0.0,
        rows_per_s=round(rows.staged / active, 1) if active else 0.0,
        steady_mb_per_s=steady_throughput(committed, intervals),
        batches=status.counts.batches, attempts=len(attempts), retries=retried,
        error_rate=round((retried + failed) / len(attempts), 4) if attempts else 0.0,
        latency=_percentiles([a["ended_at"] - a["queued_at"] for a in committed]),
        processing=_percentiles([a["finished_at"] - a["started_at"] for a in committed
                                 if a["finished_at"] is not None and a["started_at"] is not None]),
        max_in_flight=peak_overlap(_points(intervals)),
        max_bytes_in_flight=peak_bytes_in_flight(attempts),
        max_concurrency_per_source=max(per_source_peaks(intervals).values(), default=0),
        sources=_per_source(attempts, intervals),
        concurrency=tuple(concurrency_timeline(intervals)),
        nodes=per_node(catalog.committed_attempts_by_node(run_id)))


def per_node(attempts: list[dict[str, Any]]) -> tuple[NodeMetrics, ...]:
    """Batches, rows, bytes and MB/s of each node, from its committed attempts."""
    grouped: dict[tuple[str, str | None], list[dict[str, Any]]] = defaultdict(list)
    for attempt in attempts:
        grouped[(attempt["node"], attempt["node_ip"])].append(attempt)
    return tuple(_node_metrics(node, ip, grouped[(node, ip)])
                 for node, ip in sorted(grouped, key=lambda key: (key[1] or "", key[0])))


def _node_metrics(node: str, ip: str | None, mine: list[dict[str, Any]]) -> NodeMetrics:
    busy = _union_length([(a["started_at"], a["finished_at"]) for a in mine
                          if a["started_at"] is not None and a["finished_at"] is not None])
    size = sum(a["bytes"] or 0 for a in mine)
    return NodeMetrics(node=node_label(node, ip) or node, node_id=node, node_ip=ip,
                       batches=len(mine), rows=sum(a["rows_staged"] or 0 for a in mine),
                       bytes=size, busy_s=round(busy, 3),
                       mb_per_s=round(size / 1e6 / busy, 2) if busy else 0.0)


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


def _percentiles(values: list[float]) -> Percentiles:
    if not values:
        return Percentiles()
    p50, p95, p99 = (round(float(v), 3) for v in np.percentile(np.array(values), [50, 95, 99]))
    return Percentiles(p50, p95, p99)


def _per_source(attempts: list[dict[str, Any]],
                intervals: list[tuple[str, float, float]]) -> tuple[SourceMetrics, ...]:
    peaks = per_source_peaks(intervals)
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for attempt in attempts:
        grouped[attempt["source"] or ""].append(attempt)
    return tuple(_source_metrics(source, grouped[source], peaks.get(source, 0))
                 for source in sorted(grouped))


def _source_metrics(source: str, mine: list[dict[str, Any]], peak: int) -> SourceMetrics:
    done = [a for a in mine if a["outcome"] == COMMITTED]
    return SourceMetrics(
        source=source, attempts=len(mine), committed=len(done),
        retries=sum(a["outcome"] == RETRIED for a in mine),
        failed=sum(a["outcome"] == FAILED for a in mine),
        bytes=sum(a["bytes"] or 0 for a in done),
        rows=sum(a["rows_staged"] or 0 for a in done),
        first_dispatch=min(a["queued_at"] for a in mine), max_concurrency=peak)


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


def commit_series(attempts: list[dict[str, Any]]
                  ) -> tuple[tuple[float, ...], tuple[tuple[float, int, int], ...]]:
    """The committed attempts' latencies (dispatch to commit, seconds) and their commits as
    (seconds since the run's first dispatch, input bytes, rows staged), in commit order."""
    ended = [a for a in attempts if a["ended_at"] is not None]
    if not ended:
        return (), ()
    origin = min(a["queued_at"] for a in ended)
    committed = sorted((a for a in ended if a["outcome"] == COMMITTED), key=lambda a: a["ended_at"])
    return (tuple(round(a["ended_at"] - a["queued_at"], 3) for a in committed),
            tuple((round(a["ended_at"] - origin, 3), a["bytes"] or 0, a["rows_staged"] or 0)
                  for a in committed))
