"""What the operator sees while a run goes (stderr), fed by the library's progress events
(`execution/scheduler.py`'s ProgressCallback): a start-up line at once, then

- at a terminal: a live display (rich): files and bytes done of the total, MB/s, rows/s,
  ETA, batches in flight per worker, rejected rows and quarantined files so far; its bar
  turns red when the run fails;
- without one (cron, a pipe): one plain line every `interval` seconds, no control
  characters at all; the start-up notes wait for the first dispatched batch, so a run
  that fails before it starts still ends in its one error line;
- `--no-progress`: only the drain note on Ctrl-C; `--quiet` or `--json`: nothing (the
  summary and errors only);

and the notes a person needs (the plan, Ray ready, the log's path, the drain on Ctrl-C).
Rates count only the work done by this process (a resume's earlier batches are in the
totals, not in the rates).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

DEFAULT_INTERVAL = 60.0
"""Seconds between two plain progress lines (without a terminal)."""


@dataclass
class Tally:
    """A run's progress, added up from the events."""

    files_total: int = 0
    bytes_total: int = 0
    batches_total: int = 0
    files: int = 0
    bytes: int = 0
    batches: int = 0
    rows: int = 0
    rejected: int = 0
    quarantined: int = 0
    in_flight: list[int] = field(default_factory=list)
    began: float | None = None
    """When this process began dispatching (monotonic), for the rates."""
    session_bytes: int = 0
    session_rows: int = 0

    def add(self, event: dict[str, Any]) -> None:
        if self.began is None:
            self.began = time.monotonic()
        self.batches += event.get("committed", 0) + event.get("failed", 0)
        self.files += event.get("files", 0)
        self.bytes += event.get("bytes", 0)
        self.rows += event.get("rows", 0)
        self.rejected += event.get("rejected", 0)
        self.quarantined += event.get("quarantined", 0)
        self.session_bytes += event.get("bytes", 0)
        self.session_rows += event.get("rows", 0) + event.get("rejected", 0)
        self.in_flight = list(event.get("in_flight", self.in_flight))

    def elapsed(self) -> float:
        return time.monotonic() - self.began if self.began is not None else 0.0

    def rates(self) -> tuple[float, float]:
        """(MB/s, rows/s) of this process's work so far."""
        elapsed = self.elapsed()
        if elapsed <= 0:
            return 0.0, 0.0
        return self.session_bytes / 1e6 / elapsed, self.session_rows / elapsed

    def eta(self) -> float | None:
        """Seconds left at this process's byte rate, or None before it has one."""
        mb_per_s = self.rates()[0]
        if mb_per_s <= 0 or self.bytes_total <= 0:
            return None
        return max(0.0, (self.bytes_total - self.bytes) / 1e6 / mb_per_s)

    def parts(self) -> list[str]:
        """The progress line's parts, shared by the live display and the plain line."""
        mb_per_s, rows_per_s = self.rates()
        eta = self.eta()
        return [f"{self.files:,}/{self.files_total:,} files",
                f"{_mb(self.bytes)}/{_mb(self.bytes_total)} MB",
                f"{mb_per_s:,.1f} MB/s", f"{rows_per_s:,.0f} rows/s",
                f"ETA {duration_text(eta) if eta is not None else '-'}",
                _in_flight(self.in_flight),
                f"{self.rejected:,} rows rejected", f"{self.quarantined:,} files quarantined"]


def _in_flight(per_worker: list[int]) -> str:
    """'in flight 3 (2+1+0 per worker)'."""
    if len(per_worker) < 2:
        return f"in flight {sum(per_worker)}"
    return f"in flight {sum(per_worker)} ({'+'.join(map(str, per_worker))} per worker)"


def _mb(count: int) -> str:
    return f"{count / 1e6:,.1f}"


def duration_text(seconds: float) -> str:
    """90 → '1m30s', 5 → '5s', 3700 → '1h01m'."""
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def event_note(event: dict[str, Any]) -> str | None:
    """The one-line note an event is worth at once, if any."""
    stage = event.get("stage")
    if stage == "planned":
        return (f"planned {event['files']:,} file(s), {_mb(event['bytes'])} MB,"
                f" in {event['batches']:,} batch(es)")
    if stage == "ray":
        how = "started a local Ray instance" if event.get("started") else \
            f"joined Ray at {event.get('address')}"
        return f"{how} ({event.get('cpus', 0):g} CPUs) in {event.get('seconds', 0):.1f}s"
    if stage == "pool":
        return (f"running the batches in this process (inline, {event.get('threads', 1)}"
                " reader thread(s)): no Ray to start")
    if stage == "stopping":
        return (f"stopping: waiting for {event['in_flight']} batch(es) in flight, up to"
                f" {event['timeout']:.0f}s (Ctrl-C again to stop at once; a resume redoes them)")
    return None


