"""The self-contained HTML report of `batchrun compare --html` (plotly, inlined).

plotly comes with the `tools` extra and is imported only to draw: the compare table
(`COLUMNS`, `cells`) works without it, and `require_plotly` says what to install.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchrun.errors import EnvironmentProblem
from batchrun.tools.compare import CompareResult, ShapeResult

INSTALL_TOOLS = "pip install 'batchrun[tools]'"


def _metric(name: str, default: Any) -> Callable[[ShapeResult], Any]:
    """A column read from a shape's run metrics (`default` for a shape that did not run)."""
    return lambda shape: getattr(shape.metrics, name) if shape.metrics else default


COLUMNS: list[tuple[str, Callable[[ShapeResult], Any]]] = [
    ("shape", lambda s: s.name), ("exit", lambda s: s.exit_code), ("wall s", lambda s: s.wall_s),
    ("MB/s", lambda s: s.mb_per_s), ("rows/s", lambda s: s.rows_per_s),
    ("p50 s", lambda s: s.latency.p50), ("p95 s", lambda s: s.latency.p95),
    ("p99 s", lambda s: s.latency.p99), ("peak MB", lambda s: s.peak_rss_mb),
    ("driver MB", lambda s: s.peak_driver_mb), ("workers MB", lambda s: s.peak_workers_mb),
    ("max/source", _metric("max_concurrency_per_source", 0)), ("retries", _metric("retries", 0)),
    ("failed", _metric("failed_batches", 0)), ("skipped", _metric("skipped_batches", 0)),
    ("identical", lambda s: s.identical),
]
"""The compare table's columns: (heading, the cell's value of a shape)."""


def cells(shape: ShapeResult) -> list[str]:
    """A shape's row of the compare table, as text."""
    return [_cell(value(shape)) for _, value in COLUMNS]


def require_plotly() -> None:
    """Raise EnvironmentProblem (one line, naming the extra) unless plotly can be imported."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise EnvironmentProblem(f"`batchrun compare --html` draws its charts with plotly, which"
                                 f" is not installed: {INSTALL_TOOLS}") from None


def write_html(result: CompareResult, path: Path) -> Path:
    require_plotly()
    import plotly.graph_objects as go
    import plotly.io as pio

    shapes = result.shapes
    names = [s.name for s in shapes]
    throughput = go.Figure(go.Bar(x=names, y=[s.mb_per_s for s in shapes],
                                  text=[f"{s.rows_per_s:,.0f} rows/s" for s in shapes]))
    throughput.update_layout(title="Throughput per shape (MB/s while batches were in flight)",
                             yaxis_title="MB/s")
    latency = go.Figure([go.Bar(name=f"p{p}", x=names,
                                y=[getattr(s.latency, f"p{p}") for s in shapes])
                         for p in (50, 95, 99)])
    latency.update_layout(title="Batch latency, dispatch to commit", yaxis_title="seconds",
                          barmode="group")
    concurrency = go.Figure([go.Scatter(name=s.name, x=[t for t, _ in s.concurrency],
                                        y=[n for _, n in s.concurrency], mode="lines",
                                        line_shape="hv") for s in shapes])
    concurrency.update_layout(title="Batches in flight over time", xaxis_title="seconds",
                              yaxis_title="batches in flight")
    figures = [pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0))
               for i, fig in enumerate((throughput, latency, concurrency))]
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _ in COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(s)) + "</tr>"
                   for s in shapes)
    path.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>batchrun compare: {html.escape(result.job)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head>
<body><h1>batchrun compare</h1><p>job: {html.escape(result.job)}</p>
<table><tr>{head}</tr>{rows}</table>{''.join(figures)}</body></html>
""")
    return path


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
