"""`batchrun report` (top reject reasons, quarantined files, --html in a real headless
chromium) and `batchrun rejects` at scale, over one real run whose every reject and
quarantine is known in advance: 6,000 rows of one supplier file with two kinds of bad rows
(one with a `<script>` in its raw line), a small file with missing ids, and a binary
file whose name is an HTML injection attempt."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from batchrun.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, invoke
from tests.browser import loaded, svg_shapes
from tests.conftest import assert_exactly_once, parse_json

pytestmark = pytest.mark.usefixtures("ray_session")

JOB = """
[job]
name = "nightly"
table = "orders"
[source]
paths = ["in/*/*.csv"]
[batch]
max_files = 1
[execution]
workers = 2
[validation]
max_reject_ratio = 0.6
[schema.columns]
order_id = { type = "int64", required = true }
quantity = { type = "int32", min = 1 }
currency = { type = "string", allowed = ["USD", "EUR"] }
note     = { type = "string" }
"""
HEADER = "order_id,quantity,currency,note\n"
BIG = "supplier_07/orders_0012.csv"
SMALL = "supplier_02/orders_0001.csv"
EVIL = "supplier_03/<img src=x onerror=window.__pwned=1><script>window.__pwned=2.csv"
SCRIPT_NOTE = "<script>window.__pwned=3</script>"


@dataclass(frozen=True)
class Truth:
    state: Path
    staged: int
    by_reason: dict[tuple[str, str], int]
    """(rule, column) -> rejects."""
    by_file: dict[str, Counter[str]]
    """File tail (supplier/name) -> rule -> rejects."""
    first_lines: dict[tuple[str, str], list[int]]
    """(rule, column) -> the lines of its first rejects (file, line order)."""

    @property
    def rejected(self) -> int:
        return sum(self.by_reason.values())


def big_file() -> tuple[str, int, dict[tuple[str, str], list[int]]]:
    """6,000 rows: every 3rd has quantity `ten` (type:int32), every 5th of the others
    currency XXX (allowed); the first of those carries a <script> note. Returns the text,
    the good rows and the lines of each reason's rejects."""
    lines, good, bad = [HEADER], 0, {("type:int32", "quantity"): [], ("allowed", "currency"): []}
    for i in range(6000):
        line = i + 2
        if i % 3 == 0:
            lines.append(f"{i},ten,USD,x\n")
            bad[("type:int32", "quantity")].append(line)
        elif i % 5 == 0:
            note = SCRIPT_NOTE if not bad[("allowed", "currency")] else "y"
            lines.append(f"{i},4,XXX,{note}\n")
            bad[("allowed", "currency")].append(line)
        else:
            lines.append(f"{i},4,EUR,fine\n")
            good += 1
    return "".join(lines), good, bad


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> Truth:
    folder = tmp_path_factory.mktemp("report")
    text, good, bad = big_file()
    small = HEADER + "".join(f"{10_000 + i},2,USD,s\n" if i not in (3, 7) else ",2,USD,no id\n"
                             for i in range(10))
    for name, body in ((BIG, text), (SMALL, small)):
        (folder / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "in" / name).write_text(body)
    (folder / "in" / EVIL).parent.mkdir(parents=True)
    (folder / "in" / EVIL).write_bytes(b"\x00\x01binary\x00" * 64)
    (folder / "job.toml").write_text(JOB)
    state = folder / "state"
    code = invoke(["run", str(folder / "job.toml"), "--state-dir", str(state), "--no-progress"])
    assert code == EXIT_PARTIAL  # the binary file is quarantined
    bad[("required", "order_id")] = [5, 9]
    by_file = {BIG: Counter({"type:int32": 2000, "allowed": 800}), SMALL: Counter({"required": 2})}
    truth = Truth(state, good + 8, {k: len(v) for k, v in bad.items()}, by_file,
                  {k: v[:2] for k, v in bad.items()})
    assert truth.by_reason == {("type:int32", "quantity"): 2000, ("allowed", "currency"): 800,
                               ("required", "order_id"): 2}
    assert_exactly_once(state, truth.staged, truth.rejected)
    return truth


def command(capsys: pytest.CaptureFixture[str], truth: Truth, *args: str,
            code: int = EXIT_OK) -> str:
    assert invoke([*args, "--state-dir", str(truth.state)]) == code
    return capsys.readouterr().out


