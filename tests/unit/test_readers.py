"""Reading and validating single files: real files in tmp_path, no Ray.

Three layers, each tested on its own: `read_file` (raw string cells + physical line
numbers, ragged rows, whole-file errors), `Validator` (one rule name per rejected row,
first broken rule wins), and `BatchPipeline.process` run in-process (what gets written).
"""

from __future__ import annotations

import datetime as dt
import gzip
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun.config import ColumnSpec, CsvOptions, ValidationSection, load_job
from batchrun.errors import ConfigError, PermanentSourceError
from batchrun.execution.prepare import check_job
from batchrun.layout import FILE, LINE, REJECT_SCHEMA
from batchrun.model import BatchResult, BatchTask
from batchrun.pipeline import BatchPipeline, PipelineSpec
from batchrun.readers.csv import _blank_rows
from batchrun.readers.infer import infer_schema
from batchrun.readers.raw import RawFile
from batchrun.readers.source import read_file
from batchrun.validate import Validated, Validator

BOM = b"\xef\xbb\xbf"


# --------------------------------------------------------------------------- helpers


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def read(tmp_path: Path, data: bytes, name: str = "in.csv", fmt: str = "csv",
         **options: Any) -> RawFile:
    return read_file(write(tmp_path, name, data), fmt, CsvOptions(**options))


def cells(raw: RawFile) -> list[tuple[Any, ...]]:
    """Every parsed row as (line, cell, cell, ...)."""
    names = [n for n in raw.table.column_names if n != LINE]
    return [(row[LINE], *(row[n] for n in names)) for row in raw.table.to_pylist()]


def ragged(raw: RawFile) -> list[tuple[int, str, int]]:
    return [(r.line, r.text, r.fields) for r in raw.ragged]


def validate(columns: dict[str, dict[str, Any]], rows: list[tuple[str | None, ...]]) -> Validated:
    """Validate rows of raw cells, numbered from line 2 (as if under a header)."""
    names = list(columns)
    table = pa.table(
        {**{n: pa.array([r[i] for r in rows], pa.string()) for i, n in enumerate(names)},
         FILE: pa.array(["f.csv"] * len(rows), pa.string()),
         LINE: pa.array(range(2, len(rows) + 2), pa.int64())})
    return Validator({n: ColumnSpec(**spec) for n, spec in columns.items()}).validate(table)


def reject_rules(validated: Validated) -> list[tuple[int, str, str, str | None]]:
    return [(r["line"], r["column"], r["rule"], r["value"])
            for r in validated.rejects.to_pylist()]


ORDERS = {
    "id": ColumnSpec(type="int64", required=True),
    "price": ColumnSpec(type="decimal(12,2)", min=0),
    "name": ColumnSpec(type="string"),
}


def worker(tmp_path: Path, columns: dict[str, ColumnSpec] | None = None, *,
           max_reject_ratio: float = 1.0, fmt: str = "csv", **csv: Any) -> BatchPipeline:
    spec = PipelineSpec(run_id="run1", table="orders", staging_dir=str(tmp_path / "staging"),
                      fmt=fmt, csv=CsvOptions(**csv), columns=columns or ORDERS,
                      validation=ValidationSection(max_reject_ratio=max_reject_ratio))
    return BatchPipeline(0, spec)


def outcome(result: BatchResult, path: str) -> Any:
    (found,) = [f for f in result.files if f.path == path]
    return found


def staged(result: BatchResult) -> list[dict[str, Any]]:
    """Staged rows in (file, line) order: the order the staging view gives them."""
    if not result.output_path:
        return []
    return pq.read_table(result.output_path).sort_by([("_file", "ascending"),
                                                      ("_line", "ascending")]).to_pylist()


def rejected(result: BatchResult) -> list[dict[str, Any]]:
    return pq.read_table(result.rejects_path).to_pylist() if result.rejects_path else []


def warnings_of(result: BatchResult) -> list[str]:
    """Warnings, wherever this version of the worker reports them."""
    found = [f"{f.path}: {f.warning}" for f in result.files if getattr(f, "warning", None)]
    return found + list(getattr(result, "warnings", ()) or ())


