"""The fast path is an optimisation, never a second definition of "valid".

A differential test: hypothesis writes CSV files whose cells sit on and around every
rule's edge (bounds, patterns, allowed values, lengths, decimals with an exponent or a
padded value, dates that do not exist, NaN), then two in-process workers process the same
batch: one with the fast path (pyarrow typed read + `CleanCheck`), one forced onto the
slow path, the reference. Staged rows, rejects and per-file outcomes must be identical.
A second test proves the fast path is actually taken for clean data, so the first one
compares two different code paths rather than one with itself.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batchrun.config import ColumnSpec, CsvOptions
from batchrun.fastcheck import CleanCheck
from batchrun.model import BatchTask
from batchrun.pipeline import BatchPipeline, PipelineSpec
from batchrun.readers.fastcsv import fast_typed_columns, read_csv_fast

COLUMNS = {
    "id": ColumnSpec(type="int64", required=True, min=1),
    "price": ColumnSpec(type="decimal(8,2)", min=0, max=1000),
    "code": ColumnSpec(type="string", pattern="^[A-Z]{2}-[0-9]{3}$"),
    "cur": ColumnSpec(type="string", allowed=["USD", "EUR"]),
    "ts": ColumnSpec(type="timestamp", format="%Y-%m-%d %H:%M:%S"),
    "day": ColumnSpec(type="date", format="%d/%m/%Y"),
    "note": ColumnSpec(type="string", max_length=5),
    "ratio": ColumnSpec(type="float64", min=0, max=1),
    "qty": ColumnSpec(type="int32"),
    "at": ColumnSpec(type="timestamp"),
    "on": ColumnSpec(type="date"),
}
INTEGER_SPELLINGS = ["0x10", "0X1f", "0xFFFFFFFFFFFFFFFF", "+5", " 5 ", "\t5", "5\t", "1_000",
                     "0b1", "0o7", "1e3", "-0", "+-5", "5.0", "٣", "nan", "NULL"]
"""Integers as pyarrow or a cast may read them (hexadecimal, padded, with a sign, ...)."""
ISO_PARTIALS = ["2024-01-05", "2024-01-05T10", "2024-01-05 10", "2024-01-05T10:20",
                "2024-01-05 10:20:30", "2024-01-05T10:20:30.5", "2024-01-05T10:20:30Z",
                "2024-01-05T10:20:30+01:00", "2024-01-05T1020", "20240105T102030", "20240105",
                "2024-01", "2024", "2024-1-5", "2024-01-05T24:00:00", "2024-01-05T", "2024-005",
                "2024-W01-1", "+2024-01-05", " 2024-01-05", "2024-01-05T10Z", ""]
"""Dates and timestamps, whole and partial ISO 8601 forms (no `format`: pyarrow parses)."""
CELLS = {
    "id": ["1", "42", "0", "-3", "", "x", "1e3", "007", *INTEGER_SPELLINGS],
    "price": ["0", "0.00", "999.99", "1000", "1000.01", "-0.01", ".5", "+1.5", "1.", "1e2",
              " 5.00", "5.00 ", "12.345", "1234567.00", "", "abc"],
    "code": ["AB-123", "ZZ-999", "ab-123", "AB-1234", "AB-12", "", " AB-123", "AB-123\n"],
    "cur": ["USD", "EUR", "usd", "GBP", "", "EUR "],
    "ts": ["2024-01-05 10:20:30", "1999-12-31 23:59:59", "2024-02-30 10:00:00", "2024-1-5 1:2:3",
           "2024-01-05T10:20:30", " 2024-01-05 10:20:30", "2024-01-05", "", "soon"],
    "day": ["05/01/2024", "29/02/2024", "30/02/2023", "5/1/2024", "2024-01-05", ""],
    "note": ["", "abc", "abcde", "abcdef", "a\nb", "a\r\nb", "e\u0301e\u0301e", "😀😀😀😀😀", "😀😀😀😀😀😀"],
    "ratio": ["0", "1", "0.5", "1.0000001", "-0.0", "nan", "inf", "", "1e-3", "+0.5", " .5 ",
              "\t0.5", "0x1", "1_0", "Infinity", "5e-1", "0.5f"],
    "qty": ["5", "2147483647", "2147483648", "-2147483648", "0x7FFFFFFF", "0x80000000",
            *INTEGER_SPELLINGS],
    "at": ISO_PARTIALS,
    "on": ISO_PARTIALS,
}
GOOD = {"id": "7", "price": "12.50", "code": "AB-123", "cur": "USD", "ts": "2024-01-05 10:20:30",
        "day": "05/01/2024", "note": "ok", "ratio": "0.5", "qty": "5", "at": "2024-01-05 10:20:30",
        "on": "2024-01-05"}


def row_of(cells: dict[str, str]) -> list[str]:
    return [cells.get(name, GOOD[name]) for name in COLUMNS]


ROWS = st.lists(
    st.dictionaries(st.sampled_from(list(COLUMNS)), st.none(), max_size=3).flatmap(
        lambda chosen: st.fixed_dictionaries({c: st.sampled_from(CELLS[c]) for c in chosen})),
    min_size=1, max_size=12)


def write(path: Path, rows: list[list[str]], reverse: bool = False) -> None:
    """A CSV of `rows` (schema order); `reverse` writes the columns the other way round."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    order = slice(None, None, -1 if reverse else 1)
    writer.writerow(list(COLUMNS)[order])
    writer.writerows(row[order] for row in rows)
    path.write_text(out.getvalue(), encoding="utf-8")


