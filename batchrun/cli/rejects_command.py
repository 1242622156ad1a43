"""`batchrun rejects`: a run's rejected rows, made for runs with tens of thousands of them.

By default (a table, no `--limit`/`--all`): counts by rule and by file, then the first
rows, then how to see them all. `--format csv|json` (and `--json`) stream every matching
row in chunks, straight to stdout, without a table. Files show their tail
(`…/supplier_07/orders_0012.csv`), never a head cut short.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from batchrun.cli.options import json_option, out, state_options
from batchrun.cli.render import clip, tail
from batchrun.rejects import COLUMNS, FileRuleCount, RejectFilter, RunRejects

FIRST_ROWS = 20
"""Rows the default view shows after the summary."""
TOP_FILES = 20
"""Files the default summary lists by name (the rest are counted on one line)."""


@click.command()
@click.argument("run_id", default="latest")
@click.option("--file", "file_filter", help="Only rejects of files whose path contains this text.")
@click.option("--rule", help="Only this rule, e.g. required, type:int32, unique, ragged_row.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Show the first N rejects (no summary).")
@click.option("--all", "show_all", is_flag=True, help="Show every reject (no summary).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default=None,
              help="table (default: a summary and the first rows), or csv / json: every "
                   "matching row, streamed.")
@state_options
@json_option
def rejects(run_id: str, file_filter: str | None, rule: str | None, limit: int | None,
            show_all: bool, fmt: str | None, state_dir: Path, as_json: bool) -> None:
    """Rejected rows of a run, with file, line, column, rule, value and the raw line."""
    from batchrun.cli.commands import _damaged_output, _existing_catalog, _resolve_run
    from batchrun.staging import unreadable_output

    fmt = _chosen_format(fmt, as_json)
    narrow = RejectFilter(file_filter, rule)
    with _existing_catalog(state_dir, run_id) as catalog:
        run_id = _resolve_run(catalog, run_id)
        committed = catalog.committed(run_id)
        view = RunRejects(catalog, run_id, explain=lambda exc: _damaged_output(
            catalog, run_id, exc) or unreadable_output(committed, exc))
        if fmt != "table":
            _stream(view.rows(narrow, limit), fmt)
        elif limit or show_all:
            _print_rows(view.rows(narrow, limit))
        else:
            _print_summary(view, narrow, run_id)


def _chosen_format(fmt: str | None, as_json: bool) -> str:
    if as_json and fmt not in (None, "json"):
        raise click.BadParameter(f"--json and --format {fmt} disagree", param_hint="--format")
    return "json" if as_json else fmt or "table"


def _stream(rows: Iterator[tuple[Any, ...]], fmt: str) -> None:
    """Every row to stdout as CSV (with a header) or as one JSON array, row by row."""
    stdout = sys.stdout
    if fmt == "csv":
        writer = csv.writer(stdout)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(row)
        return
    stdout.write("[")
    for i, row in enumerate(rows):
        stdout.write(("," if i else "") + "\n" + json.dumps(dict(zip(COLUMNS, row)), default=str))
    stdout.write("\n]\n")


def _print_summary(view: RunRejects, narrow: RejectFilter, run_id: str) -> None:
    counts = view.by_file_and_rule(narrow)
    total = sum(c.count for c in counts)
    if not total:
        _print_lines([f"no rejected rows in run {run_id}"])
        return
    files = {c.file for c in counts}
    _print_lines([f"{total:,} rejected rows in {len(files):,} file(s) of run {run_id}"])
    _print_lines(_rule_lines(counts))
    _print_lines(_file_lines(counts))
    _print_lines([f"first {min(FIRST_ROWS, total)} of {total:,}:"])
    _print_rows(view.rows(narrow, FIRST_ROWS))
    if total > FIRST_ROWS:
        _print_lines([f"see all {total:,}: batchrun rejects {run_id} --all (a table),"
                      " --format csv or --format json (every row, streamed), or --limit N"])


def _rule_lines(counts: list[FileRuleCount]) -> list[str]:
    by_rule: Counter[str] = Counter()
    for c in counts:
        by_rule[c.rule] += c.count
    return ["by rule:"] + [f"  {n:>9,}  {rule}" for rule, n in by_rule.most_common()]


def _file_lines(counts: list[FileRuleCount]) -> list[str]:
    by_file: dict[str, Counter[str]] = defaultdict(Counter)
    for c in counts:
        by_file[c.file][c.rule] += c.count
    ranked = sorted(by_file.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    lines = ["by file:"] + [
        f"  {sum(rules.values()):>9,}  {tail(file, 56):<56}  "
        + ", ".join(f"{rule} {n:,}" for rule, n in rules.most_common())
        for file, rules in ranked[:TOP_FILES]]
    rest = ranked[TOP_FILES:]
    if rest:
        lines.append(f"  {sum(sum(r.values()) for _, r in rest):>9,}  in {len(rest):,} more file(s)"
                     " (--file TEXT narrows to them)")
    return lines


def _print_rows(rows: Iterable[tuple[Any, ...]]) -> None:
    """One line per reject: file tail:line, column, rule, value and the raw line, cut to
    the terminal's width; plain text written in one go (no table layout to compute)."""
    width = max(out.width, 100)
    lines = []
    for _, _, file, line, column, rule, value, raw in rows:
        head = f"{tail(file, 48)}:{line}"
        text = f"{head:<56} {column or '-':<14} {rule:<14} {clip(repr(value), 24):<24} "
        lines.append(text + clip(raw or "", max(width - len(text), 20)))
    _print_lines(lines)


def _print_lines(lines: list[str]) -> None:
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()
