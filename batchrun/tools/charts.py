"""The self-contained HTML report of `batchrun compare --html`.

At the top, drawn as inline SVG (`svg.py`): the verdict, each shape's throughput (median
with the min–max of its rounds) and peak memory, and the table. Below, interactive plotly
charts (plotly.js inlined: nothing is fetched). plotly comes with the `tools` extra and is
imported only to draw: the compare table (`COLUMNS`, `cells`) works without it, and
`require_plotly` says what to install.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchrun.errors import EnvironmentProblem
from batchrun.tools.compare import CompareResult, ShapeResult, Spread, verdict
from batchrun.tools.numbers import number
from batchrun.tools.svg import esc, figure, hbars, page, table

INSTALL_TOOLS = "pip install 'batchrun[tools]'"


def _metric(name: str, default: Any) -> Callable[[ShapeResult], Any]:
    """A column read from a shape's run metrics (`default` for a shape that did not run)."""
    return lambda shape: getattr(shape.metrics, name) if shape.metrics else default


COLUMNS: list[tuple[str, Callable[[ShapeResult], Any]]] = [
    ("shape", lambda s: s.name), ("exit", lambda s: s.exit_code), ("wall s", lambda s: s.wall_s),
    ("MB/s", lambda s: _median_and_range(s.spread("mb_per_s"))), ("rows/s", lambda s: s.rows_per_s),
    ("p50 s", lambda s: s.latency.p50), ("p95 s", lambda s: s.latency.p95),
    ("p99 s", lambda s: s.latency.p99), ("peak MB", lambda s: s.peak_rss_mb),
    ("driver MB", lambda s: s.peak_driver_mb), ("workers MB", lambda s: s.peak_workers_mb),
    ("max/source", _metric("max_concurrency_per_source", 0)), ("retries", _metric("retries", 0)),
    ("failed", _metric("failed_batches", 0)), ("skipped", _metric("skipped_batches", 0)),
    ("identical", lambda s: s.identical),
]
"""The compare table's columns: (heading, the cell's value of a shape). MB/s is the median
over the shape's rounds with their range (`18 (16–21)`); the other columns are its median
round's."""


def _median_and_range(spread: Spread) -> str | float:
    return spread.median if spread.low == spread.high else f"{number(spread.median)} ({spread.text()})"


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
    try:
        path.write_text(page(f"batchrun compare: {result.job}",
                             _summary(result) + "".join(_plotly_figures(result)), scripts=True),
                        encoding="utf-8")
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _summary(result: CompareResult) -> str:
    """The verdict, the SVG charts and the table: what the page says without any script."""
    shapes = result.shapes
    names = [s.name for s in shapes]
    speed = [s.spread("mb_per_s") for s in shapes]
    memory = [s.spread("peak_rss_mb") for s in shapes]
    of = f"median of {result.rounds} rounds, the whisker their min–max" if result.rounds > 1 \
        else "one round (--rounds N shows the spread)"
    rows = [[esc(c) for c in cells(s)] for s in shapes]
    return (f"<h1>batchrun compare</h1><p class=\"sub\">job {esc(result.job)}</p>"
            f'<p class="verdict">{esc(verdict(result))}</p><div class="grid2">'
            + figure("Throughput per shape (MB/s while batches were in flight)",
                     hbars(names, [x.median for x in speed], "throughput per shape", "MB/s",
                           [(x.low, x.high) for x in speed]), of)
            + figure("Peak memory per shape (driver and Ray workers)",
                     hbars(names, [x.median for x in memory], "peak memory per shape", "MB",
                           [(x.low, x.high) for x in memory]), of)
            + "</div><h2>Every figure</h2>"
            + table([h for h, _ in COLUMNS], rows, [h not in ("shape", "identical") for h, _ in COLUMNS]))


def _plotly_figures(result: CompareResult) -> list[str]:
    import plotly.graph_objects as go
    import plotly.io as pio

    shapes = result.shapes
    names = [s.name for s in shapes]
    latency = go.Figure([go.Bar(name=f"p{p}", x=names,
                                y=[getattr(s.latency, f"p{p}") for s in shapes])
                         for p in (50, 95, 99)])
    latency.update_layout(title="Batch latency, dispatch to commit (median round)",
                          yaxis_title="seconds", barmode="group")
    concurrency = go.Figure([go.Scatter(name=s.name, x=[t for t, _ in s.concurrency],
                                        y=[n for _, n in s.concurrency], mode="lines",
                                        line_shape="hv") for s in shapes])
    concurrency.update_layout(title="Batches in flight over time", xaxis_title="seconds",
                              yaxis_title="batches in flight")
    return ["<h2>Interactive charts (plotly)</h2>"] + [
        "<figure>" + pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0),
                                 default_width="100%", default_height="420px",
                                 config={"responsive": True, "displaylogo": False}) + "</figure>"
        for i, fig in enumerate((latency, concurrency))]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int | float):
        return number(value)
    return str(value)
