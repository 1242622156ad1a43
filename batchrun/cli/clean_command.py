"""`batchrun clean`: remove old runs and batchrun's leftovers (see batchrun/clean.py)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from batchrun.cli.exits import EXIT_LOCKED
from batchrun.cli.options import err, json_option, out, state_options

if TYPE_CHECKING:
    from batchrun.clean import CleanReport

_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """'30d' → seconds; units s, m, h, d, w."""
    if value is None:
        return None
    match = _AGE.fullmatch(value)
    if not match:
        raise click.BadParameter(f"expected an age such as '30d', '12h' or '2w', got {value!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def human_bytes(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


@click.command("clean")
@click.option("--keep", type=click.IntRange(min=1), default=None,
              help="Keep the N most recent runs of each job; remove older ones.")
@click.option("--older-than", "older_than", callback=parse_age, metavar="AGE",
              help="Remove only runs created longer ago than AGE (e.g. 30d, 12h, 2w).")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@state_options
@json_option
def clean_command(keep: int | None, older_than: float | None, dry_run: bool, state_dir: Path,
                  as_json: bool) -> None:
    """Remove old runs (catalog entries, staged outputs, rejects, logs) and batchrun's
    leftovers, never a live run's files nor what the job's table still serves.

    With --keep and --older-than both, a run goes when it is beyond the N most recent AND
    older than AGE; a job's latest run always stays. With neither, only leftovers go (dead
    publish temp files, compare scratch folders). Exits 3 when a job was left alone because
    a run of it is live."""
    from batchrun.clean import Policy, clean

    report = clean(state_dir, Policy(keep, older_than), dry_run)
    if as_json:
        out.print_json(json.dumps({
            "dry_run": dry_run, "removed_runs": report.removed_runs,
            "trimmed_runs": report.trimmed_runs, "busy": report.busy,
            "files": [vars(r) for r in report.removed], "freed_bytes": report.freed}))
    else:
        _render(report)
    if report.busy:
        sys.exit(EXIT_LOCKED)


def _render(report: CleanReport) -> None:
    """One line per run (its files and log) and per leftover, then the total."""
    verb = "would remove" if report.dry_run else "removed"
    grouped: dict[str, list[int]] = {}
    for removed in report.removed:
        key = removed.what if removed.what.startswith("run ") else f"{removed.what} {removed.path}"
        grouped.setdefault(key, []).append(removed.size)
    for what, sizes in grouped.items():
        out.print(f"{verb} {what}: {len(sizes)} file(s), {human_bytes(sum(sizes))}", markup=False)
    for run_id in report.trimmed_runs:
        out.print(f"kept run {run_id}: the job's table still serves some of its outputs",
                  markup=False)
    for busy in report.busy:
        err.print(f"left alone: {busy}", markup=False)
    out.print(f"{verb} {len(report.removed_runs)} run(s), {len(report.removed)} file(s):"
              f" {'would free' if report.dry_run else 'freed'} {human_bytes(report.freed)}",
              markup=False)