def gz_truncated() -> bytes:
    body = b"id,price,name\n" + b"".join(b"%d,%d.50,name %d\n" % (i, i, i * 7919)
                                          for i in range(3000))
    packed = gzip.compress(body)
    return packed[: len(packed) // 2]


# ------------------------------------------------------------------ line numbers (CSV)


def test_line_numbers_count_quoted_newlines_lf_and_crlf(tmp_path: Path) -> None:
    raw = read(tmp_path, b'id,note\n1,"two\nlines"\n2,"crlf\r\ninside"\n3,"a\nb\nc"\n4,plain\n')
    assert cells(raw) == [(2, "1", "two\nlines"), (4, "2", "crlf\r\ninside"),
                          (6, "3", "a\nb\nc"), (9, "4", "plain")]
    assert raw.ragged == []


def test_line_numbers_with_crlf_line_endings_and_a_bom(tmp_path: Path) -> None:
    raw = read(tmp_path, BOM + b'id,note\r\n1,a\r\n2,"x\r\ny"\r\n3,z')
    assert raw.table.column_names == ["id", "note", LINE]  # the BOM is not part of "id"
    assert cells(raw) == [(2, "1", "a"), (3, "2", "x\r\ny"), (5, "3", "z")]


def test_line_numbers_count_quoted_newlines_crlf_and_bom(tmp_path: Path) -> None:
    raw = read(tmp_path, BOM + b'id,note\r\n1,"a\nb"\r\n2,"c\r\nd"\r\n3,e\r\n')
    assert cells(raw) == [(2, "1", "a\nb"), (4, "2", "c\r\nd"), (6, "3", "e")]


def test_blank_lines_in_the_middle_are_dropped_but_counted(tmp_path: Path) -> None:
    raw = read(tmp_path, b'id,note\n1,a\n\n2,b\n\n\n3,"c\nd"\n\n4,e\n\n')
    assert cells(raw) == [(2, "1", "a"), (4, "2", "b"), (7, "3", "c\nd"), (10, "4", "e")]
    assert raw.ragged == []


def test_blank_lines_in_a_crlf_file_are_dropped_but_counted(tmp_path: Path) -> None:
    raw = read(tmp_path, b'id,note\r\n1,a\r\n\r\n2,b\r\n')
    assert cells(raw) == [(2, "1", "a"), (4, "2", "b")]


def test_ragged_rows_with_too_few_and_too_many_fields_report_their_line(tmp_path: Path) -> None:
    raw = read(tmp_path, b'id,note\n1,a\n2\n3,b,extra\n4,c\n')
    assert cells(raw) == [(2, "1", "a"), (5, "4", "c")]
    assert ragged(raw) == [(3, "2", 1), (4, "3,b,extra", 3)]


def test_ragged_row_after_a_multi_line_quoted_value_reports_its_physical_line(
        tmp_path: Path) -> None:
    raw = read(tmp_path, b'id,note\n1,"a\nb\r\nc"\n\n2\n3,d\n')
    assert cells(raw) == [(2, "1", "a\nb\r\nc"), (7, "3", "d")]
    assert ragged(raw) == [(6, "2", 1)]


def test_a_ragged_row_that_itself_spans_lines_moves_the_next_rows_down(tmp_path: Path) -> None:
    raw = read(tmp_path, b'id,note\n1,a\n2,"x\r\ny",extra\n3,"p\nq"\n4\n5,z\n')
    assert cells(raw) == [(2, "1", "a"), (5, "3", "p\nq"), (8, "5", "z")]
    assert ragged(raw) == [(3, '2,"x\r\ny",extra', 3), (7, "4", 1)]


def test_without_a_header_the_first_line_is_row_one(tmp_path: Path) -> None:
    raw = read(tmp_path, b'1,a\n2,"b\nc"\n3,d\n4\n5,e\n', header=False)
    assert cells(raw) == [(1, "1", "a"), (2, "2", "b\nc"), (4, "3", "d"), (6, "5", "e")]
    assert ragged(raw) == [(5, "4", 1)]


def test_raw_lines_returns_the_text_of_the_given_physical_lines(tmp_path: Path) -> None:
    raw = read(tmp_path, BOM + b'id,note\r\n1,a\r\n2,"x\r\ny"\r\n\r\n3,z')
    assert raw.raw_lines([1, 2, 3, 4, 5, 6]) == ["id,note", "1,a", '2,"x', 'y"', "", "3,z"]
    assert raw.raw_lines([6, 2]) == ["3,z", "1,a"]
    assert raw.raw_lines([0, 7, 100]) == ["", "", ""]


def test_raw_lines_of_a_latin1_file_are_utf8_text(tmp_path: Path) -> None:
    raw = read(tmp_path, "id,note\n1,café\n".encode("latin-1"), encoding="latin-1")
    assert raw.raw_lines([2]) == ["1,café"]


# ------------------------------------------------------------- compression, delimiters


@pytest.mark.parametrize("suffix", ["csv.gz", "csv.zst"])
def test_compressed_files_read_transparently(tmp_path: Path, suffix: str) -> None:
    body = b'id,note\n1,a\n2,"b\nc"\n3,d\n'
    path = tmp_path / f"in.{suffix}"
    if suffix.endswith("gz"):
        path.write_bytes(gzip.compress(body))
    else:
        with pa.CompressedOutputStream(str(path), "zstd") as stream:
            stream.write(body)
        assert path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # really zstd on disk
    raw = read_file(str(path), "csv", CsvOptions())
    assert cells(raw) == [(2, "1", "a"), (3, "2", "b\nc"), (5, "3", "d")]


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_auto_delimiter_sniffs_the_header(tmp_path: Path, delimiter: str) -> None:
    other = "," if delimiter != "," else ";"
    text = f"id{delimiter}note\n1{delimiter}a{other}b\n2{delimiter}c\n"
    raw = read(tmp_path, text.encode(), delimiter="auto")
    assert raw.table.column_names == ["id", "note", LINE]
    assert cells(raw) == [(2, "1", f"a{other}b"), (3, "2", "c")]


def test_semicolon_file_with_bom_read_with_comma_is_quarantined_for_unknown_columns(
        tmp_path: Path) -> None:
    path = write(tmp_path, "semi.csv", BOM + b"id;price;name\n1;2.50;a\n")
    result = worker(tmp_path).process(BatchTask("b1", (path,)))
    error = outcome(result, path).error
    assert error and "unknown columns" in error and "id;price;name" in error
    assert "\ufeff" not in error
    assert (result.rows_staged, result.rows_rejected, result.output_path) == (0, 0, None)


# ------------------------------------------------------------------------- encodings


def test_latin1_encoding_decodes_accented_letters(tmp_path: Path) -> None:
    raw = read(tmp_path, "id,note\n1,café\n2,Ünïcødé\n".encode("latin-1"), encoding="latin-1")
    assert cells(raw) == [(2, "1", "café"), (3, "2", "Ünïcødé")]


def test_latin1_bytes_in_a_utf8_job_name_the_line_where_decoding_stops(tmp_path: Path) -> None:
    data = 'id,note\n1,a\n2,"x\ny"\n3,café\n'.encode("latin-1")
    with pytest.raises(PermanentSourceError) as caught:
        read(tmp_path, data)
    assert "not valid utf-8 text at line 5" in caught.value.reason


# ------------------------------------------------------------ whole-file errors


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("empty.csv", b"", "empty file"),
    ("blank.csv", b"  \n\n \t\r\n", "empty file"),
    ("binary.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "binary content"),
    ("nul.csv", b"id,note\n1,a\x00b\n", "binary content"),
    ("cut.csv.gz", gz_truncated(), "corrupt or truncated compression"),
    ("garbage.csv.gz", b"\x1f\x8b\x08\x00garbage, not deflate" * 4, "corrupt or truncated compression"),
], ids=["empty", "whitespace-only", "png", "nul-byte", "truncated-gzip", "corrupt-gzip"])
def test_unreadable_files_raise_a_permanent_error_with_a_reason(
        tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    with pytest.raises(PermanentSourceError) as caught:
        read(tmp_path, data, name=name)
    assert reason in caught.value.reason
    assert caught.value.path.endswith(name) and not caught.value.transient


def test_truncated_zstd_is_corrupt_compression(tmp_path: Path) -> None:
    path = tmp_path / "cut.csv.zst"
    with pa.CompressedOutputStream(str(path), "zstd") as stream:
        stream.write(b"id,note\n" + b"".join(b"%d,row %d\n" % (i, i * 31) for i in range(5000)))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(PermanentSourceError) as caught:
        read_file(str(path), "csv", CsvOptions())
    assert "corrupt or truncated compression" in caught.value.reason


def test_a_missing_file_is_a_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(PermanentSourceError, match="file not found"):
        read_file(str(tmp_path / "gone.csv"), "csv", CsvOptions())


def test_duplicate_empty_and_lineage_header_names_are_renamed_deterministically(
        tmp_path: Path) -> None:
    raw = read(tmp_path, b"id,id,,ID,_file,_line,_batch_id,file,na\x01me\n1,2,3,4,5,6,7,8,9\n")
    assert raw.table.column_names == ["id", "id_2", "column_3", "ID_3", "file_2", "line",
                                      "batch_id", "file", "name", LINE]
    assert cells(raw) == [(2, *"123456789")]


def test_a_header_that_spans_lines_inside_quotes_is_one_record(tmp_path: Path) -> None:
    raw = read(tmp_path, b'id,"na\nme"\n1,a\n2\n3,c\n')
    assert raw.table.column_names == ["id", "name", LINE]  # a newline is a control character
    assert cells(raw) == [(3, "1", "a"), (5, "3", "c")]
    assert ragged(raw) == [(4, "2", 1)]


def test_a_header_longer_than_pyarrows_block_is_read(tmp_path: Path) -> None:
    width = 150_000
    header = ",".join(f"column_{i}" for i in range(width)).encode()
    raw = read(tmp_path, header + b"\n" + b",".join([b"7"] * width) + b"\n")
    assert raw.table.num_columns == width + 1 and raw.table.num_rows == 1


# --------------------------------------------------------------- jsonl and parquet


def test_jsonl_rows_come_back_as_raw_strings_numbered_from_one(tmp_path: Path) -> None:
    data = (b'{"id": 1, "price": 2.5, "name": "a", "ok": true}\n'
            b'{"id": 2, "price": null, "name": "b\\nc", "ok": false}\n'
            b'{"id": 3, "price": 10, "name": "d", "ok": true}\n')
    raw = read(tmp_path, data, name="in.jsonl", fmt="jsonl")
    assert raw.table.schema == pa.schema([("id", pa.string()), ("price", pa.string()),
                                          ("name", pa.string()), ("ok", pa.string()),
                                          (LINE, pa.int64())])
    assert cells(raw) == [(1, "1", "2.5", "a", "true"), (2, "2", None, "b\nc", "false"),
                          (3, "3", "10", "d", "true")]


def test_jsonl_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    raw = read(tmp_path, b'{"a": "x"}\n\n{"a": "y"}\r\n\r\n{"a": "z"}\n', name="in.jsonl", fmt="jsonl")
    assert cells(raw) == [(1, "x"), (3, "y"), (5, "z")]


def test_jsonl_line_numbers_count_whitespace_only_lines(tmp_path: Path) -> None:
    raw = read(tmp_path, b'{"a": "x"}\n   \n{"a": "y"}\n', name="in.jsonl", fmt="jsonl")
    assert cells(raw) == [(1, "x"), (3, "y")]


def test_gzipped_jsonl_reads_transparently(tmp_path: Path) -> None:
    raw = read(tmp_path, gzip.compress(b'{"id": 7}\n{"id": 8}\n'), name="in.jsonl.gz", fmt="jsonl")
    assert cells(raw) == [(1, "7"), (2, "8")]


def test_parquet_rows_come_back_as_raw_strings_numbered_from_one(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({
        "id": pa.array([1, 2, 3], pa.int64()),
        "price": pa.array([Decimal("12.30"), None, Decimal("0.05")], pa.decimal128(12, 2)),
        "name": ["a", "b,c", None],
        "day": pa.array([dt.date(2025, 1, 2)] * 3, pa.date32()),
    }), path)
    raw = read_file(str(path), "parquet", CsvOptions())
    assert raw.table.schema == pa.schema([("id", pa.string()), ("price", pa.string()),
                                          ("name", pa.string()), ("day", pa.string()),
                                          (LINE, pa.int64())])
    assert cells(raw) == [(1, "1", "12.30", "a", "2025-01-02"), (2, "2", None, "b,c", "2025-01-02"),
                          (3, "3", "0.05", None, "2025-01-02")]


def test_a_corrupt_parquet_file_is_a_permanent_error(tmp_path: Path) -> None:
    with pytest.raises(PermanentSourceError, match="cannot read as Parquet"):
        read(tmp_path, b"PAR1 this is not parquet PAR1", name="bad.parquet", fmt="parquet")


# ------------------------------------------------------------------------ validator


@pytest.mark.parametrize(("spec", "value", "rule"), [
    ({"type": "string", "required": True}, "", "required"),
    ({"type": "int32"}, "2147483648", "type:int32"),
    ({"type": "int32"}, "abc", "type:int32"),
    ({"type": "int64"}, "9223372036854775808", "type:int64"),
    ({"type": "int64"}, "1.5", "type:int64"),
    ({"type": "int64"}, "1e3", "type:int64"),
    ({"type": "decimal(12,2)"}, "12.345", "type:decimal(12,2)"),
    ({"type": "decimal(12,2)"}, "12345678901.00", "type:decimal(12,2)"),
    ({"type": "decimal(12,2)"}, "1,50", "type:decimal(12,2)"),
    ({"type": "timestamp"}, "2025-02-31 00:00:00", "type:timestamp"),
    ({"type": "timestamp", "format": "%d/%m/%Y %H:%M"}, "2025-01-02 03:04", "type:timestamp"),
    ({"type": "date"}, "2025-02-31", "type:date"),
    ({"type": "date"}, "2023-02-29", "type:date"),
    ({"type": "bool"}, "maybe", "type:bool"),
    ({"type": "float64"}, "one", "type:float64"),
    ({"type": "int64", "min": 1}, "0", "min"),
    ({"type": "decimal(12,2)", "min": 0}, "-0.01", "min"),
    ({"type": "date", "min": "2025-01-01"}, "2024-12-31", "min"),
    ({"type": "int32", "max": 100}, "101", "max"),
    ({"type": "timestamp", "max": "2025-12-31 23:59:59"}, "2026-01-01 00:00:00", "max"),
    ({"type": "string", "allowed": ["USD", "EUR"]}, "GBP", "allowed"),
    ({"type": "string", "allowed": ["USD", "EUR"]}, "usd", "allowed"),
    ({"type": "int64", "allowed": [1, 2]}, "3", "allowed"),
    ({"type": "string", "pattern": "^SKU-[0-9]{6}$"}, "SKU-12345", "pattern"),
    ({"type": "string", "pattern": "[A-Z]+"}, "ABc", "pattern"),
    ({"type": "string", "max_length": 3}, "abcd", "max_length"),
    ({"type": "string", "max_length": 3}, "éèêë", "max_length"),
])
def test_each_broken_rule_is_reported_by_name_with_the_raw_value(
        spec: dict[str, Any], value: str, rule: str) -> None:
    validated = validate({"c": spec}, [(value,)])
    assert validated.good.num_rows == 0
    assert reject_rules(validated) == [(2, "c", rule, value)]


@pytest.mark.parametrize(("spec", "value", "typed"), [
    ({"type": "int32"}, "-2147483648", -2147483648),
    ({"type": "int64"}, "+42", 42),
    ({"type": "int64"}, " 7 ", 7),
    ({"type": "decimal(12,2)"}, "12.30", Decimal("12.30")),
    ({"type": "decimal(12,2)"}, "5", Decimal("5.00")),
    ({"type": "decimal(12,2)"}, "-0.01", Decimal("-0.01")),
    ({"type": "decimal(12,2)"}, "9999999999.99", Decimal("9999999999.99")),
    ({"type": "timestamp"}, "2025-01-02 03:04:05", dt.datetime(2025, 1, 2, 3, 4, 5)),
    ({"type": "timestamp"}, "2025-01-02T03:04:05.123456", dt.datetime(2025, 1, 2, 3, 4, 5, 123456)),
    ({"type": "timestamp", "format": "%d/%m/%Y %H:%M"}, "02/01/2025 03:04",
     dt.datetime(2025, 1, 2, 3, 4)),
    ({"type": "date"}, "2024-02-29", dt.date(2024, 2, 29)),
    ({"type": "date", "format": "%d.%m.%Y"}, "28.02.2025", dt.date(2025, 2, 28)),
    ({"type": "bool"}, "true", True),
    ({"type": "bool"}, "false", False),
    ({"type": "float64"}, "1.5e3", 1500.0),
    ({"type": "string"}, "  padded  ", "  padded  "),
    ({"type": "string"}, " ", " "),
    ({"type": "string", "max_length": 3}, "é€ü", "é€ü"),
    ({"type": "int64", "min": 0, "max": 10}, "10", 10),
    ({"type": "string", "pattern": "^SKU-[0-9]{6}$"}, "SKU-123456", "SKU-123456"),
])
def test_valid_values_are_staged_unchanged_and_typed(spec: dict[str, Any], value: str,
                                                     typed: Any) -> None:
    validated = validate({"c": spec}, [(value,)])
    assert validated.rejects.num_rows == 0
    assert validated.good["c"].to_pylist() == [typed]


def test_decimal_keeps_its_digits_exactly() -> None:
    validated = validate({"price": {"type": "decimal(12,2)"}}, [("12.30",), ("0.1",), (".5",)])
    assert validated.good.schema.field("price").type == pa.decimal128(12, 2)
    assert [str(v) for v in validated.good["price"].to_pylist()] == ["12.30", "0.10", "0.50"]


def test_one_point_five_is_not_a_valid_int() -> None:
    validated = validate({"n": {"type": "int32"}, "m": {"type": "int64"}}, [("1.5", "2"), ("1", "1.5")])
    assert reject_rules(validated) == [(2, "n", "type:int32", "1.5"), (3, "m", "type:int64", "1.5")]


def test_three_decimals_are_not_a_valid_decimal_12_2() -> None:
    validated = validate({"p": {"type": "decimal(12,2)"}}, [("12.345",), ("12.34",)])
    assert reject_rules(validated) == [(2, "p", "type:decimal(12,2)", "12.345")]
    assert validated.good["p"].to_pylist() == [Decimal("12.34")]


def test_february_31st_is_not_a_valid_date() -> None:
    validated = validate({"d": {"type": "date"}}, [("2025-02-31",), ("2025-02-28",)])
    assert reject_rules(validated) == [(2, "d", "type:date", "2025-02-31")]


def test_empty_cells_are_null_not_a_type_error_unless_required() -> None:
    columns = {"n": {"type": "int64"}, "d": {"type": "date"}, "p": {"type": "decimal(12,2)"},
               "s": {"type": "string"}, "b": {"type": "bool"}}
    validated = validate(columns, [("", "", " ", "", None), ("1", "2025-01-01", "1.00", "x", "true")])
    assert validated.rejects.num_rows == 0
    assert validated.good.select(list(columns)).to_pylist()[0] == dict.fromkeys(columns)


def test_empty_cells_break_required_before_anything_else() -> None:
    columns = {"n": {"type": "int64", "required": True, "min": 5}}
    validated = validate(columns, [("",), ("  ",), (None,)])
    assert reject_rules(validated) == [(2, "n", "required", ""), (3, "n", "required", "  "),
                                       (4, "n", "required", None)]


def test_empty_cells_do_not_break_min_max_allowed_pattern_or_max_length() -> None:
    columns = {"n": {"type": "int64", "min": 5, "max": 6, "allowed": [5]},
               "s": {"type": "string", "pattern": "x+", "max_length": 1, "allowed": ["x"]}}
    validated = validate(columns, [("", "")])
    assert validated.rejects.num_rows == 0 and validated.good.num_rows == 1


def test_first_broken_rule_wins_columns_in_schema_order_then_rules_in_order() -> None:
    columns = {
        "a": {"type": "int64", "required": True, "min": 10, "max": 5, "allowed": [1]},
        "b": {"type": "string", "allowed": ["xx", "yyy"], "pattern": "x+", "max_length": 2},
    }
    validated = validate(columns, [
        ("", "zzz"),     # a: required beats everything in b
        ("q", "zzz"),    # a: type
        ("3", "zzz"),    # a: min (also breaks max and allowed)
        ("11", "zzz"),   # a: max (also breaks allowed)
        ("1", "zzz"),    # a: min again: 1 < 10
    ])
    assert [r[1:3] for r in reject_rules(validated)] == [
        ("a", "required"), ("a", "type:int64"), ("a", "min"), ("a", "max"), ("a", "min")]
    only_b = validate({"b": columns["b"]}, [("zzz",), ("yyy",), ("xxx",), ("xx",)])
    assert [r[2] for r in reject_rules(only_b)] == ["allowed", "pattern", "allowed"]
    assert only_b.good["b"].to_pylist() == ["xx"]


def test_rejects_name_file_and_line_and_good_rows_keep_theirs() -> None:
    validated = validate({"n": {"type": "int64"}}, [("1",), ("x",), ("3",)])
    assert validated.rejects.to_pylist() == [
        {"file": "f.csv", "line": 3, "column": "n", "rule": "type:int64", "value": "x"}]
    assert validated.good.select(["n", FILE, LINE]).to_pylist() == [
        {"n": 1, FILE: "f.csv", LINE: 2}, {"n": 3, FILE: "f.csv", LINE: 4}]


# ------------------------------------------------------------------ worker, in process


def test_a_corrupt_file_is_quarantined_and_the_rest_of_the_batch_commits(tmp_path: Path) -> None:
    first = write(tmp_path, "a.csv", b'id,price,name\n1,1.00,a\n2,2.00,"b\nb"\n3,3.00,c\n')
    broken = write(tmp_path, "b.csv.gz", gz_truncated())
    last = write(tmp_path, "c.csv", b"id,price,name\n4,4.00,d\nx,5.00,e\n6,6.00,f\n")
    result = worker(tmp_path).process(BatchTask("b1", (first, broken, last)))
    assert (result.rows_staged, result.rows_rejected) == (5, 1)
    assert "corrupt or truncated compression" in (outcome(result, broken).error or "")
    assert (outcome(result, first).rows_staged, outcome(result, first).error) == (3, None)
    assert (outcome(result, last).rows_staged, outcome(result, last).rows_rejected) == (2, 1)
    rows = staged(result)
    assert [(r["id"], r["_line"]) for r in rows] == [(1, 2), (2, 3), (3, 5), (4, 2), (6, 4)]
    assert {r["_file"] for r in rows} == {first, last}
    assert {r["_batch_id"] for r in rows} == {"b1"}


def test_a_batch_of_only_broken_files_writes_nothing(tmp_path: Path) -> None:
    empty = write(tmp_path, "e.csv", b"")
    binary = write(tmp_path, "bin.csv", b"\x00\x01\x02")
    result = worker(tmp_path).process(BatchTask("b1", (empty, binary)))
    assert (result.rows_staged, result.rows_rejected) == (0, 0)
    assert result.output_path is None and result.rejects_path is None
    assert "empty file" in outcome(result, empty).error
    assert "binary content" in outcome(result, binary).error


def test_header_only_file_gives_zero_rows_and_a_warning(tmp_path: Path) -> None:
    header_only = write(tmp_path, "h.csv", b"id,price,name\n")
    other = write(tmp_path, "o.csv", b"id,price,name\n1,1.00,a\n")
    result = worker(tmp_path).process(BatchTask("b1", (header_only, other)))
    assert outcome(result, header_only).error is None
    assert (outcome(result, header_only).rows_staged, outcome(result, header_only).rows_rejected) == (0, 0)
    assert result.rows_staged == 1
    warned = warnings_of(result)
    assert len(warned) == 1 and header_only in warned[0] and "header only" in warned[0]


def test_file_over_max_reject_ratio_is_quarantined_with_none_of_its_rows_or_rejects(
        tmp_path: Path) -> None:
    noisy = write(tmp_path, "noisy.csv", b"id,price,name\n1,x,a\n2,y,b\n3,3.00,c\nz,4.00,d\n")
    fine = write(tmp_path, "fine.csv", b"id,price,name\n10,1.00,a\n11,-1,b\n12,2.00,c\n13,3.00,d\n")
    result = worker(tmp_path, max_reject_ratio=0.5).process(BatchTask("b1", (noisy, fine)))
    assert outcome(result, noisy).error == "3 of 4 rows rejected, more than max_reject_ratio 0.5"
    assert (result.rows_staged, result.rows_rejected) == (3, 1)
    assert {r["_file"] for r in staged(result)} == {fine}
    assert [(r["file"], r["line"], r["rule"]) for r in rejected(result)] == [(fine, 3, "min")]


def test_a_file_exactly_at_max_reject_ratio_is_kept(tmp_path: Path) -> None:
    half = write(tmp_path, "half.csv", b"id,price,name\n1,x,a\n2,2.00,b\n")
    result = worker(tmp_path, max_reject_ratio=0.5).process(BatchTask("b1", (half,)))
    assert outcome(result, half).error is None
    assert (result.rows_staged, result.rows_rejected) == (1, 1)


def test_reject_records_carry_run_batch_file_line_column_rule_value_and_raw_line(
        tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", b'id,price,name\r\n1,1.00,"multi\r\nline"\r\n'
                                    b"2,12.345,b\r\n3,1.00\r\n,1.00,c\r\n4,1.00,d,e\r\n")
    result = worker(tmp_path).process(BatchTask("batch-7", (path,)))
    table = pq.read_table(result.rejects_path)
    assert table.schema == REJECT_SCHEMA
    assert table.to_pylist() == [
        {"run_id": "run1", "batch_id": "batch-7", "file": path, "line": 4, "column": "price",
         "rule": "type:decimal(12,2)", "value": "12.345", "raw_line": "2,12.345,b"},
        {"run_id": "run1", "batch_id": "batch-7", "file": path, "line": 5, "column": None,
         "rule": "ragged_row", "value": "2 fields, expected 3", "raw_line": "3,1.00"},
        {"run_id": "run1", "batch_id": "batch-7", "file": path, "line": 6, "column": "id",
         "rule": "required", "value": "", "raw_line": ",1.00,c"},
        {"run_id": "run1", "batch_id": "batch-7", "file": path, "line": 7, "column": None,
         "rule": "ragged_row", "value": "4 fields, expected 3", "raw_line": "4,1.00,d,e"},
    ]
    assert (result.rows_staged, result.rows_rejected) == (1, 4)
    assert staged(result)[0]["name"] == "multi\r\nline"


def test_temporary_files_never_remain_in_the_partition_dir(tmp_path: Path) -> None:
    work = worker(tmp_path)
    path = write(tmp_path, "t.csv", b"id,price,name\n1,1.00,a\nx,1.00,b\n")
    for n in range(3):
        result = work.process(BatchTask(f"b{n}", (path,)))
        assert result.output_path and result.rejects_path
    for folder in (work.out_dir, work.rejects_dir):
        names = sorted(p.name for p in folder.iterdir())
        assert len(names) == 3
        assert all(n.endswith(".parquet") and not n.startswith(".") and ".tmp" not in n
                   for n in names)


def test_a_retried_batch_never_overwrites_an_earlier_attempt(tmp_path: Path) -> None:
    work = worker(tmp_path)
    path = write(tmp_path, "t.csv", b"id,price,name\n1,1.00,a\n")
    first = work.process(BatchTask("b1", (path,)))
    second = work.process(BatchTask("b1", (path,)))
    assert first.output_path != second.output_path
    assert Path(first.output_path).exists() and Path(second.output_path).exists()


def test_jsonl_through_the_worker_stages_typed_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "in.jsonl", b'{"id": 1, "price": "12.30", "name": "a"}\n'
                                       b'{"id": 2, "price": "1.234", "name": "b"}\n')
    result = worker(tmp_path, fmt="jsonl").process(BatchTask("b1", (path,)))
    assert [(r["id"], r["price"], r["_line"]) for r in staged(result)] == [(1, Decimal("12.30"), 1)]
    assert [(r["line"], r["rule"]) for r in rejected(result)] == [(2, "type:decimal(12,2)")]


