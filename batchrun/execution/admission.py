"""Admission: which queued batch may start now, under the run's contention controls.

Pure logic, no Ray and no I/O: the scheduler (`scheduler.py`) asks `next_batch(now)` for a
batch to dispatch, tells `finished(...)` how each one ended, and sleeps until `wake_at()`
when nothing may start. The controls, all per run:

- global: at most `in_flight` batches and `max_bytes` input bytes in flight (a batch
  larger than `max_bytes` still runs, alone);
- per source: at most `per_source` batches in flight, at most `rate` batch starts per
  second (a token bucket holding one token, so starts are spaced 1/rate apart), and a
  circuit breaker: `breaker_failures` consecutive failed batches open it for
  `breaker_cooldown` seconds, then one probe batch is let through; if the probe fails too
  the source's remaining batches are skipped (the other sources go on);
- between sources: the first dispatch of each source waits `stagger` seconds after the
  first dispatch of the one before it (plan order);
- `sequential`: one batch at a time, strictly in plan order (retries included).

Within those limits sources take turns (round robin), so one big source cannot starve
the others. Retries wait for their back-off at the head of their source's queue.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from dataclasses import dataclass, field
from enum import Enum

from batchrun.model import Fingerprint


@dataclass(frozen=True)
class Controls:
    in_flight: int
    per_source: int | None = 3
    max_bytes: int | None = None
    stagger: float = 0.0
    rate: float | None = None
    breaker_failures: int = 3
    breaker_cooldown: float = 30.0
    sequential: bool = False


@dataclass(frozen=True, order=True)
class QueuedBatch:
    seq: int
    batch_id: str = field(compare=False)
    source: str = field(compare=False)
    bytes: int = field(compare=False)
    files: tuple[str, ...] = field(compare=False)
    expected: tuple[Fingerprint, ...] = field(default=(), compare=False)
    """Each file's planned fingerprint, in the order of `files` (checked by the worker)."""


