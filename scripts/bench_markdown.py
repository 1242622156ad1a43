"""The benchmark's results as README-ready Markdown, and the issue's target checks.

`target_checks(results)` and `markdown(results)` read only the results JSON that
scripts/bench.py writes (`--out`), so a saved run can be rendered again:

    .venv/bin/python scripts/bench_markdown.py bench-results.json > bench.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench_stages import STAGE_TITLES, STAGES, stage_cells

SCALE_SHAPES = ("4gb", "seed")
DUCKDB_TARGET = {"4gb": 1.0, "seed": 1.0, "few-big": 1.3, "many-small": 1.0}
"""batchrun's wall over duckdb_copy's, at most (the issue's targets by shape)."""
POLARS_TARGET = 0.7
"""batchrun's wall over polars', at most, at scale."""
STEADY_TARGET = 0.9
"""batchrun's steady MB/s over pyarrow_2proc's MB/s, at least."""
UNIQUE_TARGET = 0.05
"""batchrun's unique stage over its wall, at most."""
VERSIONS = ("ray", "duckdb", "pyarrow", "polars")


def ordered_shapes(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The shapes, those at scale first."""
    shapes = results["shapes"]
    return sorted(shapes.items(), key=lambda item: (item[0] not in SCALE_SHAPES,
                                                    list(shapes).index(item[0])))


def target_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target and shape: {shape, check, value, target, met}; met is None when
    a figure is missing (its contender did not run)."""
    rows: list[dict[str, Any]] = []
    for name, shape in ordered_shapes(results):
        batchrun = shape["contenders"].get("batchrun", {})
        if name in DUCKDB_TARGET:
            rows.append(_check(name, "batchrun wall / duckdb_copy wall",
                               batchrun.get("ratio_to_duckdb_copy"), DUCKDB_TARGET[name], True))
        if name in SCALE_SHAPES:
            rows.append(_check(name, "batchrun wall / polars wall",
                               batchrun.get("ratio_to_polars"), POLARS_TARGET, True))
        steady = shape["derived"].get("batchrun_steady_pct_of_measured")
        rows.append(_check(name, "batchrun steady MB/s / pyarrow_2proc MB/s",
                           steady / 100 if steady is not None else None, STEADY_TARGET, False))
        rows.append(_check(name, "unique stage / batchrun wall",
                           shape["derived"].get("unique_share_of_wall"), UNIQUE_TARGET, True))
    return rows


def _check(shape: str, check: str, value: float | None, target: float,
           at_most: bool) -> dict[str, Any]:
    met = None if value is None else (value <= target if at_most else value >= target)
    return {"shape": shape, "check": check, "value": value,
            "target": f"{'≤' if at_most else '≥'} {target:g}", "met": met}


def peak_in(entry: dict[str, Any], kind: str) -> str:
    """" in <stage>": the stage in which that kind of process's RSS peaked most often
    over the rounds ("" if unknown)."""
    stages = (entry.get("peak_rss_in_stage") or {}).get(kind)
    return f" in {max(stages, key=stages.count)}" if stages else ""


def met_text(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "not met")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    align = ["---" if k < right_from else "---:" for k in range(len(header))]
    return [_row(header), _row(align), *(_row(r) for r in rows)]


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def result_cells(name: str, entry: dict[str, Any]) -> list[str]:
    """One contender's row: wall (median, min–max), MB/s, ratios, peak RSS."""
    if "median_wall_s" not in entry:
        return [name, entry["status"], "–", "–", "–", "–"]
    wall = f"{entry['median_wall_s']:.1f} s ({entry['min_wall_s']:.1f}–{entry['max_wall_s']:.1f})"
    flags = "" if entry.get("rows_match_truth") else " **rows ≠ truth**"
    flags += " **verify failed**" if entry.get("verified") is False else ""
    kinds = entry.get("peak_rss_by_kind_mb") or {}
    rss = f"{entry['peak_rss_mb']:,.0f}"
    if entry.get("median_stages") is not None and kinds:
        rss += (f" (driver {kinds.get('driver', 0):,.0f}{peak_in(entry, 'driver')}, largest "
                f"worker {kinds.get('workers', 0):,.0f}{peak_in(entry, 'workers')})")
    rate = entry["mb_per_s"]
    return [name + flags, wall, f"{rate:,.0f}" if rate >= 10 else f"{rate:.2f}",
            _ratio(entry.get("ratio_to_duckdb_copy")),
            _ratio(entry.get("ratio_to_polars")), rss]


def _shape_title(name: str, shape: dict[str, Any]) -> str:
    return (f"**{name}**: {shape['files']:,} files, {shape['bytes'] / 1e6:,.0f} MB, "
            f"{shape['truth_rows']:,} rows; median of {shape['rounds_run']} round(s)")


def results_section(results: dict[str, Any]) -> list[str]:
    lines = []
    header = ["contender", "wall (median, min–max)", "MB/s", "/ duckdb_copy", "/ polars",
              "peak RSS MB"]
    for name, shape in ordered_shapes(results):
        rows = [result_cells(c, e) for c, e in shape["contenders"].items()]
        lines += [_shape_title(name, shape), "", *_table(header, rows), ""]
    return lines


def before_after_section(results: dict[str, Any]) -> list[str]:
    """batchrun against batchrun_before (--baseline), shape by shape: the closing note's
    before/after table, from one run."""
    rows = []
    for name, shape in ordered_shapes(results):
        after, before = (shape["contenders"].get(c, {}).get("median_wall_s")
                         for c in ("batchrun", "batchrun_before"))
        if after and before:
            rows.append([name, f"{before:.1f} s", f"{after:.1f} s", f"{after / before:.2f}×"])
    header = ["shape", "batchrun_before", "batchrun", "after / before"]
    return ["Before and after (median wall):", "", *_table(header, rows), ""] if rows else []


def stages_section(results: dict[str, Any]) -> list[str]:
    """batchrun's stages (median seconds, share of the wall), from its run logs."""
    rows, derived = [], set()
    for name, shape in ordered_shapes(results):
        for contender, entry in shape["contenders"].items():
            stages = entry.get("median_stages")
            if stages:
                rows.append([name, contender, f"{stages['wall']:.2f}", *stage_cells(stages)])
                derived |= set(stages.get("derived", []))
    if not rows:
        return []
    header = ["shape", "contender", "wall s", "first batch at", *(STAGE_TITLES[s] for s in STAGES)]
    note = ("Seconds (share of the wall), median over rounds, from each run's log "
            "(scripts/bench_stages.py). Planning runs beside Ray's start; '–': no log line "
            "gives it.")
    if derived:
        note += (f" From log timestamps, no line logging their seconds: "
                 f"{', '.join(sorted(derived))}.")
    return ["Where batchrun's wall time goes:", "", *_table(header, rows, 2), "", note, ""]


def cpu_section(results: dict[str, Any]) -> list[str]:
    rows = []
    for name, shape in ordered_shapes(results):
        for contender, entry in shape["contenders"].items():
            cpu = entry.get("median_cpu_s")
            if cpu:
                rows.append([name, contender, *(f"{cpu.get(k, 0.0):.1f}" for k in
                                                ("driver", "ray_daemons", "workers")),
                             f"{sum(cpu.values()):.1f}"])
    header = ["shape", "contender", "driver", "Ray daemons", "workers", "total"]
    return (["CPU seconds by process kind (median):", "", *_table(header, rows, 2), ""]
            if rows else [])


def targets_section(results: dict[str, Any]) -> list[str]:
    rows = [[c["shape"], c["check"], "–" if c["value"] is None else f"{c['value']:.3f}",
             c["target"], met_text(c["met"])] for c in target_checks(results)]
    header = ["shape", "check", "value", "target", "met"]
    return ["The issue's targets:", "", *_table(header, rows, 2), ""] if rows else []


def machine_section(results: dict[str, Any]) -> list[str]:
    machine = results["machine"]
    versions = machine.get("versions", {})
    parts = [f"python {machine.get('python')}", f"batchrun {machine.get('git_rev') or '?'}"]
    if machine.get("baseline_rev"):
        parts.append(f"batchrun_before {machine['baseline_rev']}")
    parts += [f"{name} {versions.get(name) or 'not installed'}" for name in VERSIONS]
    return [f"Machine: {machine.get('cpu_count')} cores ({machine.get('cpu_model')}), "
            f"{machine.get('ram_gib')} GiB RAM, {machine.get('platform')}; load average "
            f"{machine.get('load_avg_at_start')} at the start, {machine.get('load_avg_at_end')}"
            f" at the end; {machine.get('date')}.", "",
            f"Versions: {', '.join(parts)}.", "",
            "Command:", "", "```bash", results["config"].get("command", "?"), "```", ""]


def markdown(results: dict[str, Any]) -> str:
    sections = (results_section, before_after_section, stages_section, cpu_section,
                targets_section, machine_section)
    return "\n".join(line for section in sections for line in section(results))


def main(argv: list[str]) -> int:
    print(markdown(json.loads(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