def process(folder: Path, files: list[str], fast: bool, columns: dict[str, ColumnSpec] = COLUMNS,
            csv: CsvOptions | None = None) -> tuple[list[dict], list[dict], list]:
    spec = PipelineSpec(run_id="r", table="t", staging_dir=str(folder), fmt="csv",
                      csv=csv or CsvOptions(), columns=columns)
    worker = BatchPipeline(0, spec)
    if not fast:
        worker.fast_validator = None  # the slow path for every file: the reference
    result = worker.process(BatchTask(batch_id="b", files=tuple(files)))
    staged = pq.read_table(result.output_path).to_pylist() if result.output_path else []
    rejects = (pq.read_table(result.rejects_path).drop_columns(["run_id"]).to_pylist()
               if result.rejects_path else [])
    return staged, rejects, sorted((o.path, o.rows_staged, o.rows_rejected, o.error)
                                   for o in result.files)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.tuples(ROWS, st.booleans()), min_size=1, max_size=4))
@example(files=[([{}], True), ([{}], False), ([{}], True)])  # grouped by header, kept in order
def test_the_fast_path_stages_and_rejects_exactly_what_the_reference_does(
        tmp_path_factory: pytest.TempPathFactory,
        files: list[tuple[list[dict[str, str]], bool]]) -> None:
    """Several small files per batch also exercise the joint parse: files with the same
    header are parsed as one text, unless a quoted newline or a bad cell forbids it."""
    data = tmp_path_factory.mktemp("data")
    paths = []
    for index, (rows, reverse) in enumerate(files):
        path = data / f"f{index}.csv"
        write(path, [row_of(cells) for cells in rows], reverse)
        paths.append(str(path))
    fast = process(tmp_path_factory.mktemp("fast"), paths, fast=True)
    reference = process(tmp_path_factory.mktemp("slow"), paths, fast=False)
    assert fast[0] == reference[0]
    assert fast[1] == reference[1]
    assert fast[2] == reference[2]
    total = sum(len(rows) for rows, _ in files)
    assert len(reference[0]) + len({(r["file"], r["line"]) for r in reference[1]}) == total


def test_clean_files_are_staged_by_the_fast_path(tmp_path: Path) -> None:
    path = tmp_path / "clean.csv"
    write(path, [row_of({}), row_of({"price": "1000", "note": "abcde", "ratio": "1"})])
    typed = fast_typed_columns(COLUMNS)
    raw = read_csv_fast(str(path), CsvOptions(), COLUMNS, typed)
    assert raw is not None
    clean = CleanCheck(COLUMNS, typed).typed_if_clean(raw.table)
    assert clean is not None
    assert clean.schema.field("price").type == pa.decimal128(8, 2)
    assert clean.schema.field("ts").type == pa.timestamp("us")
    assert clean.schema.field("day").type == pa.date32()
    assert clean.schema.field("qty").type == pa.int32()
    assert clean.schema.field("at").type == pa.timestamp("us")
    assert clean.num_rows == 2