class Breaker(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    PROBING = "probing"
    TRIPPED = "tripped"
    """The probe failed: the source is given up for this run."""


@dataclass
class _Source:
    name: str
    first_seq: int
    fresh: deque[QueuedBatch] = field(default_factory=deque)
    """Batches never tried in this run, in plan order."""
    retries: list[tuple[float, int, QueuedBatch]] = field(default_factory=list)
    """(not before, seq, batch): a heap of failed attempts waiting out their back-off."""
    in_flight: int = 0
    opened_at: float | None = None
    next_start: float = 0.0
    failures: int = 0
    breaker: Breaker = Breaker.CLOSED
    reopens_at: float = 0.0
    last_error: str = ""
    probe: str | None = None
    """While probing: the one batch allowed through (it may be retried, nothing else)."""

    @property
    def waiting(self) -> bool:
        return bool(self.fresh or self.retries)

    def lowest_seq(self) -> int:
        seqs = [entry[1] for entry in self.retries[:1]]
        return min(seqs + [self.fresh[0].seq] if self.fresh else seqs)

    def head(self, now: float, in_order: bool = False) -> QueuedBatch | None:
        """A due retry first, else the next fresh batch. `in_order`: only the lowest seq,
        and only once it is due (sequential mode)."""
        retry = self.retries[0] if self.retries else None
        if in_order:
            if retry and (not self.fresh or retry[1] < self.fresh[0].seq):
                return retry[2] if retry[0] <= now else None
            return self.fresh[0] if self.fresh else None
        if retry and retry[0] <= now:
            return retry[2]
        return self.fresh[0] if self.fresh else None

    def pop(self, batch: QueuedBatch) -> None:
        for index, entry in enumerate(self.retries):
            if entry[2] is batch:
                self.retries.pop(index)
                heapq.heapify(self.retries)
                return
        self.fresh.popleft()

    def due(self, batch_id: str, now: float) -> QueuedBatch | None:
        """That batch, if it is queued and due (the breaker's probe)."""
        for not_before, _, batch in self.retries:
            if batch.batch_id == batch_id:
                return batch if not_before <= now else None
        if self.fresh and self.fresh[0].batch_id == batch_id:
            return self.fresh[0]
        return None

    def drain(self) -> list[QueuedBatch]:
        batches = [*self.fresh, *(entry[2] for entry in sorted(self.retries))]
        self.fresh.clear()
        self.retries.clear()
        return batches


@dataclass
class Admission:
    controls: Controls
    sources: dict[str, _Source] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    """Sources in plan order (by their first batch)."""
    in_flight: int = 0
    bytes_in_flight: int = 0
    opened: int = 0
    """Sources whose first batch has been dispatched (a prefix of `order`)."""
    last_opened_at: float | None = None
    turn: int = 0
    skipped: list[tuple[QueuedBatch, str]] = field(default_factory=list)
    """Batches given up because their source's breaker stayed open (drained by the caller)."""
    events: list[str] = field(default_factory=list)
    """Breaker transitions, for the log (drained by the caller)."""

    # -- queueing ------------------------------------------------------------------------

    def add(self, batch: QueuedBatch, not_before: float = 0.0) -> None:
        source = self.sources.get(batch.source)
        if source is None:
            source = self.sources[batch.source] = _Source(batch.source, batch.seq)
            self.order.append(batch.source)  # batches arrive in plan order
        source.first_seq = min(source.first_seq, batch.seq)
        if source.breaker is Breaker.TRIPPED:
            self.skipped.append((batch, self._trip_reason(source)))
        elif not_before or (source.fresh and source.fresh[-1].seq > batch.seq):
            heapq.heappush(source.retries, (not_before, batch.seq, batch))
        else:
            source.fresh.append(batch)

    def retry(self, batch: QueuedBatch, not_before: float) -> None:
        """A failed attempt: back in its source's queue, not before its back-off ends."""
        self.add(batch, not_before)

    def remaining(self) -> list[QueuedBatch]:
        return [b for name in self.order for b in
                [*self.sources[name].fresh, *(e[2] for e in self.sources[name].retries)]]

    def __bool__(self) -> bool:
        return any(source.waiting for source in self.sources.values())

    # -- choosing --------------------------------------------------------------------------

    def next_batch(self, now: float) -> QueuedBatch | None:
        """The batch to dispatch now, or None; marks it in flight."""
        if self.in_flight >= self.controls.in_flight:
            return None
        if self.controls.sequential:
            return self._next_in_plan_order(now)
        for name in self._openable(now):  # a source not started yet goes first
            batch = self._admissible(self.sources[name], now)
            if batch is not None:
                return self._start(self.sources[name], batch, now)
        opened = self.order[:self.opened]
        for offset in range(len(opened)):
            name = opened[(self.turn + offset) % len(opened)]
            batch = self._admissible(self.sources[name], now)
            if batch is not None:
                self.turn = (self.turn + offset + 1) % len(opened)
                return self._start(self.sources[name], batch, now)
        return None

    def _next_in_plan_order(self, now: float) -> QueuedBatch | None:
        waiting = [s for s in self.sources.values() if s.waiting]
        if not waiting:
            return None
        source = min(waiting, key=lambda s: s.lowest_seq())
        batch = source.head(now, in_order=True)
        return self._start(source, batch, now) if batch else None

    def _openable(self, now: float) -> list[str]:
        """The next source in plan order, if its stagger delay has passed."""
        if self.opened >= len(self.order):
            return []
        if self.last_opened_at is not None and now < self.last_opened_at + self.controls.stagger:
            return []
        return [self.order[self.opened]]

    def _admissible(self, source: _Source, now: float) -> QueuedBatch | None:
        batch = source.head(now)
        if source.breaker is Breaker.PROBING and source.probe is not None:
            batch = source.due(source.probe, now)  # only the probe, until it settles
        if batch is None or now < source.next_start:
            return None
        cap = self.controls.per_source
        if cap is not None and source.in_flight >= cap:
            return None
        if not self._breaker_allows(source, now):
            return None
        limit = self.controls.max_bytes
        if limit is not None and self.in_flight and self.bytes_in_flight + batch.bytes > limit:
            return None
        return batch

    def _breaker_allows(self, source: _Source, now: float) -> bool:
        if source.breaker is Breaker.CLOSED:
            return True
        if source.breaker is Breaker.PROBING:
            return not source.in_flight
        if source.breaker is Breaker.OPEN and now >= source.reopens_at and not source.in_flight:
            source.breaker = Breaker.PROBING
            self.events.append(f"source {source.name}: cool-down over, sending one probe batch")
            return True
        return False

    def _start(self, source: _Source, batch: QueuedBatch, now: float) -> QueuedBatch:
        source.pop(batch)
        if source.breaker is Breaker.PROBING and source.probe is None:
            source.probe = batch.batch_id
        source.in_flight += 1
        if self.controls.rate:
            source.next_start = now + 1.0 / self.controls.rate
        if source.opened_at is None:
            source.opened_at = now
            self.last_opened_at = now
            if self.opened < len(self.order) and self.order[self.opened] == source.name:
                self.opened += 1
        self.in_flight += 1
        self.bytes_in_flight += batch.bytes
        return batch

    # -- outcomes --------------------------------------------------------------------------

    def finished(self, batch: QueuedBatch, now: float, failed: bool | None,
                 error: str = "") -> None:
        """One attempt ended. `failed`: True for a failed batch, False for a committed one,
        None for an attempt that will be retried (it does not move the breaker)."""
        source = self.sources[batch.source]
        source.in_flight -= 1
        self.in_flight -= 1
        self.bytes_in_flight -= batch.bytes
        if failed is None:
            return
        if not failed:
            if source.breaker is not Breaker.CLOSED:
                self.events.append(f"source {source.name}: probe succeeded, breaker closed")
            source.failures, source.breaker, source.probe = 0, Breaker.CLOSED, None
            return
        source.failures += 1
        source.last_error = error
        if source.breaker is Breaker.PROBING:
            self._trip(source)
        elif (source.breaker is Breaker.CLOSED and self.controls.breaker_failures
              and source.failures >= self.controls.breaker_failures):
            source.breaker = Breaker.OPEN
            source.reopens_at = now + self.controls.breaker_cooldown
            self.events.append(
                f"source {source.name}: {source.failures} consecutive failed batches, breaker "
                f"open for {self.controls.breaker_cooldown:g}s (last error: {error})")

    def _trip(self, source: _Source) -> None:
        source.breaker = Breaker.TRIPPED
        reason = self._trip_reason(source)
        self.events.append(reason)
        self.skipped.extend((batch, reason) for batch in source.drain())

    def _trip_reason(self, source: _Source) -> str:
        return (f"skipped: circuit breaker of source {source.name} stayed open after "
                f"{source.failures} consecutive failed batches (last error: {source.last_error})")

    def take_skipped(self) -> list[tuple[QueuedBatch, str]]:
        skipped, self.skipped = self.skipped, []
        return skipped

    def take_events(self) -> list[str]:
        events, self.events = self.events, []
        return events

    # -- waiting ---------------------------------------------------------------------------

    def wake_at(self, now: float) -> float | None:
        """The earliest time a batch that cannot start now might be able to; None if no
        queued batch waits on time (only on running batches finishing)."""
        times: list[float] = []
        for name in self.order:
            source = self.sources[name]
            if not source.waiting:
                continue
            times += [entry[0] for entry in source.retries[:1]] + [source.next_start]
            if source.breaker is Breaker.OPEN:
                times.append(source.reopens_at)
        if self.last_opened_at is not None and self.opened < len(self.order):
            times.append(self.last_opened_at + self.controls.stagger)
        future = [t for t in times if t > now]
        return min(future) if future else None


def per_source_peaks(intervals: list[tuple[str, float, float]]) -> dict[str, int]:
    """Max number of overlapping (start, end) intervals per source."""
    events: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for source, start, end in intervals:
        events[source] += [(start, 1), (end, -1)]
    return {source: peak_overlap(points) for source, points in events.items()}


def peak_overlap(points: list[tuple[float, int]]) -> int:
    """Ends sort before starts at the same instant: touching intervals do not overlap."""
    peak = level = 0
    for _, step in sorted(points):
        level += step
        peak = max(peak, level)
    return peak
