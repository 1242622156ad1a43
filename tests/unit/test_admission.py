"""The admission rules on their own, with a hand-driven clock (no Ray, no I/O)."""

from __future__ import annotations

from batchrun.execution.admission import Admission, Controls, QueuedBatch, peak_overlap, per_source_peaks


def batches(spec: dict[str, int], size: int = 100) -> list[QueuedBatch]:
    """{"a": 3, "b": 2} → a's 3 batches then b's 2, in plan order."""
    out: list[QueuedBatch] = []
    for source, count in spec.items():
        for _ in range(count):
            out.append(QueuedBatch(len(out), f"b{len(out)}", source, size, (f"{source}/{len(out)}",)))
    return out


def admission(controls: Controls, queued: list[QueuedBatch]) -> Admission:
    gate = Admission(controls)
    for batch in queued:
        gate.add(batch)
    return gate


def start_all(gate: Admission, now: float) -> list[QueuedBatch]:
    started = []
    while (batch := gate.next_batch(now)) is not None:
        started.append(batch)
    return started


def test_per_source_cap_and_global_cap() -> None:
    gate = admission(Controls(in_flight=5, per_source=2), batches({"a": 4, "b": 4, "c": 4}))
    started = start_all(gate, 0.0)
    assert len(started) == 5
    by_source = {s: sum(b.source == s for b in started) for s in "abc"}
    assert max(by_source.values()) == 2 and sum(by_source.values()) == 5
    gate.finished(started[0], 1.0, failed=False)
    again = start_all(gate, 1.0)
    assert len(again) == 1 and again[0].source == "c"  # the only source below its cap


def test_unlimited_per_source_and_sources_take_turns() -> None:
    gate = admission(Controls(in_flight=6, per_source=None), batches({"a": 4, "b": 4}))
    started = start_all(gate, 0.0)
    assert [b.source for b in started] == ["a", "b", "a", "b", "a", "b"]
    assert [b.seq for b in started if b.source == "a"] == [0, 1, 2]


def test_stagger_delays_each_new_source() -> None:
    gate = admission(Controls(in_flight=10, per_source=1, stagger=0.2), batches({"a": 2, "b": 2, "c": 2}))
    assert [b.source for b in start_all(gate, 0.0)] == ["a"]
    assert gate.wake_at(0.0) == 0.2
    assert start_all(gate, 0.1) == []
    assert [b.source for b in start_all(gate, 0.2)] == ["b"]
    assert [b.source for b in start_all(gate, 0.4)] == ["c"]


def test_rate_limit_spaces_starts_of_a_source() -> None:
    gate = admission(Controls(in_flight=10, per_source=None, rate=2.0), batches({"a": 3}))
    assert len(start_all(gate, 0.0)) == 1
    assert start_all(gate, 0.4) == []
    assert len(start_all(gate, 0.5)) == 1


def test_bytes_in_flight_bound_but_a_big_batch_runs_alone() -> None:
    gate = admission(Controls(in_flight=10, per_source=None, max_bytes=250), batches({"a": 4}, size=100))
    assert len(start_all(gate, 0.0)) == 2
    big = Admission(Controls(in_flight=10, per_source=None, max_bytes=50))
    for batch in batches({"a": 2}, size=100):
        big.add(batch)
    assert len(start_all(big, 0.0)) == 1


def test_breaker_opens_probes_then_skips_the_source() -> None:
    controls = Controls(in_flight=10, per_source=2, breaker_failures=2, breaker_cooldown=5.0)
    gate = admission(controls, batches({"bad": 6, "good": 2}))
    first = start_all(gate, 0.0)
    bad = [b for b in first if b.source == "bad"]
    for batch in bad:
        gate.finished(batch, 1.0, failed=True, error="down")
    assert start_all(gate, 2.0) == []  # open: cooling down ("good" already all started)
    probe = start_all(gate, 6.0)
    assert len(probe) == 1 and probe[0].source == "bad"
    gate.finished(probe[0], 7.0, failed=True, error="still down")
    skipped = gate.take_skipped()
    assert len(skipped) == 3 and all("circuit breaker" in why for _, why in skipped)
    assert not gate


def test_breaker_closes_when_the_probe_succeeds() -> None:
    gate = admission(Controls(in_flight=1, per_source=1, breaker_failures=1, breaker_cooldown=1.0),
                     batches({"a": 3}))
    [first] = start_all(gate, 0.0)
    gate.finished(first, 0.5, failed=True, error="x")
    assert start_all(gate, 0.6) == []
    [probe] = start_all(gate, 1.6)
    gate.finished(probe, 2.0, failed=False)
    assert len(start_all(gate, 2.0)) == 1 and gate.take_skipped() == []


def test_retry_waits_for_back_off_and_keeps_the_probe_alive() -> None:
    gate = admission(Controls(in_flight=1, per_source=1, breaker_failures=1, breaker_cooldown=1.0),
                     batches({"a": 2}))
    [first] = start_all(gate, 0.0)
    gate.finished(first, 0.1, failed=True, error="x")
    [probe] = start_all(gate, 1.2)
    gate.finished(probe, 1.3, failed=None)  # transient: will be retried
    gate.retry(probe, 2.0)
    assert start_all(gate, 1.5) == []
    assert start_all(gate, 2.0) == [probe]


def test_sequential_is_plan_order_one_at_a_time_with_retries_first() -> None:
    gate = admission(Controls(in_flight=1, sequential=True), batches({"b": 2, "a": 2}))
    [first] = start_all(gate, 0.0)
    assert first.seq == 0
    gate.finished(first, 1.0, failed=None)
    gate.retry(first, 3.0)
    assert start_all(gate, 2.0) == []  # the retry of seq 0 holds the line
    assert start_all(gate, 3.0) == [first]
    gate.finished(first, 3.5, failed=False)
    assert [b.seq for b in start_all(gate, 3.5)] == [1]


def test_peaks() -> None:
    assert peak_overlap([(0, 1), (1, -1), (1, 1), (2, -1)]) == 1
    assert per_source_peaks([("a", 0, 2), ("a", 1, 3), ("b", 0, 1)]) == {"a": 2, "b": 1}


def test_a_probe_waiting_for_its_retry_lets_no_other_batch_through() -> None:
    gate = admission(Controls(in_flight=4, per_source=4, breaker_failures=1, breaker_cooldown=1.0),
                     batches({"a": 4}))
    [first, *_] = started = start_all(gate, 0.0)
    gate.finished(first, 0.1, failed=True, error="down")
    for batch in started[1:]:
        gate.finished(batch, 0.1, failed=None)
        gate.retry(batch, 0.2)
    [probe] = start_all(gate, 1.2)
    gate.finished(probe, 1.3, failed=None)
    gate.retry(probe, 3.0)
    assert start_all(gate, 2.0) == []  # others are due, but only the probe may go
    assert start_all(gate, 3.0) == [probe]
