"""Charts as inline SVG, and the page around them: what `report --html` and the top of
`compare --html` are drawn with. No script, no font or stylesheet to fetch: a page made of
these loads with the network off.

Every text that reaches the page goes through `esc` (labels, titles, file names, raw
lines): a file named `<script>…` shows as that text and never runs.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from batchrun.tools.numbers import number

WIDTH = 560
LABEL_W = 150
ROW_H = 26
PLOT_H = 220
PAD = 40


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def figure(title: str, svg: str, note: str = "") -> str:
    caption = f"<figcaption>{esc(title)}</figcaption>"
    return (f"<figure>{caption}{svg}"
            + (f"<p class=\"note\">{esc(note)}</p>" if note else "") + "</figure>")


def _svg(height: float, body: str, label: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {height:.0f}" width="100%"'
            f' role="img" aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg">'
            f"{body}</svg>")


def hbars(labels: Sequence[str], values: Sequence[float], label: str, unit: str = "",
          spans: Sequence[tuple[float, float]] | None = None) -> str:
    """Horizontal bars, one row per label, the value written at the bar's end; `spans`
    (min, max) per row draws a whisker over each bar (spread over repeated rounds)."""
    top = max([*values, *(hi for _, hi in spans or ())], default=0) or 1
    scale = (WIDTH - LABEL_W - 90) / top
    rows = []
    for i, (name, value) in enumerate(zip(labels, values)):
        y = 6 + i * ROW_H
        rows.append(f'<text class="label" x="{LABEL_W - 8}" y="{y + 16}" text-anchor="end">'
                    f"{esc(_short(name, 24))}<title>{esc(name)}</title></text>"
                    f'<rect class="bar" x="{LABEL_W}" y="{y + 3}" width="{max(value * scale, 1):.1f}"'
                    f' height="{ROW_H - 8}"><title>{esc(name)}: {esc(number(value))} {esc(unit)}'
                    f"</title></rect>")
        end = value * scale
        if spans:
            low, high = spans[i]
            end = max(end, high * scale)
            rows.append(f'<path class="whisker" d="M{LABEL_W + low * scale:.1f} {y + 12}'
                        f" H{LABEL_W + high * scale:.1f} M{LABEL_W + low * scale:.1f} {y + 6}"
                        f" V{y + 18} M{LABEL_W + high * scale:.1f} {y + 6} V{y + 18}\"/>")
        rows.append(f'<text class="value" x="{LABEL_W + end + 6:.1f}" y="{y + 16}">'
                    f"{esc(number(value))} {esc(unit)}</text>")
    return _svg(12 + len(labels) * ROW_H, "".join(rows), label)


def columns(edges: Sequence[float], counts: Sequence[int], label: str, unit: str) -> str:
    """A histogram: `counts[i]` values fell in [edges[i], edges[i+1])."""
    top = max(counts, default=0) or 1
    inner = WIDTH - 2 * PAD
    step = inner / max(len(counts), 1)
    parts = [_y_axis(top, "batches")]
    for i, count in enumerate(counts):
        height = count / top * PLOT_H
        x = PAD + i * step
        parts.append(f'<rect class="bar" x="{x + 1:.1f}" y="{PAD + PLOT_H - height:.1f}"'
                     f' width="{max(step - 2, 1):.1f}" height="{height:.1f}"><title>'
                     f"{esc(number(edges[i]))}–{esc(number(edges[i + 1]))} {esc(unit)}: {count}"
                     f"</title></rect>")
        if count:
            parts.append(f'<text class="value" x="{x + step / 2:.1f}" y="{PAD + PLOT_H - height - 4:.1f}"'
                         f' text-anchor="middle">{count}</text>')
    parts += _x_ticks(edges[0], edges[-1], unit)
    return _svg(PAD * 2 + PLOT_H, "".join(parts), label)


def area(points: Sequence[tuple[float, float]], label: str, x_unit: str, y_unit: str) -> str:
    """A filled line through (x, y) points, x from the first point to the last."""
    if not points:
        return _svg(40, '<text class="label" x="10" y="24">no data</text>', label)
    x0, x1 = points[0][0], points[-1][0]
    top = max(y for _, y in points) or 1
    span = (x1 - x0) or 1

    def at(x: float, y: float) -> str:
        return f"{PAD + (x - x0) / span * (WIDTH - 2 * PAD):.1f} {PAD + PLOT_H - y / top * PLOT_H:.1f}"

    line = " L".join(at(x, y) for x, y in points)
    base = f"{PAD + PLOT_H}"
    parts = [_y_axis(top, y_unit),
             f'<path class="fill" d="M{PAD} {base} L{line} L{WIDTH - PAD} {base} Z"/>',
             f'<path class="line" d="M{line}"/>', *_x_ticks(x0, x1, x_unit)]
    return _svg(PAD * 2 + PLOT_H, "".join(parts), label)


def _y_axis(top: float, unit: str) -> str:
    ticks = []
    for k in range(5):
        value = top * k / 4
        y = PAD + PLOT_H - PLOT_H * k / 4
        ticks.append(f'<path class="grid" d="M{PAD} {y:.1f} H{WIDTH - PAD}"/>'
                     f'<text class="tick" x="{PAD - 4}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{esc(number(value))}</text>")
    return "".join(ticks) + f'<text class="tick" x="{PAD}" y="{PAD - 12}">{esc(unit)}</text>'


def _x_ticks(low: float, high: float, unit: str) -> list[str]:
    ticks = []
    for k in range(5):
        value = low + (high - low) * k / 4
        x = PAD + (WIDTH - 2 * PAD) * k / 4
        ticks.append(f'<text class="tick" x="{x:.1f}" y="{PAD + PLOT_H + 16}" text-anchor="middle">'
                     f"{esc(number(value))}</text>")
    ticks.append(f'<text class="tick" x="{WIDTH - PAD}" y="{PAD + PLOT_H + 32}" text-anchor="end">'
                 f"{esc(unit)}</text>")
    return ticks


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2933;background:#f5f7fa}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.sub{color:#52606d;margin:0 0 16px}
.outcome{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#fff;border:1px solid #d9e2ec;border-radius:8px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:20px}.card span{color:#52606d;font-size:12px}
.verdict{background:#fff;border-left:6px solid #2f80ed;border-radius:6px;padding:12px 16px;font-size:16px}
.state-succeeded{border-left-color:#27ae60}.state-failed,.state-interrupted{border-left-color:#d64545}
.scroll{overflow-x:auto}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px}
figure{background:#fff;border:1px solid #d9e2ec;border-radius:8px;margin:0;padding:12px 16px;min-width:0}
svg.chart{display:block;max-width:640px}
figcaption{font-weight:600;margin-bottom:6px}.note{color:#52606d;font-size:12px;margin:4px 0 0}
svg.chart text{font:12px system-ui,sans-serif;fill:#1f2933}svg.chart .tick{fill:#7b8794;font-size:11px}
svg.chart .bar{fill:#2f80ed}svg.chart .bar:hover{fill:#1c5fbf}
svg.chart .whisker{stroke:#1f2933;stroke-width:1.5;fill:none}
svg.chart .line{fill:none;stroke:#2f80ed;stroke-width:2}svg.chart .fill{fill:#2f80ed;opacity:.15}
svg.chart .grid{stroke:#e4e7eb}
table{border-collapse:collapse;background:#fff;width:100%;font-size:13px}
td,th{border:1px solid #d9e2ec;padding:4px 8px;text-align:left;vertical-align:top}th{white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,monospace;white-space:pre-wrap;word-break:break-all}
code.raw{color:#52606d}td div+div{margin-top:6px}
code.bad{word-break:normal;overflow-wrap:anywhere}td:has(code.bad){min-width:340px}
.bad{color:#d64545}.id{white-space:nowrap}.empty{color:#52606d}
"""


def page(title: str, body: str, scripts: bool = False) -> str:
    """A whole HTML document: inline CSS, nothing fetched (its Content-Security-Policy
    forbids any request), no script unless `scripts` (inline ones only)."""
    allowed = "'unsafe-inline' 'unsafe-eval'" if scripts else "'none'"
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\';'
            f" style-src 'unsafe-inline'; img-src data:; font-src data:; script-src {allowed}\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def table(headings: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] = ()) -> str:
    """An HTML table of already-escaped cells (`numeric[i]` aligns column i right)."""
    kind = [' class="n"' if i < len(numeric) and numeric[i] else "" for i in range(len(headings))]
    head = "".join(f"<th{kind[i]}>{esc(h)}</th>" for i, h in enumerate(headings))
    body = "".join("<tr>" + "".join(f"<td{kind[i]}>{c}</td>" for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def card(value: str, caption: str) -> str:
    return f'<div class="card"><b>{esc(value)}</b><span>{esc(caption)}</span></div>'
