"""scripts/bench.py's results: the per-contender summary of a shape's samples, the
console tables (results, CPU seconds and peak RSS by process kind, batchrun's stages, the
issue's targets), the machine and versions, and the exit code."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from bench_markdown import met_text, peak_in, target_checks
from bench_stages import STAGE_TITLES, STAGES, median_stages, stage_cells
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from bench import Contender, ShapeData

REPO_ROOT = Path(__file__).resolve().parents[1]
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


# -- summarising ----------------------------------------------------------------------------


def summarise(data: ShapeData, contenders: list[Contender]) -> dict[str, Any]:
    stats = {c.name: contender_stats(data, c.name) for c in contenders}
    base = stats.get("batchrun", {}).get("median_wall_s")
    duckdb, polars = (stats.get(n, {}).get("median_wall_s") for n in ("duckdb_copy", "polars"))
    for entry in stats.values():
        wall = entry.get("median_wall_s")
        entry["ratio_batchrun_over"] = round(base / wall, 3) if base and wall else None
        entry["ratio_to_duckdb_copy"] = round(wall / duckdb, 3) if wall and duckdb else None
        entry["ratio_to_polars"] = round(wall / polars, 3) if wall and polars else None
    return {"files": len(data.paths), "bytes": data.bytes, "truth_rows": data.rows,
            "rounds_run": data.rounds_run,
            "data_dir": str(data.data_dir), "contenders": stats,
            "derived": derived(stats, data.bytes), "samples": [asdict(s) for s in data.samples]}


def contender_stats(data: ShapeData, name: str) -> dict[str, Any]:
    samples = [s for s in data.samples if s.contender == name]
    ok = [s for s in samples if s.status == "ok"]
    statuses = {s.status for s in samples}
    status = next((s for s in ("skipped (not installed)", "timeout", "failed") if s in statuses),
                  "ok")
    entry: dict[str, Any] = {"status": status, "rounds_ok": len(ok)}
    errors = [s.error for s in samples if s.error]
    if errors:
        entry["error"] = errors[0]
    if not ok:
        return entry
    walls = [s.wall_s for s in ok if s.wall_s is not None]
    wall = statistics.median(walls)
    rows = sorted({s.rows for s in ok}, key=lambda r: -1 if r is None else r)
    entry.update({
        "median_wall_s": round(wall, 3), "min_wall_s": min(walls), "max_wall_s": max(walls),
        "mb_per_s": round(data.bytes / 1e6 / wall, 2),
        "rows_per_s": round(data.rows / wall),
        "peak_rss_mb": max(s.peak_rss_mb or 0 for s in ok),
        "rows_written": rows[0] if len(rows) == 1 else rows,
        "rows_rejected": next((s.rejected for s in ok if s.rejected is not None), None),
        "rows_match_truth": rows == [data.rows],
        "types_ok": all(s.types_ok for s in ok),
        "median_inner_s": _median([s.inner_s for s in ok]),
        "median_steady_mb_per_s": _median([s.steady_mb_per_s for s in ok]),
        "median_cpu_s": {kind: _median([s.cpu_s.get(kind, 0.0) for s in ok])
                         for kind in sorted({k for s in ok for k in s.cpu_s})},
        "peak_rss_by_kind_mb": {kind: max(s.peak_rss_by_kind_mb.get(kind, 0.0) for s in ok)
                                for kind in sorted({k for s in ok for k in s.peak_rss_by_kind_mb})},
    })
    if any(s.stages is not None or s.verified is not None for s in ok):
        entry["verified"] = all(s.verified for s in ok)
        entry["median_stages"] = median_stages([s.stages for s in ok])
        entry["peak_rss_in_stage"] = peak_stages([s.stages for s in ok])
    return entry


def peak_stages(stages: list[dict[str, Any] | None]) -> dict[str, list[str]]:
    """Kind of process → the stage its RSS peaked in, round by round."""
    found: dict[str, list[str]] = {}
    for one in stages:
        for mark, stage in (one or {}).get("in_stage", {}).items():
            found.setdefault(mark.removeprefix("peak_rss_"), []).append(stage)
    return found


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def derived(stats: dict[str, dict[str, Any]], data_bytes: int) -> dict[str, Any]:
    """The issue's derived targets. "Steady" figures are MB/s while batches were in flight;
    the machine limit is cores × pyarrow's single-thread rate (its own timing, without
    interpreter start-up)."""
    def get(name: str, key: str) -> float | None:
        value = stats.get(name, {}).get(key)
        return float(value) if value is not None else None

    inner = get("pyarrow_1thread", "median_inner_s")
    limit = (os.cpu_count() or 1) * data_bytes / 1e6 / inner if inner else None
    inner_all = get("pyarrow_2proc", "median_inner_s")
    measured = data_bytes / 1e6 / inner_all if inner_all else None
    steady, steady_one = (get("batchrun", "median_steady_mb_per_s"),
                          get("batchrun_1worker", "median_steady_mb_per_s"))
    full, types = get("batchrun", "median_wall_s"), get("batchrun_types_only", "median_wall_s")
    return {
        "machine_limit_mb_per_s": round(limit, 2) if limit else None,
        "batchrun_steady_mb_per_s": steady,
        "batchrun_steady_pct_of_limit": round(100 * steady / limit, 1) if limit and steady else None,
        "measured_all_cores_mb_per_s": round(measured, 2) if measured else None,
        "batchrun_steady_pct_of_measured": (round(100 * steady / measured, 1)
                                            if measured and steady else None),
        "speedup_2_vs_1_worker": round(steady / steady_one, 2) if steady and steady_one else None,
        "validation_cost_pct": round(100 * (full / types - 1), 1) if full and types else None,
        "unique_share_of_wall": unique_share(stats.get("batchrun", {})),
    }


def unique_share(entry: dict[str, Any]) -> float | None:
    """batchrun's unique stage over its wall (medians of the run logs' stages)."""
    stages = entry.get("median_stages") or {}
    unique, wall = stages.get("unique"), stages.get("wall")
    return round(unique / wall, 4) if unique is not None and wall else None


def render(results: dict[str, Any]) -> None:
    for name, shape in results["shapes"].items():
        table = Table(title=f"{name}: {shape['files']:,} files, {shape['bytes'] / 1e6:,.1f} MB, "
                            f"{shape['truth_rows']:,} rows (median of {shape['rounds_run']} "
                            f"round(s))")
        for column in ("contender", "status", "wall s", "MB/s", "rows/s", "peak RSS MB",
                       "rows written", "batchrun/this"):
            table.add_column(column, justify="left" if column in ("contender", "status") else "right")
        for contender, entry in shape["contenders"].items():
            table.add_row(contender, *row_cells(entry, shape["truth_rows"]))
        console.print(table)
        for contender, entry in shape["contenders"].items():
            if entry.get("rows_match_truth") is False:
                console.print(f"  [red]{contender}: ROW MISMATCH, wrote {entry['rows_written']} "
                              f"rows, the generator wrote {shape['truth_rows']:,}[/]")
            if entry.get("error"):
                console.print(f"  {contender}: {escape(entry['error'])}")
        console.print(cpu_text(shape["contenders"]))
        console.print(rss_text(shape["contenders"]))
        console.print(derived_text(shape["derived"]))
    render_stages(results)
    render_targets(results)


def rss_text(contenders: dict[str, dict[str, Any]]) -> str:
    """Peak RSS of the driver alone and of the largest single worker (max over rounds)."""
    lines = ["  peak RSS MB by process (max; driver / largest single worker):"]
    for name, entry in contenders.items():
        kinds = entry.get("peak_rss_by_kind_mb")
        if kinds:
            lines.append(f"    {name:<24} {kinds.get('driver', 0.0):,.0f}"
                         f"{peak_in(entry, 'driver')} / {kinds.get('workers', 0.0):,.0f}"
                         f"{peak_in(entry, 'workers')}")
    return "\n".join(lines)


def render_stages(results: dict[str, Any]) -> None:
    table = Table("shape", "contender", "wall s", "first batch at", *(STAGE_TITLES[s] for s in STAGES),
                  title="batchrun's stages, from its run log (median s, % of wall)")
    for name, shape in results["shapes"].items():
        for contender, entry in shape["contenders"].items():
            if stages := entry.get("median_stages"):
                table.add_row(name, contender, f"{stages['wall']:.2f}", *stage_cells(stages))
    if table.row_count:
        console.print(table)


def render_targets(results: dict[str, Any]) -> None:
    table = Table("shape", "check", "value", "target", "met", title="the issue's targets")
    for check in target_checks(results):
        style = {True: "green", False: "red"}.get(check["met"], "dim")
        value = "-" if check["value"] is None else f"{check['value']:.3f}"
        table.add_row(check["shape"], check["check"], value, check["target"],
                      f"[{style}]{met_text(check['met'])}[/]")
    if table.row_count:
        console.print(table)


def row_cells(entry: dict[str, Any], truth: int) -> list[str]:
    status = entry["status"]
    style = {"ok": "green", "timeout": "yellow", "failed": "red"}.get(status, "dim")
    cells = [f"[{style}]{status}[/]"]
    if "median_wall_s" not in entry:
        return cells + ["-"] * 6
    rows = entry["rows_written"]
    rows_text = f"{rows:,}" if isinstance(rows, int) else str(rows)
    if not entry["rows_match_truth"]:
        rows_text = f"[red]{rows_text} ≠ {truth:,}[/]"
    if not entry["types_ok"]:
        rows_text += " [yellow](types differ)[/]"
    ratio = entry["ratio_batchrun_over"]
    return cells + [f"{entry['median_wall_s']:.2f}", f"{entry['mb_per_s']:,.1f}",
                    f"{entry['rows_per_s']:,}", f"{entry['peak_rss_mb']:,.0f}", rows_text,
                    f"{ratio:.2f}×" if ratio else "-"]


def cpu_text(contenders: dict[str, dict[str, Any]]) -> str:
    """Where each contender's CPU time went: the profile behind the wall times."""
    lines = ["  CPU seconds by process kind (median; driver / ray_daemons / workers):"]
    for name, entry in contenders.items():
        cpu = entry.get("median_cpu_s")
        if cpu:
            parts = " / ".join(f"{cpu.get(k, 0.0):.1f}" for k in ("driver", "ray_daemons", "workers"))
            lines.append(f"    {name:<24} {parts}  = {sum(cpu.values()):.1f} s")
    return "\n".join(lines)


