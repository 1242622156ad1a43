"""The scheduler on an in-process worker pool and a real catalog: no Ray, milliseconds each.

The work is fake (each task returns counts made up from its batch), so the catalog must
hold exactly those counts; failures, deaths and hangs are acted out by the work itself.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.errors import PermanentSourceError, TransientSourceError
from batchrun.execution.admission import Controls
from batchrun.execution.pool import InlinePool, SimulatedDeath, SimulatedHang, Work
from batchrun.execution.scheduler import (
    Limits,
    ScheduleOutcome,
    Scheduler,
    backoff_seconds,
    pending_batches,
)
from batchrun.execution.stopping import StopToken
from batchrun.hooks import Hooks
from batchrun.model import (
    BatchResult,
    BatchTask,
    FileOutcome,
    PlannedBatch,
    PlannedFile,
    RunRecord,
    RunState,
)

RUN = "run-1"
FILES_PER_BATCH = 2


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    opened = Catalog(tmp_path / "state")
    yield opened
    opened.close()


def plan(catalog: Catalog, batches: int, sources: int = 1) -> None:
    """A planned run of `batches` batches of two (never read) files each."""
    planned = []
    for seq in range(batches):
        source = f"s{seq % sources}"
        files = tuple(PlannedFile(path=f"/data/{source}/f{seq:04d}_{i}.csv", size=100, mtime=0.0,
                                  source=source) for i in range(FILES_PER_BATCH))
        planned.append(PlannedBatch(batch_id=f"b{seq:04d}", seq=seq, source=source, files=files))
    catalog.create_run(RunRecord(
        run_id=RUN, job="job", table="t", job_file="/job.toml", staging_dir="/staging",
        config={}, schema=None, state=RunState.PLANNED, pid=None, host=None,
        created_at=time.time(), started_at=None, finished_at=None, message=None), planned)


def rows_of(task: BatchTask) -> dict[str, int]:
    """The made-up rows the fake work stages for each file: unique per file."""
    return {path: 100 * task.seq + i for i, path in enumerate(task.files)}


def result(task: BatchTask, worker: int = 0) -> BatchResult:
    rows = rows_of(task)
    now = time.time()
    return BatchResult(batch_id=task.batch_id, worker=worker, output_path=None,
                       rejects_path=None, rows_staged=sum(rows.values()), rows_rejected=task.seq,
                       bytes_read=0, started_at=now, finished_at=now,
                       files=tuple(FileOutcome(path, rows_staged=n) for path, n in rows.items()))


def pool_of(act: Callable[[BatchTask], None] = lambda task: None,
            redeliver: bool = False) -> InlinePool:
    """Workers that first `act` on each task (raise to fail, die or hang), then succeed."""
    def make_work(worker: int) -> Work:
        def work(task: BatchTask) -> BatchResult:
            act(task)
            return result(task, worker)
        return work
    return InlinePool(make_work, redeliver=redeliver)


def run(catalog: Catalog, pool: InlinePool, workers: int = 2, in_flight: int = 4,
        stop: StopToken | None = None, hooks: Hooks | None = None,
        **limits: object) -> ScheduleOutcome:
    controls = Controls(in_flight=in_flight, per_source=None, max_bytes=None,
                        sequential=bool(limits.pop("sequential", False)))
    settings = Limits(workers=workers, controls=controls, backoff=0.005, **limits)  # type: ignore[arg-type]
    scheduler = Scheduler(catalog, RUN, pool, settings, hooks=hooks or Hooks(), stop=stop)
    return scheduler.execute(pending_batches(catalog, RUN), catalog.attempts(RUN))


def states(catalog: Catalog) -> dict[int, str]:
    return {b["seq"]: b["state"] for b in catalog.batches(RUN)}


def by_seq(catalog: Catalog, seq: int) -> dict:
    return next(b for b in catalog.batches(RUN) if b["seq"] == seq)


def attempts(catalog: Catalog, seq: int) -> list[dict]:
    return sorted((a for a in catalog.attempt_rows(RUN) if a["batch_id"] == f"b{seq:04d}"),
                  key=lambda a: a["attempt"])


def fails(seqs: set[int], error: Callable[[str], Exception], attempts_up_to: int = 1
          ) -> Callable[[BatchTask], None]:
    def act(task: BatchTask) -> None:
        if task.seq in seqs and task.attempt <= attempts_up_to:
            raise error(task.files[0])
    return act


def transient(path: str) -> Exception:
    return TransientSourceError(path, "endpoint down")


def permanent(path: str) -> Exception:
    return PermanentSourceError(path, "not gzip")


# -- the happy path --------------------------------------------------------------------------


def test_every_batch_commits_once_with_the_rows_its_work_returned(catalog: Catalog) -> None:
    plan(catalog, 12, sources=3)
    outcome = run(catalog, pool_of())
    assert outcome.committed == 12 and outcome.failed == outcome.retries == 0
    for batch in catalog.batches(RUN):
        task = BatchTask(batch["batch_id"], files=(), seq=batch["seq"])
        paths = [f["path"] for f in catalog.files_of(RUN, batch["batch_id"])]
        expected = rows_of(BatchTask(batch["batch_id"], files=tuple(sorted(paths)), seq=batch["seq"]))
        assert batch["state"] == "committed" and batch["attempts"] == 1
        assert batch["rows_staged"] == sum(expected.values())
        assert batch["rows_rejected"] == task.seq
        for row in catalog.files_of(RUN, batch["batch_id"]):
            assert (row["state"], row["rows_staged"]) == ("committed", expected[row["path"]])
    assert catalog.counts(RUN).rows.staged == sum(
        100 * seq * FILES_PER_BATCH + sum(range(FILES_PER_BATCH)) for seq in range(12))


def test_a_result_delivered_twice_is_committed_once(catalog: Catalog) -> None:
    plan(catalog, 6)
    outcome = run(catalog, pool_of(redeliver=True))
    assert outcome.committed == 6
    assert len(catalog.attempt_rows(RUN)) == 6
    assert catalog.counts(RUN).rows.staged == sum(200 * seq + 1 for seq in range(6))


# -- failures --------------------------------------------------------------------------------


def test_a_transient_failure_is_retried_after_its_back_off(catalog: Catalog) -> None:
    plan(catalog, 4)
    failed_at: list[float] = []
    failing = fails({1}, transient, attempts_up_to=2)

    def act(task: BatchTask) -> None:
        if task.seq == 1:
            failed_at.append(time.time())  # just before the scheduler sees the failure
        failing(task)

    outcome = run(catalog, pool_of(act), max_retries=3)
    assert outcome.committed == 4 and outcome.retries == 2
    tries = attempts(catalog, 1)
    assert [a["outcome"] for a in tries] == ["retried", "retried", "committed"]
    for earlier, later, failed, n in zip(tries, tries[1:], failed_at, (1, 2)):
        # at least the back-off's 2**(n-1) units of 0.005 s (its jitter only adds), counted
        # from the failure: not from `ended_at`, which is stamped a moment after the back-off
        # began (by how much depends on the machine's load)
        assert later["queued_at"] - failed >= 2 ** (n - 1) * 0.005
        assert later["queued_at"] > earlier["ended_at"]
    assert by_seq(catalog, 1)["rows_staged"] == 201 and by_seq(catalog, 1)["error_kind"] == "transient"


def test_backoff_doubles_with_each_attempt_up_to_thirty_steps() -> None:
    assert 1.0 <= backoff_seconds(1, 1.0) <= 1.25
    assert 4.0 <= backoff_seconds(3, 1.0) <= 4.25
    assert 30.0 <= backoff_seconds(20, 1.0) <= 30.25


def test_a_permanent_failure_fails_its_batch_after_one_attempt(catalog: Catalog) -> None:
    plan(catalog, 4)
    outcome = run(catalog, pool_of(fails({2}, permanent)))
    assert (outcome.committed, outcome.failed, outcome.failed_files) == (3, 1, FILES_PER_BATCH)
    failed = by_seq(catalog, 2)
    assert failed["state"] == "failed" and failed["attempts"] == 1
    assert failed["error_kind"] == "permanent" and "not gzip" in failed["last_error"]
    assert {f["state"] for f in catalog.files_of(RUN, "b0002")} == {"failed"}


def test_a_transient_failure_past_max_retries_fails_its_batch(catalog: Catalog) -> None:
    plan(catalog, 2)
    outcome = run(catalog, pool_of(fails({0}, transient, attempts_up_to=99)), max_retries=2)
    assert outcome.failed == 1 and outcome.retries == 2
    assert [a["outcome"] for a in attempts(catalog, 0)] == ["retried", "retried", "failed"]


def test_a_dead_worker_is_replaced_and_its_batch_retried(catalog: Catalog) -> None:
    plan(catalog, 6)
    made: list[int] = []
    inner = pool_of(fails({3}, lambda path: SimulatedDeath("os._exit(17)")))
    pool = InlinePool(lambda k: made.append(k) or inner.make_work(k))
    outcome = run(catalog, pool, workers=2, in_flight=2)
    assert outcome.committed == 6
    died = by_seq(catalog, 3)
    assert died["attempts"] == 2 and "worker 1 died: SimulatedDeath: os._exit(17)" in died["last_error"]
    assert sorted(made) == [0, 1, 1]


def test_a_batch_whose_code_calls_sys_exit_inline_kills_its_worker_not_the_run(
        catalog: Catalog) -> None:
    """A custom reader or transform that calls sys.exit() ends a Ray actor; inline it must
    not end the batchrun process (whose exit code, 0, then said nothing went wrong)."""
    plan(catalog, 4)
    outcome = run(catalog, pool_of(fails({2}, lambda path: SystemExit(0))), workers=2, in_flight=2)
    assert outcome.committed == 4
    assert "died: SystemExit: 0" in by_seq(catalog, 2)["last_error"]


def test_a_hanging_batch_is_killed_at_its_timeout_and_retried_on_a_fresh_worker(
        catalog: Catalog) -> None:
    plan(catalog, 4)
    started = time.monotonic()
    outcome = run(catalog, pool_of(fails({2}, lambda path: SimulatedHang())), batch_timeout=0.05)
    assert time.monotonic() - started < 1.0  # waits until the timeout, not a whole round
    assert outcome.committed == 4 and outcome.retries >= 1
    hung = by_seq(catalog, 2)
    assert hung["attempts"] == 2 and "timed out after 0s; worker 0 killed" in hung["last_error"]
    assert catalog.counts(RUN).rows.staged == sum(200 * seq + 1 for seq in range(4))


# -- stopping --------------------------------------------------------------------------------


def test_a_stop_request_drains_in_flight_batches_and_leaves_the_rest_pending(
        catalog: Catalog) -> None:
    plan(catalog, 8)
    stop = StopToken()

    def act(task: BatchTask) -> None:
        if task.seq == 0:
            stop.request(signal.SIGTERM)
        if task.seq == 1:
            raise SimulatedHang()
    outcome = run(catalog, pool_of(act), workers=2, in_flight=4, stop=stop, drain_timeout=0.02)
    assert outcome.stopped_by == signal.SIGTERM and outcome.committed == 2
    assert outcome.abandoned == 2  # seq 1 hung, seq 3 queued behind it on worker 1
    assert states(catalog) == {0: "committed", 1: "pending", 2: "committed",
                               **{seq: "pending" for seq in range(3, 8)}}
    assert [a["outcome"] for a in attempts(catalog, 1)] == ["abandoned"]
    assert catalog.counts(RUN).rows.staged == 1 + 401


def test_a_spent_retry_budget_stops_dispatching(catalog: Catalog) -> None:
    plan(catalog, 6)
    outcome = run(catalog, pool_of(fails(set(range(6)), transient, 99)), workers=1, in_flight=1,
                  retry_budget=2, max_retries=5)
    assert outcome.stopped_because == "retry budget (2) spent"
    assert outcome.committed == 0 and outcome.retries == 3
    assert set(states(catalog).values()) == {"pending"}


def test_max_failed_files_stops_dispatching_once_reached(catalog: Catalog) -> None:
    plan(catalog, 6)
    outcome = run(catalog, pool_of(fails(set(range(6)), permanent)), workers=1, in_flight=1,
                  max_failed_files=3)
    assert outcome.stopped_because == "max_failed_files (3) reached"
    assert (outcome.failed, outcome.failed_files) == (2, 4)
    assert states(catalog) == {0: "failed", 1: "failed", **{seq: "pending" for seq in range(2, 6)}}


def test_sequential_mode_stops_at_the_first_failed_batch(catalog: Catalog) -> None:
    plan(catalog, 6, sources=2)
    outcome = run(catalog, pool_of(fails({2}, permanent)), workers=1, in_flight=1,
                  sequential=True)
    assert outcome.stopped_because == "sequential mode stops at the first failed batch"
    assert states(catalog) == {0: "committed", 1: "committed", 2: "failed",
                               3: "pending", 4: "pending", 5: "pending"}
    dispatched = sorted(catalog.attempt_rows(RUN), key=lambda a: a["queued_at"])
    assert [a["batch_id"] for a in dispatched] == ["b0000", "b0001", "b0002"]


# -- hooks -----------------------------------------------------------------------------------


class Recorder(Hooks):
    def __init__(self, catalog: Catalog) -> None:
        self.seen: list[tuple[str, int]] = []
        self.reader = Catalog(catalog.path.parent)

    def after_dispatch(self, results_seen: int) -> None:
        self.seen.append(("after_dispatch", results_seen))

    def results_collected(self, results_seen: int) -> None:
        self.seen.append(("results_collected", results_seen))

    def mid_commit(self, results_seen: int) -> None:
        committed = self.reader.counts(RUN).batches.committed
        self.seen.append((f"mid_commit ({committed} visible)", results_seen))

    def after_commit(self, results_seen: int) -> None:
        committed = self.reader.counts(RUN).batches.committed
        self.seen.append((f"after_commit ({committed} visible)", results_seen))


def test_hooks_run_at_their_points_and_mid_commit_before_the_round_is_visible(
        catalog: Catalog) -> None:
    plan(catalog, 2)
    recorder = Recorder(catalog)
    run(catalog, pool_of(), workers=1, in_flight=1, hooks=recorder)
    assert recorder.seen == [
        ("results_collected", 1), ("mid_commit (0 visible)", 1),
        ("after_dispatch", 1), ("after_commit (1 visible)", 1),
        ("results_collected", 2), ("mid_commit (1 visible)", 2),
        ("after_dispatch", 2), ("after_commit (2 visible)", 2),
    ]



class UnplacedReplacements(InlinePool):
    """Workers in `dying` die with their first task, as with a lost node, and their
    replacements never find a place (the node's CPUs went with it)."""

    def __init__(self, dying: set[int]) -> None:
        super().__init__(self.work_of)
        self.dying = dying
        self.replaced: set[int] = set()

    def work_of(self, worker: int) -> Work:
        def work(task: BatchTask) -> BatchResult:
            if worker in self.dying:
                raise SimulatedDeath("ActorDiedError: the actor's node was terminated")
            return result(task, worker)
        return work

    def replace(self, worker: int) -> None:
        super().replace(worker)
        self.replaced.add(worker)

    def usable(self, worker: int) -> bool:
        return worker not in self.replaced


def test_a_lost_workers_batches_go_to_the_others_while_its_replacement_has_no_place(
        catalog: Catalog) -> None:
    plan(catalog, batches=8)
    outcome = run(catalog, UnplacedReplacements(dying={1}), workers=2)
    assert outcome.committed == 8 and outcome.failed == 0
    on_lost = [a for a in catalog.attempt_rows(RUN) if a["worker"] == 1]
    assert len(on_lost) == outcome.retries == 2  # the two it had when it died; none since
    assert catalog.counts(RUN).rows.staged == sum(200 * seq + 1 for seq in range(8))


def test_a_run_with_no_worker_that_can_be_placed_stops_dispatching_and_leaves_work_pending(
        catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    import batchrun.execution.scheduler as scheduler

    monkeypatch.setattr(scheduler, "NO_WORKER_LIMIT", 0.2)
    plan(catalog, batches=4)
    outcome = run(catalog, UnplacedReplacements(dying={0}), workers=1)
    assert "no worker could be placed" in (outcome.stopped_because or "")
    assert outcome.committed == 0 and set(states(catalog).values()) == {"pending"}