# ------------------------------------------- regressions: bugs found and fixed


def test_header_only_file_without_a_trailing_newline_gives_zero_rows_and_a_warning(
        tmp_path: Path) -> None:
    path = write(tmp_path, "h.csv", b"id,price,name")
    result = worker(tmp_path).process(BatchTask("b1", (path,)))
    assert outcome(result, path).error is None
    assert len(warnings_of(result)) == 1


def test_a_row_of_empty_cells_is_rejected_as_required_not_dropped_as_blank(
        tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", b'id,price,name\n1,1.00,a\n,,\n"","",""\n2,2.00,b\n')
    result = worker(tmp_path).process(BatchTask("b1", (path,)))
    assert [(r["line"], r["rule"]) for r in rejected(result)] == [(3, "required"), (4, "required")]


def test_a_file_with_cr_only_line_endings_does_not_fail_the_whole_batch(tmp_path: Path) -> None:
    good = write(tmp_path, "good.csv", b"id,price,name\n1,1.00,a\n")
    old_mac = write(tmp_path, "mac.csv", b"id,price,name\r2,2.00,b\r3,3.00,c\r")
    result = worker(tmp_path).process(BatchTask("b1", (good, old_mac)))
    assert outcome(result, good).rows_staged == 1
    mac = outcome(result, old_mac)
    assert mac.error or mac.rows_staged == 2


def test_utf16_encoding_is_decoded_not_called_binary(tmp_path: Path) -> None:
    raw = read(tmp_path, "id,note\n1,café\n".encode("utf-16"), encoding="utf-16")
    assert cells(raw) == [(2, "1", "café")]


def test_jsonl_strings_that_look_like_dates_are_staged_unchanged(tmp_path: Path) -> None:
    raw = read(tmp_path, b'{"code": "2025-01-02"}\n{"code": "2025-01-03"}\n',
               name="in.jsonl", fmt="jsonl")
    assert cells(raw) == [(1, "2025-01-02"), (2, "2025-01-03")]


def test_without_a_header_the_schema_columns_are_taken_by_position(tmp_path: Path) -> None:
    path = write(tmp_path, "n.csv", b"1,1.00,a\n2,2.00,b\n")
    result = worker(tmp_path, header=False).process(BatchTask("b1", (path,)))
    assert outcome(result, path).error is None
    assert [(r["id"], r["_line"]) for r in staged(result)] == [(1, 1), (2, 2)]


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)a", r"abc\Z"])
def test_a_pattern_duckdb_cannot_run_is_refused_before_the_run_starts(
        tmp_path: Path, pattern: str) -> None:
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "j"\ntable = "t"\n[source]\npaths = ["*.csv"]\n'
                   f"[schema.columns]\ns = {{ type = \"string\", pattern = '{pattern}' }}\n")
    loaded = load_job(job)  # loading is pure: the pattern is probed at run start
    with pytest.raises(ConfigError, match="schema.columns.s.pattern: not a regular expression RE2"):
        check_job(loaded)