def derived_text(d: dict[str, Any]) -> str:
    def fmt(value: float | None, suffix: str) -> str:
        return "n/a" if value is None else f"{value:,}{suffix}"

    return (f"  machine limit ({os.cpu_count()} × pyarrow_1thread's rate): "
            f"{fmt(d['machine_limit_mb_per_s'], ' MB/s')}; batchrun steady state "
            f"{fmt(d['batchrun_steady_mb_per_s'], ' MB/s')} = "
            f"{fmt(d['batchrun_steady_pct_of_limit'], '%')} of it\n  the same loop in "
            f"{os.cpu_count()} processes at once (pyarrow_2proc): "
            f"{fmt(d['measured_all_cores_mb_per_s'], ' MB/s')}, batchrun steady = "
            f"{fmt(d['batchrun_steady_pct_of_measured'], '%')} of that\n"
            f"  2-vs-1 worker speedup (steady state): {fmt(d['speedup_2_vs_1_worker'], '×')}"
            f"; validation cost (full vs types-only wall): {fmt(d['validation_cost_pct'], '%')}\n")


def machine_info() -> dict[str, Any]:
    names = ("batchrun", "pyarrow", "duckdb", "ray", "dask", "polars", "pandas", "psutil")
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(), "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()], "versions": versions,
        "git_rev": git_rev(REPO_ROOT),
    }


def git_rev(repo: Path) -> str | None:
    """The checkout's short commit, "-dirty" if it has uncommitted changes."""
    def git(*words: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *words], capture_output=True,
                              text=True, check=False).stdout.strip()

    rev = git("rev-parse", "--short", "HEAD")
    if not rev:
        return None
    return rev + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def exit_code(results: dict[str, Any]) -> int:
    """1 if any contender failed, wrote the wrong number of rows or failed verify."""
    for shape in results["shapes"].values():
        for entry in shape["contenders"].values():
            if (entry["status"] == "failed" or entry.get("rows_match_truth") is False
                    or entry.get("verified") is False):
                return 1
    return 0
