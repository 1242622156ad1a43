"""`batchrun plan JOB_FILE`: what a run would do now, without doing any of it.

It lists and classifies the files (new, changed, unchanged, settling) against the job's
table and cuts the batches a run would run, then prints them. It starts no Ray and
writes nothing: no state dir, staging dir or log is created, the catalog is read
read-only (`Catalog(read_only=True)`) and no manifest checksum is kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape

from batchrun.cli.options import (
    full_refresh_option,
    json_option,
    out,
    resolve_state_dir,
    state_dir_option,
)
from batchrun.config import load_job
from batchrun.manifest import KINDS, Preview, preview

EXAMPLES = 3
"""Paths shown of each kind of file."""


@click.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@state_dir_option
@full_refresh_option
@json_option
def plan(job_file: Path, state_dir: Path | None, full_refresh: bool, as_json: bool) -> None:
    """Show what `batchrun run JOB_FILE` would do now: files new, changed, unchanged and
    settling, and the sources, batches and bytes it would run. Starts nothing and writes
    nothing."""
    from batchrun.execution.prepare import check_job

    job = load_job(job_file)
    check_job(job)
    state_dir = resolve_state_dir(state_dir, job_file)  # the one `batchrun run` would use
    found = preview(job, state_dir, full_refresh)
    if as_json:
        out.print_json(json.dumps({"job": job.name, "job_file": str(job.path),
                                   "state_dir": str(state_dir), **found.as_json(EXAMPLES)}))
        return
    _render_preview(job.name, found)


def _render_preview(job: str, found: Preview) -> None:
    counts = found.selection.counts
    out.print(f"[bold]plan of job {escape(job)}[/] (dry run: nothing started, nothing written)")
    out.print(f"files: {counts.text()}", markup=False)
    for kind in KINDS:
        paths = found.selection.paths[kind]
        if paths:
            more = f" (+{len(paths) - EXAMPLES} more)" if len(paths) > EXAMPLES else ""
            out.print(f"  {kind:<9} {', '.join(paths[:EXAMPLES])}{more}", markup=False)
    if not found.batches:
        out.print("would run: nothing (no batch, no Ray)")
        return
    sources = found.sources()
    total = sum(s["bytes"] for s in sources.values())
    out.print(f"would run: {len(found.batches)} batch(es) of {len(found.selection.planned)}"
              f" file(s), {total / 1e6:,.1f} MB, from {len(sources)} source(s)", markup=False)
    for name, s in sources.items():
        out.print(f"  {name}: {s['batches']} batch(es), {s['files']} file(s),"
                  f" {s['bytes'] / 1e6:,.1f} MB", markup=False)
