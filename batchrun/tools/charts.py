"""The self-contained HTML report of `batchrun compare --html` (plotly, inlined)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

COLUMNS = [
    ("shape", "name"), ("exit", "exit_code"), ("wall s", "wall_s"), ("MB/s", "mb_per_s"),
    ("rows/s", "rows_per_s"), ("p50 s", "latency_p50_s"), ("p95 s", "latency_p95_s"),
    ("p99 s", "latency_p99_s"), ("peak MB", "peak_rss_mb"), ("driver MB", "peak_driver_mb"),
    ("workers MB", "peak_workers_mb"), ("max/source", "max_concurrency_per_source"),
    ("retries", "retries"), ("failed", "failed_batches"), ("skipped", "skipped_batches"),
    ("identical", "identical"),
]
"""The compare table's columns: (heading, key in a shape's result)."""


def write_html(result: dict[str, Any], path: Path) -> Path:
    shapes = result["shapes"]
    names = [s["name"] for s in shapes]
    throughput = go.Figure(go.Bar(x=names, y=[s["mb_per_s"] for s in shapes],
                                  text=[f"{s['rows_per_s']:,.0f} rows/s" for s in shapes]))
    throughput.update_layout(title="Throughput per shape (MB/s while batches were in flight)",
                             yaxis_title="MB/s")
    latency = go.Figure([go.Bar(name=f"p{p}", x=names, y=[s[f"latency_p{p}_s"] for s in shapes])
                         for p in (50, 95, 99)])
    latency.update_layout(title="Batch latency, dispatch to commit", yaxis_title="seconds",
                          barmode="group")
    concurrency = go.Figure([go.Scatter(name=s["name"], x=[t for t, _ in s["concurrency"]],
                                        y=[n for _, n in s["concurrency"]], mode="lines",
                                        line_shape="hv") for s in shapes])
    concurrency.update_layout(title="Batches in flight over time", xaxis_title="seconds",
                              yaxis_title="batches in flight")
    figures = [pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0))
               for i, fig in enumerate((throughput, latency, concurrency))]
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _ in COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(s.get(k)))}</td>" for _, k in COLUMNS)
                   + "</tr>" for s in shapes)
    path.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>batchrun compare: {html.escape(result['job'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head>
<body><h1>batchrun compare</h1><p>job: {html.escape(result['job'])}</p>
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