def test_schema_columns_named_like_internal_helpers_do_not_collide() -> None:
    validated = validate({"n": {"type": "int64"}, "n__t": {"type": "string"}}, [("1", "x")])
    assert validated.rejects.num_rows == 0
    assert validated.good.select(["n", "n__t"]).to_pylist() == [{"n": 1, "n__t": "x"}]


def test_a_timestamp_with_an_offset_is_not_silently_shifted() -> None:
    validated = validate({"t": {"type": "timestamp"}}, [("2025-01-02 03:04:05+02:00",)])
    staged_values = validated.good["t"].to_pylist()
    assert staged_values in ([], [dt.datetime(2025, 1, 2, 1, 4, 5)])


def test_without_a_header_blank_lines_are_dropped_but_counted(tmp_path: Path) -> None:
    raw = read(tmp_path, b'1,a\n2,"b\nc"\n\n3,d\n', header=False)
    assert cells(raw) == [(1, "1", "a"), (2, "2", "b\nc"), (5, "3", "d")]


def test_without_a_header_cells_stay_the_raw_text(tmp_path: Path) -> None:
    raw = read(tmp_path, b"007,12.30,x\n8,1.50,y\n", header=False)
    assert cells(raw) == [(1, "007", "12.30", "x"), (2, "8", "1.50", "y")]