def test_a_hexadecimal_integer_is_rejected_whatever_its_neighbours(tmp_path: Path) -> None:
    """pyarrow reads `0x10` as 16 and `0xFFFFFFFFFFFFFFFF` as -1; the reference rejects
    both. a.csv is clean otherwise (the fast path), b.csv has a bad row (the reference)."""
    columns = {"id": ColumnSpec(type="int64"), "v": ColumnSpec(type="string")}
    paths = []
    for name, last in (("a.csv", "5,c"), ("b.csv", "bad,c")):
        (tmp_path / name).write_text(f"id,v\n0x10,a\n0xFFFFFFFFFFFFFFFF,b\n{last}\n")
        paths.append(str(tmp_path / name))
    staged, rejects, outcomes = process(tmp_path / "out", paths, fast=True, columns=columns)
    assert [row["id"] for row in staged] == [5]
    assert sorted((Path(r["file"]).name, r["line"], r["rule"]) for r in rejects) == [
        ("a.csv", 2, "type:int64"), ("a.csv", 3, "type:int64"), ("b.csv", 2, "type:int64"),
        ("b.csv", 3, "type:int64"), ("b.csv", 4, "type:int64")]
    assert [(Path(o[0]).name, *o[1:]) for o in outcomes] == [("a.csv", 1, 2, None),
                                                             ("b.csv", 0, 3, None)]


def test_fast_and_reference_paths_agree_on_an_hour_only_timestamp(tmp_path: Path) -> None:
    columns = {"k": ColumnSpec(type="int64"), "x": ColumnSpec(type="timestamp")}
    path = tmp_path / "a.csv"
    path.write_bytes(b"k,x\n1,2024-01-05T10\n")
    fast = process(tmp_path / "fast", [str(path)], fast=True, columns=columns)
    reference = process(tmp_path / "slow", [str(path)], fast=False, columns=columns)
    assert len(fast[0]) + len(fast[1]) == 1 and len(reference[0]) + len(reference[1]) == 1
    assert fast == reference
    assert [r["rule"] for r in reference[1]] == ["type:timestamp"]


@pytest.mark.parametrize("column, cell", [
    ("price", "1e2"), ("price", "1000.01"), ("ts", "2024-02-30 10:00:00"), ("code", "AB-1234"),
    ("cur", "GBP"), ("note", "abcdef"), ("ratio", "nan"), ("id", "0"), ("day", "30/02/2023"),
    ("id", "0x10"), ("qty", "0X10"), ("id", "\t5"), ("at", "2024-01-05T10"), ("at", "2024-01-05 10"),
])
def test_one_doubtful_cell_sends_the_batch_to_the_reference(tmp_path: Path, column: str,
                                                           cell: str) -> None:
    path = tmp_path / "one.csv"
    write(path, [row_of({}), row_of({column: cell})])
    typed = fast_typed_columns(COLUMNS)
    raw = read_csv_fast(str(path), CsvOptions(), COLUMNS, typed)
    if raw is not None:  # pyarrow itself may already refuse the cell
        assert CleanCheck(COLUMNS, typed).typed_if_clean(raw.table) is None


HEADER = ",".join(COLUMNS)
LINE = ",".join(GOOD[name] for name in COLUMNS)
ONE_COLUMN = {"id": ColumnSpec(type="int64")}
TWO_COLUMNS = {"id": ColumnSpec(type="int64"), "note": ColumnSpec(type="string")}


