"""Bad rows become rejects with file, line and rule; unique keys hold across the whole run."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, EXIT_PARTIAL, invoke
from tests.conftest import assert_exactly_once, parse_json

pytestmark = pytest.mark.usefixtures("ray_session")

JOB = """
[job]
name = "small"
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
order_id = { type = "int64", required = true, unique = true }
quantity = { type = "int32", min = 1 }
currency = { type = "string", allowed = ["USD", "EUR"] }
note     = { type = "string" }
"""
HEADER = "order_id,quantity,currency,note\n"


def make_files(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    job = tmp_path / "job.toml"
    job.write_text(JOB)
    return job


def run(job: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = invoke(["run", str(job), "--state-dir", str(tmp_path / "s"), "--json", "--no-progress"])
    return code, parse_json(capsys.readouterr().out)


def rejects(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    assert invoke(["rejects", "--state-dir", str(tmp_path / "s"), "--json", *args]) == EXIT_OK
    return parse_json(capsys.readouterr().out)


def test_unique_keys_are_checked_across_batches_in_file_and_line_order(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = make_files(tmp_path, {
        "a/1.csv": HEADER + "1,5,USD,x\n2,5,USD,y\n",
        "b/2.csv": HEADER + "3,5,EUR,z\n1,7,EUR,dup of a/1.csv line 2\n",
        "c/3.csv": HEADER + "2,1,USD,dup\n3,1,USD,dup\n4,1,USD,new\n",
    })
    code, report = run(job, tmp_path, capsys)
    assert code == EXIT_OK
    assert report["rows"] == {"staged": 4, "rejected": 3}
    found = rejects(tmp_path, capsys, "--rule", "unique")
    assert [(Path(r["file"]).name, r["line"], r["value"]) for r in found] == [
        ("2.csv", 3, "1"), ("3.csv", 2, "2"), ("3.csv", 3, "3")]
    assert found[0]["raw_line"] == "1,7,EUR,dup of a/1.csv line 2"
    assert_exactly_once(tmp_path / "s", truth_rows=4, truth_rejects=3)


def test_every_bad_row_is_rejected_once_with_its_line_and_rule(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = make_files(tmp_path, {
        "a/1.csv": HEADER + '1,ten,USD,x\n2,5,XXX,"multi\nline"\n,5,USD,no id\n3,0,USD,x\n'
                   "4,5,USD\n5,5,EUR,ok\n6,5,EUR,ok\n7,5,EUR,ok\n8,5,EUR,ok\n9,5,EUR,ok\n",
    })
    code, report = run(job, tmp_path, capsys)
    assert code == EXIT_OK
    assert report["rows"] == {"staged": 5, "rejected": 5}
    found = [(r["line"], r["rule"], r["column"], r["value"]) for r in rejects(tmp_path, capsys)]
    assert found == [(2, "type:int32", "quantity", "ten"), (3, "allowed", "currency", "XXX"),
                     (5, "required", "order_id", ""), (6, "min", "quantity", "0"),
                     (7, "ragged_row", None, "3 fields, expected 4")]
    assert [r["line"] for r in rejects(tmp_path, capsys, "--rule", "allowed")] == [3]
    assert len(rejects(tmp_path, capsys, "--limit", "2")) == 2
    assert_exactly_once(tmp_path / "s", truth_rows=5, truth_rejects=5)


def test_quarantined_files_count_in_files_failed_not_in_rows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = make_files(tmp_path, {
        "a/good.csv": HEADER + "1,5,USD,x\n2,0,USD,one bad row of two\n",
        "a/noisy.csv": HEADER + "3,0,USD,x\n4,0,USD,x\n5,5,USD,x\n",
        "b/empty.csv": "",
        "b/header_only.csv": HEADER,
        "c/semicolon.csv": "\ufefforder_id;quantity;currency;note\n6;5;USD;x\n",
    })
    code, report = run(job, tmp_path, capsys)
    assert code == EXIT_PARTIAL
    assert report["rows"] == {"staged": 1, "rejected": 1}
    assert report["files"] == {"total": 5, "committed": 2, "failed": 3, "skipped": 0}
    reasons = {Path(f["path"]).name: f["error"] for f in report["failed_files"]}
    assert "max_reject_ratio" in reasons["noisy.csv"]
    assert "empty file" in reasons["empty.csv"]
    assert "unknown columns" in reasons["semicolon.csv"]
    assert [Path(w["path"]).name for w in report["warnings"]] == ["header_only.csv"]
    assert_exactly_once(tmp_path / "s", truth_rows=1, truth_rejects=1)
    assert invoke(["status", "--state-dir", str(tmp_path / "s")]) == EXIT_OK
    shown = capsys.readouterr().out
    assert "noisy.csv" in shown and "header only" in shown and "empty file" in shown


def test_the_human_summary_says_what_was_rejected_and_how_to_look(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = make_files(tmp_path, {"a/1.csv": HEADER + "1,5,USD,x\n2,0,USD,x\n3,5,USD,x\n",
                                "b/2.csv": ""})
    assert invoke(["run", str(job), "--state-dir", str(tmp_path / "s"), "--no-progress"]) == EXIT_PARTIAL
    said = capsys.readouterr().err
    assert "2 rows staged, 1 rejected, 1 file(s) quarantined" in said
    assert "batchrun status" in said and "batchrun rejects" in said
    assert "batchrun resume" not in said and "nothing a resume can retry" in said  # empty file


def test_json_lines_go_through_the_same_validation_and_rejects(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = make_files(tmp_path, {"a/1.jsonl": (
        '{"order_id": 1, "quantity": 5, "currency": "USD", "note": "a, \\"b\\""}\n'
        '{"order_id": 2, "quantity": "ten", "currency": "USD", "note": null}\n'
        '{not json\n'
        '\n'
        '{"order_id": 3, "quantity": 2, "currency": "EUR", "note": "x"}\n')})
    job.write_text(job.read_text().replace('paths = ["in/*/*.csv"]',
                                           'paths = ["in/*/*.jsonl"]\nformat = "jsonl"'))
    code, report = run(job, tmp_path, capsys)
    assert code == EXIT_OK and report["rows"] == {"staged": 2, "rejected": 2}
    found = [(r["line"], r["rule"]) for r in rejects(tmp_path, capsys)]
    assert found == [(2, "type:int32"), (3, "malformed_json")]
    assert_exactly_once(tmp_path / "s", truth_rows=2, truth_rejects=2)


def test_without_a_schema_the_sampled_files_decide_and_later_files_are_held_to_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Inference samples the first 3 readable files (plan order); b/2.csv is the 4th."""
    job = make_files(tmp_path, {"a/1.csv": "id,amount,day\n1,2.5,2025-01-01\n2,3,2025-01-02\n",
                                "a/1a.csv": "id,amount,day\n",
                                "a/1b.csv": "id,amount,day\n",
                                "b/2.csv": "id,amount,day\n3,x,2025-01-03\n4,4.25,not a day\n"
                                           "5,1,2025-01-05\n"})
    job.write_text(JOB.split("[validation]")[0])
    code, report = run(job, tmp_path, capsys)
    assert code == EXIT_OK and report["rows"] == {"staged": 3, "rejected": 2}
    found = [(r["line"], r["rule"], r["column"]) for r in rejects(tmp_path, capsys)]
    assert found == [(2, "type:float64", "amount"), (3, "type:date", "day")]
    schema = Catalog(tmp_path / "s").run(report["run_id"]).schema
    assert schema == {"id": "int64", "amount": "float64", "day": "date"}
    assert_exactly_once(tmp_path / "s", truth_rows=3, truth_rejects=2, key="id")