def test_cr_cr_lf_ends_a_line_and_its_blank_line_is_dropped_but_counted(tmp_path: Path) -> None:
    raw = read(tmp_path, b"id,note\r\n1,a\r\r\n2,b\r\n3,c\r\n")
    assert cells(raw) == [(2, "1", "a"), (4, "2", "b"), (5, "3", "c")]
    assert raw.raw_lines([2, 3, 4]) == ["1,a", "", "2,b"]


def test_lines_of_spaces_or_tabs_are_blank_in_comma_and_tab_files(tmp_path: Path) -> None:
    comma = read(tmp_path, b"id,note\n1,a\n   \n2,b\n \t\n", name="c.csv")
    assert cells(comma) == [(2, "1", "a"), (4, "2", "b")] and comma.ragged == []
    tabs = read(tmp_path, b"id\tnote\n1\ta\n \t \n2\tb\n", name="t.tsv", delimiter="\t")
    assert cells(tabs) == [(2, "1", "a"), (4, "2", "b")]


def test_blank_lines_are_not_staged_as_null_rows_by_either_path(tmp_path: Path) -> None:
    """Issue 12: `id,name\\n1,a\\n\\n2,b\\n\\n` staged 4 rows on the fast path."""
    columns = {"id": ColumnSpec(type="int64"), "name": ColumnSpec(type="string")}
    path = write(tmp_path, "b.csv", b"id,name\n1,a\n\n2,b\n\n")
    fast = worker(tmp_path / "fast", columns).process(BatchTask("b1", (path,)))
    slow_worker = worker(tmp_path / "slow", columns)
    slow_worker.fast_validator = None
    slow = slow_worker.process(BatchTask("b1", (path,)))
    for result in (fast, slow):
        assert [(r["id"], r["name"], r["_line"]) for r in staged(result)] == [(1, "a", 2),
                                                                              (2, "b", 4)]
        assert result.rows_rejected == 0


