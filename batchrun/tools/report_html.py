"""`batchrun report --html FILE`: one self-contained page for a run.

The outcome (state, counts, duration, what the exit code meant), throughput over time,
the batch latency histogram, rows per source, rejects by rule with example lines and the
quarantined files with their reasons. Inline SVG and CSS only (see `svg.py`): no script,
nothing fetched, so the page opens from a mail attachment or an air-gapped share.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from batchrun.errors import EnvironmentProblem
from batchrun.model import RunState
from batchrun.report import RunReport
from batchrun.tools.numbers import number
from batchrun.tools.svg import area, card, columns, esc, figure, hbars, page, table

OUTCOMES = {
    RunState.SUCCEEDED: "exit 0: every batch committed, every file staged",
    RunState.FAILED: "exit 1: the run finished, but some files or batches failed; "
                     "`batchrun status` lists them, `batchrun resume` retries what may recover",
    RunState.INTERRUPTED: "exit 130 or 143: stopped by a signal or killed; "
                          "`batchrun resume` finishes it without redoing committed batches",
}
"""What the run's state means for the exit code its `run` (or `resume`) ended with."""


def write_report_html(report: RunReport, path: Path) -> Path:
    """Write the page; a folder that cannot be written is one EnvironmentProblem line."""
    try:
        path.write_text(report_page(report), encoding="utf-8")
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def report_page(report: RunReport) -> str:
    m = report.metrics
    body = [f"<h1>batchrun report: run {esc(m.run_id)}</h1>",
            f'<p class="sub">job {esc(m.job)} · written {esc(_now())}</p>',
            _outcome(report), '<div class="grid2">',
            figure("Throughput over time", area(throughput_steps(report.commits), "throughput",
                                                 "seconds since the first dispatch", "rows/s"),
                   "rows staged per second, in equal time slices from the first dispatch"
                   " to the last commit"),
            _latency_figure(report.latencies),
            figure("Rows staged per source", hbars([s.source or "-" for s in m.sources],
                                                   [s.rows for s in m.sources], "rows per source",
                                                   "rows")),
            _rejects_figure(report), "</div>",
            _reasons_section(report), _quarantine_section(report)]
    return page(f"batchrun report {m.run_id}", "".join(body))


def _outcome(report: RunReport) -> str:
    m = report.metrics
    meaning = OUTCOMES.get(m.state, "the run is still going")
    cards = [card(number(m.rows.staged), "rows staged"),
             card(number(m.rows.rejected), "rows rejected"),
             card(number(len(report.quarantined)), "files quarantined"),
             card(f"{m.batches.committed:,}/{m.batches.total:,}", "batches committed"),
             card(_duration(m.wall_s), "duration"),
             card(f"{number(m.mb_per_s)} MB/s", f"{number(m.rows_per_s)} rows/s"),
             card(f"{number(m.latency.p50)} s", f"batch latency p50 (p95 {number(m.latency.p95)} s)"),
             card(number(m.retries), "retries")]
    return (f'<p class="verdict state-{esc(m.state.value)}"><b>{esc(m.state.value)}</b>'
            f" — {esc(meaning)}</p>" f'<div class="outcome">{"".join(cards)}</div>')


def throughput_steps(commits: tuple[tuple[float, int, int], ...],
                     most: int = 24) -> list[tuple[float, float]]:
    """Rows staged per second in equal slices from 0 to the last commit (one slice per
    commit, at most `most`), as steps."""
    if not commits:
        return []
    slices = min(most, len(commits))
    end = max(t for t, _, _ in commits) or 1.0
    width = end / slices
    sums = [0.0] * slices
    for moment, _, rows in commits:
        sums[min(int(moment / width), slices - 1)] += rows
    steps: list[tuple[float, float]] = []
    for i, total in enumerate(sums):
        steps += [(i * width, total / width), ((i + 1) * width, total / width)]
    return steps


def latency_bins(values: tuple[float, ...]) -> tuple[list[float], list[int]]:
    """Histogram edges and counts: about √n bins (at most 16) from the least to the most."""
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low * 0.9, high * 1.1 or 1.0
    bins = min(16, max(1, math.ceil(math.sqrt(len(values)))))
    step = (high - low) / bins
    counts = [0] * bins
    for value in values:
        counts[min(int((value - low) / step), bins - 1)] += 1
    return [low + i * step for i in range(bins + 1)], counts


def _latency_figure(latencies: tuple[float, ...]) -> str:
    if not latencies:
        return figure("Batch latency", '<p class="empty">no committed batch</p>')
    edges, counts = latency_bins(latencies)
    return figure("Batch latency (dispatch to commit)",
                  columns(edges, counts, "batch latency histogram", "seconds"),
                  f"{len(latencies):,} committed batches")


def _rejects_figure(report: RunReport) -> str:
    reasons = report.reject_reasons
    if not reasons:
        return figure("Rejects by rule", '<p class="empty">no row rejected</p>')
    labels = [f"{r.rule} · {r.column}" if r.column else r.rule for r in reasons]
    return figure("Rejects by rule", hbars(labels, [r.count for r in reasons], "rejects by rule",
                                           "rows"),
                  f"{report.metrics.rows.rejected:,} rows rejected in all")


def _reasons_section(report: RunReport) -> str:
    if report.reasons_error:
        return f'<h2>Top reject reasons</h2><p class="bad">unavailable: {esc(report.reasons_error)}</p>'
    if not report.reject_reasons:
        return ""
    rows = [[esc(number(r.count)), esc(r.rule), esc(r.column or "-"),
             "".join(f"<div>{esc(e.file)}:{esc(e.line)} value <code>{esc(_clip(e.value, 60))}"
                     f"</code><br><code class=\"raw\">{esc(_clip(e.raw_line, 300))}</code></div>"
                     for e in r.examples)]
            for r in report.reject_reasons]
    return ("<h2>Top reject reasons</h2>"
            + table(["rows", "rule", "column", "examples (file:line, value, raw line)"], rows,
                    [True]))


def _quarantine_section(report: RunReport) -> str:
    if not report.quarantined:
        return '<h2>Quarantined files</h2><p class="empty">none</p>'
    rows = [[f'<code class="bad">{esc(f.path)}</code>', f'<span class="id">{esc(f.batch_id)}</span>',
             esc(f.error or "")] for f in report.quarantined]
    return (f"<h2>Quarantined files ({len(rows)})</h2>"
            + table(["file", "batch", "reason"], rows))


def _clip(text: str | None, width: int) -> str:
    text = text or ""
    return text if len(text) <= width else text[:width - 1] + "…"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{number(seconds)} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {rest} s"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