class ProgressView:
    """No display: the drain note only (`--no-progress`), or nothing at all (`quiet`).
    Used as the run's `on_progress` callback."""

    def __init__(self, console: Console, opening: str = "", quiet: bool = False) -> None:
        self.console = console
        self.opening = opening
        self.quiet = quiet
        self.tally = Tally()
        self.run_id = ""
        self.succeeded = False
        """Set by the command when the run succeeded (else the display ends as failed)."""

    def __enter__(self) -> ProgressView:
        self.note(self.opening)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(failed=exc[0] is not None or not self.succeeded)

    def note(self, text: str, urgent: bool = False) -> None:
        """Print a note: here only an urgent one (the drain on Ctrl-C)."""
        if urgent and not self.quiet:
            self.console.print(text, markup=False, highlight=False)

    def __call__(self, event: dict[str, Any]) -> None:
        stage = event.get("stage", "running")
        if stage == "planned":
            self.planned(event)
        elif stage == "running":
            self.tally.add(event)
            self.update()
        text = event_note(event)
        if text:
            self.note(text, urgent=stage == "stopping")

    def planned(self, event: dict[str, Any]) -> None:
        """The run's totals (a resume also passes what is done already)."""
        t = self.tally
        self.run_id = event.get("run_id", self.run_id)
        t.files_total, t.bytes_total = event.get("files", 0), event.get("bytes", 0)
        t.batches_total = event.get("batches", 0)
        t.files, t.bytes = event.get("files_done", 0), event.get("bytes_done", 0)
        t.batches, t.rows = event.get("batches_done", 0), event.get("rows_done", 0)
        t.rejected, t.quarantined = event.get("rejected_done", 0), event.get("quarantined_done", 0)
        self.update()

    def update(self) -> None:
        """Show the tally (the live display does)."""

    def close(self, failed: bool) -> None:
        """The run is over; `failed`: it did not succeed."""


class LiveView(ProgressView):
    """A rich progress display at a terminal."""

    def __init__(self, console: Console, opening: str) -> None:
        super().__init__(console, opening)
        self.bar = BarColumn()
        self.progress = Progress(TextColumn("[bold]{task.description}"), self.bar,
                                 TaskProgressColumn(), TextColumn("{task.fields[line]}"),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.task = self.progress.add_task("batchrun", total=None, line=opening)

    def __enter__(self) -> LiveView:
        self.progress.start()
        return self

    def note(self, text: str, urgent: bool = False) -> None:
        self.progress.console.print(text, markup=False, highlight=False)

    def update(self) -> None:
        t = self.tally
        total = t.bytes_total or t.files_total or None
        done = t.bytes if t.bytes_total else t.files
        self.progress.update(self.task, description=self.run_id or "batchrun", total=total,
                             completed=done, line=" · ".join(t.parts()))

    def close(self, failed: bool) -> None:
        if failed:
            self.bar.complete_style = self.bar.finished_style = "red"
            self.progress.update(self.task, description=f"[red]{self.run_id}[/]")
        self.progress.stop()


class PlainView(ProgressView):
    """Without a terminal: one plain line every `interval` seconds, from a timer thread
    (a long batch still gets its lines), and nothing that is not plain text."""

    def __init__(self, console: Console, opening: str, interval: float) -> None:
        super().__init__(console, opening)
        self.interval = interval
        self._stop = threading.Event()
        self._held: list[str] = []
        """Notes printed once the first batch is dispatched."""
        self._timer = threading.Thread(target=self._tick, name="batchrun-progress", daemon=True)

    def __enter__(self) -> PlainView:
        super().__enter__()
        self._timer.start()
        return self

    def note(self, text: str, urgent: bool = False) -> None:
        if self.tally.began is None and not urgent:
            self._held.append(text)
        else:
            self.console.print(text, markup=False, highlight=False)

    def update(self) -> None:
        held, self._held = self._held, []
        for text in held:
            self.note(text)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            if self.tally.began is not None:
                self.note(self.line())

    def line(self) -> str:
        return (f"progress {self.run_id}: " + ", ".join(self.tally.parts())
                + f", {duration_text(self.tally.elapsed())} elapsed")

    def close(self, failed: bool) -> None:
        self._stop.set()
        if self._timer.is_alive():
            self._timer.join()


def progress_view(console: Console, opening: str, *, show: bool | None, quiet: bool,
                  interval: float) -> ProgressView:
    """The display for this run: live at a terminal, plain lines without one, notes only
    with --no-progress, nothing with --quiet (or --json)."""
    if quiet:
        return ProgressView(console, quiet=True)
    if show is False:
        return ProgressView(console, opening)
    if console.is_terminal:
        return LiveView(console, opening)
    return PlainView(console, opening, interval)
