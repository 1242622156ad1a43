"""Property-based round trip: random tables → CSV (random dialect) → worker → same values.

Hypothesis builds a table (int64 id, decimal(12,2) price, a messy unicode string, a
timestamp), writes it with Python's `csv` module using a random quoting mode, line
terminator, delimiter and an optional BOM, and breaks a random subset of rows: a bad
cell (non-numeric id, a price with three decimals, 31 February, ...) or a wrong number
of fields; a few blank lines go in between. The physical line of every record is
tracked while writing (LF, CRLF and a lone CR each end a line, also inside a quoted
value: a `name` of "\\r" makes its record two lines). One in-process
`BatchPipeline` then reads and validates the file, and the test checks that

* every good row comes back unchanged, in file order, with its line number;
* every broken row is rejected exactly once, on its line, for the first rule it breaks
  (columns in schema order), quoting the raw cell and the raw line;
* nothing else is rejected, and the counts in the result agree.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import re
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from batchrun.config import ColumnSpec, CsvOptions
from batchrun.model import BatchTask
from batchrun.pipeline import BatchPipeline, PipelineSpec

COLUMNS = {
    "id": ColumnSpec(type="int64", required=True),
    "price": ColumnSpec(type="decimal(12,2)"),
    "name": ColumnSpec(type="string"),
    "ts": ColumnSpec(type="timestamp"),
}
NAMES = list(COLUMNS)
BOM = "\ufeff"
QUOTING = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL, "nonnumeric": csv.QUOTE_NONNUMERIC}
LINE_BREAK = re.compile(r"\r\n|\r|\n")
"""The rule for line numbers: LF, CRLF and a lone CR each end a line, everywhere (inside
a quoted value too), as editors show them and as pyarrow splits records."""

BAD_CELLS: dict[str, list[tuple[str, str]]] = {
    "id": [("abc", "type:int64"), ("1.5", "type:int64"), ("12x", "type:int64"),
           ("9223372036854775808", "type:int64"), ("", "required")],
    "price": [("12.345", "type:decimal(12,2)"), ("0.001", "type:decimal(12,2)"),
              ("1e5", "type:decimal(12,2)"), ("ten", "type:decimal(12,2)"),
              ("123456789012.00", "type:decimal(12,2)")],
    "ts": [("2025-02-31 00:00:00", "type:timestamp"), ("2025-13-01 10:00:00", "type:timestamp"),
           ("yesterday", "type:timestamp")],
}

# Text that stresses the CSV writer and reader: delimiters, quotes, CR/LF, unicode.
SPECIAL = [",", ";", "\t", "|", '"', '""', "'", "\n", "\r\n", "\r", " ", "é", "ß", "€", "😀",
           "\u2028", "\ufeff", "\\", "#"]
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               min_size=1, max_size=8)
STRINGS = st.lists(st.one_of(st.sampled_from(SPECIAL), TEXT), min_size=1, max_size=5).map("".join)
PRICES = st.integers(-(10**12 - 1), 10**12 - 1).map(lambda n: Decimal(n).scaleb(-2))
TIMES = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 12, 31))


@dataclass
class Row:
    id: int
    price: Decimal
    name: str
    ts: dt.datetime
    ts_sep: str
    bad: dict[str, str] = field(default_factory=dict)
    """column → the raw cell written instead of the good value."""
    ragged: int = 0
    """-1: the last field is missing; +1: one field too many; 0: the right shape."""
    blank_before: int = 0
    """Blank lines written just before the record (dropped by the reader, still counted)."""
    line: int = 0
    """Physical line where the record starts, filled in while writing."""
    record: str = ""
    """The record as written, without its line terminator."""

    @property
    def expected_reject(self) -> tuple[str | None, str, str] | None:
        """(column, rule, value) of the first rule this row breaks, or None."""
        if self.ragged:
            fields = len(NAMES) + self.ragged
            return None, "ragged_row", f"{fields} fields, expected {len(NAMES)}"
        for name in NAMES:
            if name in self.bad:
                value = self.bad[name]
                rule = dict(BAD_CELLS[name])[value]
                return name, rule, value
        return None


@st.composite
def rows(draw: st.DrawFn) -> Row:
    row = Row(id=draw(st.integers(-(2**63), 2**63 - 1)), price=draw(PRICES), name=draw(STRINGS),
              ts=draw(TIMES), ts_sep=draw(st.sampled_from([" ", "T"])),
              blank_before=draw(st.sampled_from([0] * 8 + [1, 2])))
    kind = draw(st.sampled_from(["good"] * 4 + ["bad"] * 3 + ["ragged"]))
    if kind == "bad":
        broken = draw(st.lists(st.sampled_from(list(BAD_CELLS)), min_size=1, max_size=3, unique=True))
        row.bad = {c: draw(st.sampled_from([v for v, _ in BAD_CELLS[c]])) for c in broken}
    elif kind == "ragged":
        row.ragged = draw(st.sampled_from([-1, 1]))
    return row


@dataclass(frozen=True)
class Dialect:
    quoting: str
    terminator: str
    delimiter: str
    sniff: bool
    bom: bool


DIALECTS = st.builds(Dialect, quoting=st.sampled_from(list(QUOTING)),
                     terminator=st.sampled_from(["\n", "\r\n"]),
                     delimiter=st.sampled_from([",", ";", "\t", "|"]),
                     sniff=st.booleans(), bom=st.booleans())


def cells_of(row: Row, numeric: bool) -> list[Any]:
    """The cells to write; real numbers when QUOTE_NONNUMERIC should leave them bare."""
    good: dict[str, Any] = {
        "id": row.id if numeric else str(row.id),
        "price": row.price if numeric else str(row.price),
        "name": row.name,
        "ts": row.ts.isoformat(sep=row.ts_sep),
    }
    values = [row.bad.get(n, good[n]) for n in NAMES]
    if row.ragged < 0:
        return values[:-1]
    if row.ragged > 0:
        return [*values, "extra"]
    return values


def write_csv(path: Path, table: list[Row], dialect: Dialect) -> str:
    """Write the file and note each record's physical line; returns the text written."""
    quoting = QUOTING[dialect.quoting]
    if (quoting == csv.QUOTE_MINIMAL and dialect.terminator == "\n"
            and any("\r" in r.name for r in table)):
        # Python's writer only quotes a CR when the line terminator contains one, and a
        # bare CR outside quotes ends a record for any CSV reader: not a valid file.
        quoting = csv.QUOTE_ALL
    out = io.StringIO()
    writer = csv.writer(out, delimiter=dialect.delimiter, quoting=quoting,
                        lineterminator=dialect.terminator)
    writer.writerow(NAMES)
    for row in table:
        out.write(dialect.terminator * row.blank_before)
        start = out.tell()
        row.line = len(LINE_BREAK.findall(out.getvalue())) + 1
        writer.writerow(cells_of(row, numeric=quoting == csv.QUOTE_NONNUMERIC))
        row.record = out.getvalue()[start:].removesuffix(dialect.terminator)
    text = out.getvalue()
    path.write_bytes(((BOM if dialect.bom else "") + text).encode("utf-8"))
    return text