@pytest.mark.parametrize("columns, delimiter, text", [
    (COLUMNS, ",", f"{HEADER}\n{LINE}\n\n{LINE}\n"),                # an empty line
    (COLUMNS, ",", f"{HEADER}\n{LINE}\n   \n{LINE}\n"),             # spaces only
    (COLUMNS, ",", f"{HEADER}\n{LINE}\n\t\n{LINE}\n"),             # a tab only
    (COLUMNS, ",", f"{HEADER}\n{LINE}\n{LINE}\n\n\n"),              # blank lines at the end
    (COLUMNS, ",", f"{HEADER}\r\n{LINE}\r\n\r\n{LINE}\r\n"),      # CRLF, an empty line
    (COLUMNS, ",", f"{HEADER}\n\n{LINE}\n"),                        # right after the header
    (ONE_COLUMN, ",", "id\n1\n\n2\n   \n3\n"),                     # one column: a blank is a row?
    (ONE_COLUMN, ",", "id\n1\n2\n"),
    (TWO_COLUMNS, "\t", "id\tnote\n1\ta\n\t\n2\tb\n"),               # TSV: a line of one tab
    (TWO_COLUMNS, "\t", "id\tnote\n1\ta\n \t \n2\tb\n"),             # TSV: spaces and a tab
    (TWO_COLUMNS, " ", "id note\n1 a\n \n2 b\n"),                     # space-delimited
    (TWO_COLUMNS, ",", "id,note\n1,a\n\n2,b\n\n"),                      # issue 12: 4 rows staged
    (TWO_COLUMNS, ",", "id,note\r\n1,a\r\n\r\n2,b\r\n"),                # CRLF, two columns
    (TWO_COLUMNS, ",", "id,note\r\n1,a\r\r\n2,b\r\n"),                  # CR CR LF
    (TWO_COLUMNS, ",", "id,note\n1,a\n  \n2,b\n \t\n"),                 # whitespace only
    (TWO_COLUMNS, ",", "id,note\n\n\n1,a\n2,b"),                         # after the header
    (TWO_COLUMNS, "\t", "id\tnote\r\n1\ta\r\n\r\n2\tb\r\n\r\n"),          # TSV, CRLF
    (ONE_COLUMN, ",", "id\r\n1\r\n\r\n2\r\r\n3\r\n"),                 # one column, CRLF
])
def test_blank_lines_are_staged_and_counted_as_the_reference_does(
        tmp_path: Path, columns: dict[str, ColumnSpec], delimiter: str, text: str) -> None:
    """The fast parse keeps empty lines, so a blank line in a many-column file is a
    ragged row there and sends the file to the reference; one-column files, and files
    whose delimiter is a space or a tab (a line of tabs is a full row), are scanned."""
    path = tmp_path / "blank.csv"
    path.write_bytes(text.encode())
    options = CsvOptions(delimiter=delimiter)
    fast = process(tmp_path / "fast", [str(path)], fast=True, columns=columns, csv=options)
    reference = process(tmp_path / "slow", [str(path)], fast=False, columns=columns,
                        csv=options)
    assert fast == reference
    lines = text.splitlines()[1:]
    records = [line for line in lines if line.strip(" \t")]
    rejected = {(r["file"], r["line"]) for r in reference[1]}
    assert len(reference[0]) + len(rejected) == len(records)


SHAPES = {
    "many": {"id": ColumnSpec(type="int64", min=1), "price": ColumnSpec(type="decimal(8,2)"),
             "code": ColumnSpec(type="string", pattern="^[A-Z]{2}$"),
             "note": ColumnSpec(type="string")},
    "two": TWO_COLUMNS,
    "one": ONE_COLUMN,
    "one_text": {"note": ColumnSpec(type="string")},
}
VALUES = {"int64": ["1", "42", "", "0", "x"], "decimal(8,2)": ["1.50", "", "2"],
          "string": ["a", "", "AB", "b c", "Zé"]}
BLANKS = ["", " ", "\t", "  \t ", "\r"]
"""Blank lines of every kind; "\r" followed by the line's own ending makes CR CR LF."""
ENDINGS = ["\n", "\r\n"]
LINES = st.lists(st.one_of(st.tuples(st.just("blank"), st.sampled_from(BLANKS)),
                           st.tuples(st.just("row"), st.integers(0, 10**6))),
                 min_size=0, max_size=10)