# ------------------------------------------- before the header; header names (real runs)


@pytest.mark.parametrize("text, lines", [
    (b"\nid,v\n1,a\n", [3]), (b" \t\r\n\r\nid,v\r\n1,a\r\n", [4]),
    (b"\r\rid,v\r1,a\r", [4]), (b'\n\n"i\nd",v\n1,a\n\n2,b\n', [5, 7]),
])
def test_blank_lines_before_the_header_are_skipped_and_counted_by_read_and_inference(
        tmp_path: Path, text: bytes, lines: list[int]) -> None:
    raw = read(tmp_path, text)
    assert raw.table.column_names == ["id", "v", LINE]
    assert raw.table[LINE].to_pylist() == lines and raw.ragged == []
    assert infer_schema([str(tmp_path / "in.csv")], "csv", CsvOptions()) == {
        "id": "int64", "v": "string"}


def test_without_a_header_blank_lines_before_the_first_row_are_counted(tmp_path: Path) -> None:
    raw = read(tmp_path, b"\n  \n1,a\n2,b\n", header=False)
    assert cells(raw) == [(3, "1", "a"), (4, "2", "b")]


def test_blank_rows_of_a_table_with_a_non_string_column_are_found_not_a_crash() -> None:
    table = pa.table({"n": pa.array([1, None], pa.int64()), "s": ["a", ""],
                      LINE: pa.array([2, 3], pa.int64())})
    blank = _blank_rows(RawFile(path="f.csv", table=table, text=b"h\n1,a\n\n"))
    assert blank is not None and blank.to_pylist() == [False, True]