def test_report_json_gives_the_top_reject_reasons_and_the_quarantined_file_as_the_truth(
        truth: Truth, capsys: pytest.CaptureFixture[str]) -> None:
    found = parse_json(command(capsys, truth, "report", "--json"))
    reasons = found["reject_reasons"]
    assert {(r["rule"], r["column"]): r["count"] for r in reasons} == truth.by_reason
    assert [r["count"] for r in reasons] == sorted(truth.by_reason.values(), reverse=True)
    for reason in reasons:
        examples = reason["examples"]
        assert [e["line"] for e in examples] == truth.first_lines[(reason["rule"], reason["column"])]
        assert all(e["raw_line"] and e["file"].endswith(".csv") for e in examples)
    allowed = next(r for r in reasons if r["rule"] == "allowed")
    assert allowed["examples"][0]["value"] == "XXX" and SCRIPT_NOTE in allowed["examples"][0]["raw_line"]
    [quarantined] = found["quarantined_files"]
    assert quarantined["path"].endswith(EVIL) and "binary" in quarantined["error"]
    assert found["rows_staged"] == truth.staged and found["rows_rejected"] == truth.rejected


def test_report_text_names_each_reason_with_an_example_line_and_the_quarantined_file(
        truth: Truth, capsys: pytest.CaptureFixture[str]) -> None:
    shown = command(capsys, truth, "report")
    assert "top reject reasons (2,802 rows rejected)" in shown
    assert "2,000" in shown and "type:int32" in shown and "orders_0012.csv:2 'ten'" in shown
    assert "quarantined files (1):" in shown and "window.__pwned=2.csv" in shown


def test_report_html_renders_its_charts_in_headless_chromium_without_errors_or_requests(
        truth: Truth, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page_file = tmp_path / "report.html"
    command(capsys, truth, "report", "--html", str(page_file))
    with loaded(page_file, tmp_path / "profile", "report.png") as seen:
        assert seen.console_errors == [] and seen.page_errors == []
        assert seen.requests == []  # not even the injected <img src=x>
        page = seen.page
        assert page.evaluate("window.__pwned") is None
        text = page.inner_text("body")
        for expected in (f"{truth.staged:,}", "2,802", "2,000", "type:int32 · quantity",
                         "supplier_07", "orders_0012.csv:2", SCRIPT_NOTE, EVIL.split("/")[1]):
            assert expected in text, expected
        assert page.locator("svg").count() == 4
        bars = svg_shapes(page, "svg rect.bar")
        assert len(bars) >= 3 + 2 + 1 and all(b["width"] > 0 and b["height"] > 0 for b in bars)
        line = svg_shapes(page, "svg path.line")
        assert line and line[0]["width"] > 100
    assert seen.screenshot is not None and seen.screenshot.stat().st_size > 10_000


def test_report_html_into_a_missing_folder_is_one_usage_line(
        truth: Truth, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "r.html"
    assert invoke(["report", "--html", str(missing), "--state-dir", str(truth.state)]) == EXIT_USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--html" in lines[0] and "does not exist" in lines[0]
    assert not missing.parent.exists()


def test_rejects_by_default_summarises_by_rule_and_file_then_shows_the_first_rows(
        truth: Truth, capsys: pytest.CaptureFixture[str]) -> None:
    shown = command(capsys, truth, "rejects").splitlines()
    assert shown[0].startswith("2,802 rejected rows in 2 file(s)")
    by_rule = shown[shown.index("by rule:") + 1:shown.index("by file:")]
    assert [(line.split()[1], int(line.split()[0].replace(",", ""))) for line in by_rule] == [
        ("type:int32", 2000), ("allowed", 800), ("required", 2)]
    by_file = shown[shown.index("by file:") + 1:shown.index("first 20 of 2,802:")]
    assert len(by_file) == 2
    for line, name in zip(by_file, (BIG, SMALL)):
        assert f"/{name}" in line and "…/" in line  # the tail, never a cut head
        assert f"{sum(truth.by_file[name].values()):,}" in line
    rows = shown[shown.index("first 20 of 2,802:") + 1:-1]
    assert len(rows) == 20  # in file and line order
    assert [f"/{SMALL}:5", f"/{SMALL}:9"] == [row.split()[0][-len(SMALL) - 3:] for row in rows[:2]]
    assert all(row.startswith("…/") and f"/{BIG}:" in row for row in rows[2:])
    assert shown[-1].startswith("see all 2,802: batchrun rejects ") and "--format csv" in shown[-1]


def test_rejects_csv_and_json_stream_every_matching_row(
        truth: Truth, capsys: pytest.CaptureFixture[str]) -> None:
    rows = list(csv.DictReader(io.StringIO(command(capsys, truth, "rejects", "--format", "csv"))))
    assert len(rows) == truth.rejected
    assert Counter((r["rule"], r["column"]) for r in rows) == Counter(truth.by_reason)
    found = json.loads(command(capsys, truth, "rejects", "--format", "json", "--rule", "allowed"))
    assert len(found) == 800 and {(r["rule"], r["column"]) for r in found} == {("allowed", "currency")}
    narrowed = command(capsys, truth, "rejects", "--json", "--file", "supplier_02")
    assert [r["line"] for r in json.loads(narrowed)] == [5, 9]
    assert len(command(capsys, truth, "rejects", "--limit", "7").splitlines()) == 7