def blank_file(shape: str, delimiter: str, lines: list[tuple[str, Any]], ending: str,
               last_ending: bool, lead: tuple[str, ...] = ()) -> str:
    """A CSV of `shape` whose rows are picked by seed, with blank lines between them (and
    the blank lines `lead` before the header)."""
    columns = SHAPES[shape]
    out = io.StringIO()
    out.write("".join(blank + ending for blank in lead))
    writer = csv.writer(out, delimiter=delimiter, lineterminator="")
    writer.writerow(list(columns))
    for kind, value in lines:
        out.write(ending)
        if kind == "blank":
            out.write(value)
            continue
        choices = [VALUES[spec.type] for spec in columns.values()]
        writer.writerow([c[(value // (7 ** i)) % len(c)] for i, c in enumerate(choices)])
    if last_ending:
        out.write(ending)
    return out.getvalue()


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.tuples(LINES, st.sampled_from(ENDINGS), st.booleans(),
                                st.sampled_from([()] * 3 + [("",), (" ", "\t"), ("\r",)])),
                      min_size=1, max_size=3),
       shape=st.sampled_from(sorted(SHAPES)), delimiter=st.sampled_from([",", "\t"]))
@example(files=[([("row", 0), ("blank", ""), ("row", 1), ("blank", "")], "\n", True, ())],
         shape="two", delimiter=",")  # issue 12: 4 rows staged, two of them all NULL
@example(files=[([("row", 0), ("blank", "\r"), ("row", 1)], "\r\n", True, ())],
         shape="two", delimiter=",")  # CR CR LF
@example(files=[([("row", 0), ("blank", "  "), ("row", 1)], "\n", True, ())],
         shape="many", delimiter=",")  # spaces in a comma file
@example(files=[([("row", 0)], "\n", True, ("",)), ([("row", 1)], "\n", True, ())],
         shape="many", delimiter=",")  # a blank line before the header
def test_blank_lines_anywhere_are_dropped_alike_by_the_fast_path_and_the_reference(
        tmp_path_factory: pytest.TempPathFactory, files: list[tuple[list, str, bool, tuple]],
        shape: str, delimiter: str) -> None:
    """Blank lines of every kind (empty, spaces, tabs, CR CR LF), anywhere (before the
    header, after it, between rows, at the end), in files of one and many columns, comma
    and tab separated, several files per batch (the joint parse): both paths stage the
    same rows, and every non-blank line ends staged or rejected, exactly once."""
    data = tmp_path_factory.mktemp("blank")
    paths, records = [], 0
    for index, (lines, ending, last_ending, lead) in enumerate(files):
        text = blank_file(shape, delimiter, lines, ending, last_ending, lead)
        path = data / f"f{index}.csv"
        path.write_bytes(text.encode())
        paths.append(str(path))
        records += sum(1 for line in text.splitlines() if line.strip(" \t")) - 1  # header
    options = CsvOptions(delimiter=delimiter)
    columns = SHAPES[shape]
    fast = process(tmp_path_factory.mktemp("fast"), paths, True, columns, options)
    reference = process(tmp_path_factory.mktemp("slow"), paths, False, columns, options)
    assert fast == reference
    rejected = {(r["file"], r["line"]) for r in reference[1]}
    assert len(reference[0]) + len(rejected) == records


@pytest.mark.parametrize("value", ["9" * 39, "-" + "9" * 39, "+" + "1" * 50, "1" * 40 + ".5",
                                   "38166235374929897679061816506982398148",
                                   "-7375020065489352130256432368223729994",
                                   "7.406812415868344978690736625851781286"])
@pytest.mark.parametrize("scale", [0, 2, 38])
def test_a_decimal_with_more_digits_than_128_bits_hold_is_never_called_clean(
        value: str, scale: int) -> None:
    """Arrow's string-to-decimal128(38, s) cast wraps silently past 38 digits, the scale's
    zeros included (39 nines, or 37 digits at scale 2, read as other numbers): such a value
    must go to the reference, which rejects it."""
    if scale == 0 and len(value.lstrip("+-")) <= 38 and "." not in value:
        pytest.skip("fits")
    columns = {"amount": ColumnSpec(type=f"decimal(38,{scale})")}
    text = pa.table({"amount": pa.array(["0", value], pa.string())})
    assert CleanCheck(columns, frozenset()).typed_if_clean(text) is None
