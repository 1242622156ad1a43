"""Rendering: status, report, compare tables, query results (progress: progress.py)."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from batchrun.cli.options import err, hint, out
from batchrun.model import RunState
from batchrun.report import RunReport, RunStatus, StatusDetail, iso

if TYPE_CHECKING:
    from batchrun.metrics import Percentiles, RunMetrics
    from batchrun.rejects import RejectReason
    from batchrun.tools.compare import CompareResult


def _render_rows(names: list[str], rows: list[tuple[Any, ...]], fmt: str) -> None:
    if fmt == "json":
        out.print_json(json.dumps([dict(zip(names, r)) for r in rows], default=str))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows(rows)
    else:
        table = Table(*names)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        out.print(table)


def _stdout_for_results() -> contextlib.redirect_stdout[Any]:
    """While Ray runs, anything it prints (raylet notices) goes to stderr: stdout carries
    only batchrun's result, so `--json` output always parses."""
    return contextlib.redirect_stdout(sys.stderr)


def _render_summary(status: RunStatus, pool: str | None = None) -> None:
    """One line, green only when the run succeeded (red when it failed), then the hints;
    `pool`: where its batches ran ("ray" or "inline"), if any ran."""
    b, f, r = status.counts.batches, status.counts.files, status.counts.rows
    if status.selection is not None and status.selection.nothing_new and not b.total:
        err.print(f"{status.selection.text()} (run {status.run_id} recorded, Ray not started)",
                  markup=False)
        return
    err.print(f"run {status.run_id} {status.state.value}: "
              f"{b.committed}/{b.total} batches, {r.staged:,} rows staged, "
              f"{r.rejected:,} rejected, {f.failed} file(s) quarantined"
              + (f", {f.skipped} skipped" if f.skipped else "")
              + f" in {status.duration_s or 0:.1f}s" + (f" (pool: {pool})" if pool else ""),
              markup=False,
              style=_STATE_COLORS.get(status.state, "cyan"))
    if status.message:
        err.print(f"  {status.message}", markup=False)
    if status.selection is not None:
        err.print(f"  files: {status.selection.text()}", markup=False)
    if f.failed or f.skipped:
        err.print(f"list them with: {hint('status', status.run_id)}", markup=False)
    if r.rejected:
        err.print(f"see rejected rows with: {hint('rejects', status.run_id)}", markup=False)
    if status.state is not RunState.SUCCEEDED:
        err.print(f"report with: {hint('report', status.run_id)}", markup=False)


def _render_status(status: RunStatus) -> None:
    table = Table(show_header=False, box=None)
    b, f, r = status.counts.batches, status.counts.files, status.counts.rows
    for key, value in [
        ("run", escape(status.run_id)),
        ("job", escape(f"{status.job} ({status.job_file})")),
        ("state", _state_text(status.state)),
        ("batches", f"{b.committed} committed, {b.running} running, {b.pending} "
                    f"pending, {b.failed} failed, {b.skipped} skipped, of {b.total}"),
        ("files", f"{f.committed} committed, {f.failed} failed, {f.skipped} skipped,"
                  f" of {f.total}"),
        ("rows", f"{r.staged:,} staged, {r.rejected:,} rejected"),
        ("incremental", escape(status.selection.text()) if status.selection else "-"),
        ("started", iso(status.started_at) or "-"), ("finished", iso(status.finished_at) or "-"),
        ("staging", escape(status.staging_dir)), ("message", escape(status.message or "-")),
    ]:
        table.add_row(f"[bold]{key}", value)
    if status.detail is not None and status.detail.nodes:
        table.add_row("[bold]nodes", escape(", ".join(
            f"{n.node} {n.batches} batch(es), {n.rows_staged:,} rows"
            for n in status.detail.nodes)))
    out.print(table)
    if status.detail is not None:
        _render_detail(status.detail)


def _render_detail(detail: StatusDetail) -> None:
    """Paths and errors are escaped: a `[...]` in them is text, never rich markup."""
    for failed in detail.failed_files:
        out.print(f"  [red]failed[/] {escape(failed.path)}: {escape(failed.error or '')}")
    for skipped in detail.skipped_files:
        out.print(f"  [yellow]skipped[/] {escape(skipped.path)}: {escape(skipped.reason or '')}")
    for warned in detail.warnings:
        out.print(f"  [yellow]warning[/] {escape(warned.path)}: {escape(warned.warning or '')}")
    for retried in detail.retried_batches:
        kind = retried.error_kind.value if retried.error_kind else None
        where = f" on {retried.node}" if retried.node else ""
        out.print(f"  [yellow]retried[/] {retried.batch_id} ({retried.state.value}"
                  f"{escape(where)}, "
                  f"{retried.attempts} attempts): {escape(retried.last_error or '')} "
                  f"{escape(f'[{kind}]')}")
    for batch in detail.failed_batches:
        out.print(f"  [red]failed batch[/] {batch.batch_id} after {batch.attempts} "
                  f"attempt(s): {escape(batch.last_error or '')}")