def physical_line(text: str, line: int) -> str:
    return LINE_BREAK.split(text)[line - 1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=st.lists(rows(), min_size=0, max_size=25), dialect=DIALECTS)
def test_csv_round_trip_keeps_good_rows_and_rejects_each_bad_row_once(
        table: list[Row], dialect: Dialect) -> None:
    with tempfile.TemporaryDirectory(prefix="batchrun-prop-") as tmp:
        path = Path(tmp) / "orders.csv"
        text = write_csv(path, table, dialect)
        event(f"quoting={dialect.quoting} terminator={dialect.terminator!r}")
        event(f"bad rows: {min(sum(bool(r.bad) for r in table), 3)}+, "
              f"ragged rows: {min(sum(bool(r.ragged) for r in table), 2)}+")
        event(f"records spanning lines: {any(chr(10) in r.record for r in table)}")
        spec = PipelineSpec(run_id="prop", table="orders", staging_dir=str(Path(tmp) / "staging"),
                          fmt="csv", columns=COLUMNS,
                          csv=CsvOptions(delimiter="auto" if dialect.sniff else dialect.delimiter))
        result = BatchPipeline(0, spec).process(BatchTask("b1", (str(path),)))

        good = [r for r in table if r.expected_reject is None]
        bad = [r for r in table if r.expected_reject is not None]
        staged = pq.read_table(result.output_path).to_pylist() if result.output_path else []
        rejects = pq.read_table(result.rejects_path).to_pylist() if result.rejects_path else []

        assert [(s["_line"], s["id"], s["price"], s["name"], s["ts"]) for s in staged] == [
            (r.line, r.id, r.price, r.name, r.ts) for r in good]
        assert [str(s["price"]) for s in staged] == [str(r.price) for r in good]
        assert {s["_file"] for s in staged} <= {str(path)}

        expected = []
        for r in bad:
            column, rule, value = r.expected_reject  # type: ignore[misc]
            raw_line = r.record if r.ragged else physical_line(text, r.line)
            expected.append((r.line, column, rule, value, raw_line))
        assert [(j["line"], j["column"], j["rule"], j["value"], j["raw_line"]) for j in rejects] \
            == expected
        assert {(j["run_id"], j["batch_id"], j["file"]) for j in rejects} <= {("prop", "b1", str(path))}

        assert (result.rows_staged, result.rows_rejected) == (len(good), len(bad))
        (outcome,) = result.files
        assert outcome.error is None
        assert (outcome.rows_staged, outcome.rows_rejected) == (len(good), len(bad))


@settings(max_examples=30, deadline=None)
@given(table=st.lists(rows(), min_size=1, max_size=12), dialect=DIALECTS,
       files=st.integers(2, 3))
def test_a_batch_of_several_files_keeps_each_files_rows_and_lines_apart(
        table: list[Row], dialect: Dialect, files: int) -> None:
    """The same rows split over several files of one batch: lines are per file."""
    with tempfile.TemporaryDirectory(prefix="batchrun-prop-") as tmp:
        parts = [table[i::files] for i in range(files)]
        paths, texts = [], []
        for n, part in enumerate(parts):
            path = Path(tmp) / f"part{n}.csv"
            texts.append(write_csv(path, part, dialect))
            paths.append(str(path))
        spec = PipelineSpec(run_id="prop", table="orders", staging_dir=str(Path(tmp) / "staging"),
                          fmt="csv", columns=COLUMNS,
                          csv=CsvOptions(delimiter="auto" if dialect.sniff else dialect.delimiter))
        result = BatchPipeline(0, spec).process(BatchTask("b1", tuple(paths)))
        staged = pq.read_table(result.output_path).to_pylist() if result.output_path else []
        rejects = pq.read_table(result.rejects_path).to_pylist() if result.rejects_path else []

        assert [(s["_file"], s["_line"], s["id"], s["name"]) for s in staged] == [
            (p, r.line, r.id, r.name) for p, part in zip(paths, parts)
            for r in part if r.expected_reject is None]
        expected_rejects = sorted(
            (p, r.line, r.expected_reject[1])  # type: ignore[index]
            for p, part in zip(paths, parts) for r in part if r.expected_reject is not None)
        assert [(j["file"], j["line"], j["rule"]) for j in rejects] == expected_rejects
        assert sum(1 for _ in itertools.chain(staged, rejects)) == len(table)
