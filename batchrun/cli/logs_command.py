"""`batchrun logs [RUN_ID] [--batch B] [--follow]`: print a run's log (text or JSON lines).

A missing run, a batch the run does not have, or a run without a log is one line and
EXIT_USAGE (2); Ctrl-C during --follow exits EXIT_SIGINT (130) without a word. --follow
stops by itself once the run is no longer active (ended, or its driver gone) and the log
has been read to its end.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import click

from batchrun import logs
from batchrun.catalog import Catalog
from batchrun.cli.exits import EXIT_SIGINT
from batchrun.cli.options import invocation, state_options
from batchrun.errors import RunNotFoundError
from batchrun.report import effective_state

FOLLOW_EVERY = 0.25
"""Seconds between two looks at a followed log (and at its run's state)."""
FOLLOW_GRACE = 1.0
"""Seconds a followed log is still read once its run ended: the driver records the run's
final state a moment before it writes its last lines."""


@click.command(name="logs")
@click.argument("run_id", default="latest")
@click.option("--batch", "batch_id", metavar="BATCH_ID", help="Only the lines of this batch.")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new lines until the run is no longer active.")
@state_options
def logs_command(run_id: str, batch_id: str | None, follow: bool, state_dir: Path) -> None:
    """Print a run's log (default: the latest run, of the --job's job when given),
    optionally one batch's lines only."""
    with _catalog(state_dir, run_id) as catalog:
        run_id = (catalog.latest_run_id(invocation.get("job")) if run_id == "latest"
                  else catalog.run(run_id).run_id)
        invocation["run_id"] = run_id
        if batch_id is not None and batch_id not in {b["batch_id"]
                                                     for b in catalog.batches(run_id)}:
            raise RunNotFoundError(f"run {run_id} has no batch {batch_id!r}")
    path = logs.run_log_path(state_dir, run_id)
    if not path.is_file():
        raise RunNotFoundError(f"run {run_id} has no log: {path} does not exist")
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            lines = _lines(handle, follow, lambda: _active(state_dir, run_id))
            for line in _records(lines):
                if batch_id is None or _batch_of(line) == batch_id:
                    sys.stdout.write(line)
                    sys.stdout.flush()
    except KeyboardInterrupt:
        sys.exit(EXIT_SIGINT)


def _catalog(state_dir: Path, run_id: str) -> Catalog:
    try:
        return Catalog(state_dir, create=False)
    except RunNotFoundError as exc:
        raise RunNotFoundError(exc.args[0] if run_id == "latest"
                               else f"no run {run_id!r}: {exc}") from None


def _active(state_dir: Path, run_id: str) -> bool:
    with Catalog(state_dir, create=False) as catalog:
        return effective_state(catalog.run(run_id)).is_active


def _lines(handle: IO[str], follow: bool, active: Callable[[], bool]) -> Iterator[str]:
    """The file's complete lines; with `follow`, then the lines written later, until
    `active()` says the run ended (and what it wrote before ending is read)."""
    partial, ends_at = "", None if follow else 0.0
    while True:
        chunk = handle.readline()
        if chunk:
            partial += chunk
            if partial.endswith("\n"):
                yield partial
                partial = ""
            continue
        if ends_at is None and not active():
            ends_at = time.monotonic() + FOLLOW_GRACE
        if ends_at is not None and time.monotonic() >= ends_at:
            break
        time.sleep(FOLLOW_EVERY)
    if partial:
        yield partial


def _records(lines: Iterator[str]) -> Iterator[str]:
    """Lines grouped into records: a text record with a traceback spans several lines."""
    record = ""
    for line in lines:
        if record and not _continues(line):
            yield record
            record = ""
        record += line
    if record:
        yield record


def _continues(line: str) -> bool:
    """A line that belongs to the record before it (a traceback's lines in a text log)."""
    return not (line.startswith("{") or line[:4].isdigit())


def _batch_of(record: str) -> str | None:
    first = record.split("\n", 1)[0]
    if first.startswith("{"):
        try:
            return str(json.loads(first).get("batch_id"))
        except ValueError:
            return None
    head = first.split(" | ")
    fields = dict(word.split("=", 1) for word in (head[2].split() if len(head) > 2 else ())
                  if "=" in word)
    return fields.get("batch")