def _render_report(m: RunMetrics) -> None:
    summary = Table(show_header=False, box=None)
    for key, value in [
        ("run", f"{m.run_id} ({m.job}) {_state_text(m.state)}"),
        ("time", f"{_seconds(m.wall_s)} wall, {_seconds(m.active_s)} with batches in flight"),
        ("throughput", f"{m.mb_per_s:,} MB/s, {m.rows_per_s:,.0f} rows/s"
                       f" ({m.bytes / 1e6:,.1f} MB, {m.rows.staged:,} rows staged,"
                       f" {m.rows.rejected:,} rejected)"),
        ("steady", f"{m.steady_mb_per_s or '-'} MB/s from the first commit to the last"
                   " (start-up left out)"),
        ("batch latency", _percentile_text(m.latency) + " (dispatch to commit)"),
        ("processing", _percentile_text(m.processing) + " (in the worker)"),
        ("errors", f"{m.error_rate:.1%} of {m.attempts} attempts failed: {m.retries}"
                   f" retried, {m.failed_batches} batch(es) failed,"
                   f" {m.skipped_batches} skipped"),
        ("concurrency", f"{m.max_in_flight} batches in flight at most,"
                        f" {m.max_concurrency_per_source} of one source"),
    ]:
        summary.add_row(f"[bold]{key}", value)
    out.print(summary)
    table = Table("source", "attempts", "committed", "retries", "failed", "MB", "rows",
                  "max concurrency")
    for s in m.sources:
        table.add_row(s.source, str(s.attempts), str(s.committed), str(s.retries),
                      str(s.failed), f"{s.bytes / 1e6:,.1f}", f"{s.rows:,}",
                      str(s.max_concurrency))
    out.print(table)
    if m.nodes:
        _render_nodes(m)


def _render_run_report(report: RunReport) -> None:
    """`batchrun report`: the metrics, then why rows were rejected and which files were
    quarantined (every path, value and line escaped: a `[...]` in them is text)."""
    _render_report(report.metrics)
    if report.reasons_error:
        out.print(f"[yellow]reject reasons unavailable[/]: {escape(report.reasons_error)}")
    if report.reject_reasons:
        table = Table("rejects", "rule", "column", "example (file:line value: raw line)",
                      title=f"top reject reasons ({report.metrics.rows.rejected:,} rows rejected)",
                      title_justify="left")
        for reason in report.reject_reasons:
            table.add_row(f"{reason.count:,}", escape(reason.rule), escape(reason.column or "-"),
                          _examples_text(reason))
        out.print(table)
    if report.quarantined:
        out.print(f"[bold]quarantined files[/] ({len(report.quarantined)}):")
        for failed in report.quarantined:
            out.print(f"  [red]{escape(tail(failed.path))}[/]: {escape(failed.error or '')}")


def _examples_text(reason: RejectReason) -> str:
    return "\n".join(escape(f"{tail(e.file)}:{e.line} {e.value!r}: {clip(e.raw_line or '', 80)}")
                     for e in reason.examples)


def tail(path: str, width: int = 48) -> str:
    """A path cut at its head, never its tail: `…/supplier_07/orders_0012.csv`."""
    if len(path) <= width:
        return path
    parts = path.split("/")
    kept = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) + len(kept) + 3 > width:
            break
        kept = f"{part}/{kept}"
    return "…/" + kept if len(kept) + 2 <= width else "…" + kept[-(width - 1):]


def clip(text: str, width: int) -> str:
    """`text` on one line, at most `width` characters (cut at its end, with an ellipsis)."""
    text = text.replace("\r", " ").replace("\n", "⏎")
    return text if len(text) <= width else text[:width - 1] + "…"


def _render_nodes(m: RunMetrics) -> None:
    table = Table("node", "batches", "rows", "MB", "busy s", "MB/s")
    for n in m.nodes:
        table.add_row(escape(n.node), str(n.batches), f"{n.rows:,}", f"{n.bytes / 1e6:,.1f}",
                      f"{n.busy_s:,.1f}", f"{n.mb_per_s:,}")
    out.print(table)


def _render_compare(result: CompareResult) -> None:
    from batchrun.tools.charts import COLUMNS, cells
    from batchrun.tools.compare import verdict

    table = Table(*(heading for heading, _ in COLUMNS), title=f"compare {result.job}")
    for shape in result.shapes:
        table.add_row(*(escape(cell) for cell in cells(shape)))
    out.print(table)
    out.print(verdict(result), markup=False)
    for shape in result.shapes:
        if shape.error:
            err.print(f"shape {shape.name} failed: {shape.error}", markup=False)
    if not result.all_identical:
        err.print("some shapes staged different rows than the sequential baseline")


def _render_runs(history: list[RunStatus]) -> None:
    table = Table("run", "job", "state", "batches", "files failed", "rows staged",
                  "rows rejected", "started", "duration")
    for r in history:
        b = r.counts.batches
        table.add_row(r.run_id, r.job, _state_text(r.state), f"{b.committed}/{b.total}",
                      str(r.counts.files.failed), f"{r.counts.rows.staged:,}",
                      f"{r.counts.rows.rejected:,}", (iso(r.started_at) or "")[:19],
                      f"{r.duration_s:.1f}s" if r.duration_s is not None else "")
    out.print(table)


def _percentile_text(values: Percentiles) -> str:
    return ", ".join(f"p{p} {_seconds(v)}" for p, v in
                     ((50, values.p50), (95, values.p95), (99, values.p99)))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


_STATE_COLORS = {RunState.SUCCEEDED: "green", RunState.FAILED: "red",
                 RunState.INTERRUPTED: "yellow"}


def _state_text(state: RunState) -> str:
    return f"[{_STATE_COLORS.get(state, 'cyan')}]{state.value}[/]"
