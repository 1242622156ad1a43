"""The reference CSV reader: pyarrow's parser, then exact line numbers, blank and ragged rows.

Every reader returns the same shape: one string column per input column (the raw cell,
as it appears in the file) and `_line`, the 1-based line of the row in the file as an
editor shows it (header and quoted newlines counted). Rows the parser cannot split into
the right number of fields come back separately as `RaggedRow`s. Anything that makes
the whole file unreadable raises `PermanentSourceError` with a one-line reason.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from batchrun.config import CsvOptions
from batchrun.errors import PermanentSourceError
from batchrun.layout import LINE
from batchrun.readers.header import (
    blank_prefix,
    first_record,
    has_lone_cr,
    header_cells,
    header_names,
    line_breaks,
    line_one,
    sniff_delimiter,
)
from batchrun.readers.raw import BLANK_LINE, RaggedRow, RawFile, first_line

UTF8_BOM = b"\xef\xbb\xbf"
_THREADED_READ_BYTES = 32 * 2**20
_WHITESPACE_LINE = re.compile(rb"(?:^|[\r\n])[ \t]+(?:[\r\n]|$)")
_BLANK_CHARS = " \t\r"
"""A line of only these is blank: dropped, its line number still counted."""


def _newlines_in(values: pa.ChunkedArray | pa.Array, universal: bool) -> pa.Array:
    """Line breaks inside each value (LF, CRLF, lone CR when `universal`)."""
    count = pc.count_substring(values, "\n")
    if universal:
        count = pc.subtract(pc.add(count, pc.count_substring(values, "\r")),
                            pc.count_substring(values, "\r\n"))
    return pc.fill_null(count, 0)


def _has_blank_line(text: bytes, columns: int, delimiter: str) -> bool:
    """Whether `text` may hold a blank line that the fast parse would not notice.
    Conservative: a line of spaces or tabs, or any bare CR (a CR-only or mixed file), says
    yes. An empty line is caught after the parse (a row null in every column, see
    `_has_all_null_row`); a line of spaces in a file of two or more columns is one field
    short, a ragged row: either sends the file to the slow path. That fails when a
    whitespace line has enough fields: one column, or a space or tab delimiter (a line of
    tabs is a full row of empty cells). Only then does the regex scan (~1 ms per MB) run."""
    if (columns < 2 or delimiter.isspace()) and BLANK_LINE.search(text):
        return True
    return has_lone_cr(text)


def read_csv(path: str, text: bytes, options: CsvOptions,
              column_names: list[str] | None = None) -> RawFile:
    if not text.endswith(b"\n"):
        text += b"\n"
    first, header_lines = first_record(text)
    first_line = first.decode("utf-8", "replace")
    delimiter = sniff_delimiter(first_line) if options.delimiter == "auto" else options.delimiter
    if options.header:
        names = header_names(header_cells(path, text, delimiter))
    else:  # the blank lines before the first row are skipped, and counted, all the same
        header_lines = line_breaks(text[:blank_prefix(text)])
        width = len(header_cells(path, text, delimiter))
        names = list(column_names or [f"f{i}" for i in range(width)])
    threaded = _threaded(text)
    table, ragged = _parse_csv(path, text, delimiter, names, header_lines, threaded)
    if ragged and any(r.line < 0 for r in ragged):
        table, ragged = _parse_csv(path, text, delimiter, names, header_lines, threaded=False)
    # Each record is one physical line unless a quoted value spans lines: a newline
    # count (memchr speed) tells whether the per-cell count is needed at all.
    spans = line_breaks(text) != header_lines + table.num_rows + len(ragged)
    lines, ragged = _line_numbers(table, ragged, header_lines, spans, has_lone_cr(text))
    ragged = [r for r in ragged if r.text.strip(_BLANK_CHARS)]  # a line of spaces is blank
    table = table.append_column(LINE, lines)
    raw = RawFile(path=path, table=table, ragged=ragged, text=text)
    blank = _blank_rows(raw)
    if blank is not None:
        raw.table = table.filter(pc.invert(blank))
    return raw


def _threaded(text: bytes) -> bool:
    """pyarrow's parallel reader pays off only on big texts, and only with spare threads."""
    return len(text) > _THREADED_READ_BYTES and pa.cpu_count() > 1


def _block_size(text: bytes) -> int:
    """pyarrow's parse block: at least a few times the first line (a header of 200,000
    columns is longer than the default 1 MiB block, which pyarrow cannot skip)."""
    return min(max(1 << 20, 4 * len(line_one(text))), 1 << 30)


def _parse_csv(path: str, text: bytes, delimiter: str, names: list[str], header_lines: int,
               threaded: bool) -> tuple[pa.Table, list[RaggedRow]]:
    ragged: list[RaggedRow] = []

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        number = row.number if row.number is not None else -1
        ragged.append(RaggedRow(line=number, text=row.text, fields=row.actual_columns))
        return "skip"

    read = pacsv.ReadOptions(use_threads=threaded, column_names=names, skip_rows=header_lines,
                             block_size=_block_size(text))
    parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
                               ignore_empty_lines=False, invalid_row_handler=on_invalid_row)
    convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    try:
        table = pacsv.read_csv(pa.BufferReader(text), read_options=read,
                               parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise PermanentSourceError(path, f"cannot parse as CSV: {first_line(exc)}") from None
    return table, ragged


def _line_numbers(table: pa.Table, ragged: list[RaggedRow], header_lines: int,
                  spans: bool = True, universal: bool = False
                  ) -> tuple[pa.Array, list[RaggedRow]]:
    """Physical line of each parsed row, and of each ragged row (vectorised).

    Records are numbered from 1 with the header included; pyarrow numbers the ragged
    ones, the parsed rows take the remaining numbers in order. A record starts at line
    record + (newlines inside quoted values of every record before it).
    """
    n = table.num_rows
    if not spans and not ragged:
        return pa.array(np.arange(header_lines + 1, header_lines + n + 1, dtype=np.int64)), []
    ragged_ids = np.array([r.line for r in ragged], dtype=np.int64)
    every_id = np.arange(header_lines + 1, header_lines + n + len(ragged) + 1, dtype=np.int64)
    kept_ids = np.setdiff1d(every_id, ragged_ids, assume_unique=True)
    record_ids = np.concatenate((kept_ids, ragged_ids))
    texts = pa.array([r.text for r in ragged], pa.string())
    extra = np.concatenate((_embedded_newlines(table, universal),
                            _numpy(_newlines_in(texts, universal)).astype(np.int64)))
    order = np.argsort(record_ids, kind="stable")
    before = np.empty_like(extra)
    before[order] = np.cumsum(extra[order]) - extra[order]
    lines = record_ids + before
    fixed = [RaggedRow(line=int(line), text=r.text, fields=r.fields)
             for r, line in zip(ragged, lines[n:])]
    return pa.array(lines[:n], pa.int64()), fixed


def _embedded_newlines(table: pa.Table, universal: bool = False) -> np.ndarray:
    total = np.zeros(table.num_rows, dtype=np.int64)
    breaks = ("\n", "\r") if universal else ("\n",)
    for column in table.columns:
        if pa.types.is_string(column.type) and any(
                pc.any(pc.match_substring(column, b)).as_py() for b in breaks):
            total += _numpy(_newlines_in(column, universal))
    return total


def _numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """To numpy without pandas (ChunkedArray.to_numpy imports it: ~0.2 s per process)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.to_numpy(zero_copy_only=False)


def _blank_rows(raw: RawFile) -> pa.Array | None:
    """Blank lines (nothing but spaces, tabs or CR): dropped, their line still counted. A
    row of empty cells (',,') whose line is not blank is kept, so rules such as `required`
    still see it."""
    table = raw.table
    cells = [c for name, c in zip(table.column_names, table.columns) if name != LINE]
    if not cells or table.num_rows == 0:
        return None
    padded = raw.text is not None and _WHITESPACE_LINE.search(raw.text) is not None
    empty = _is_empty(cells[0], padded)
    for column in cells[1:]:
        empty = pc.and_(empty, _is_empty(column, padded))
    if not pc.any(empty).as_py():
        return None
    candidates = np.flatnonzero(_numpy(empty))
    lines = table[LINE].take(pa.array(candidates)).to_pylist()
    blank = np.zeros(table.num_rows, dtype=bool)
    blank[candidates] = [not text.strip(_BLANK_CHARS) for text in raw.raw_lines(lines)]
    return pa.array(blank)


def _is_empty(cells: pa.ChunkedArray, padded: bool) -> pa.ChunkedArray:
    """Cells with no text; with `padded` (the file has a line of spaces or tabs), also
    cells of only spaces and tabs."""
    if not pa.types.is_string(cells.type):  # never from a CSV read; nulls are empty
        return pc.fill_null(pc.is_null(cells), True)
    if padded:
        cells = pc.utf8_trim(cells, characters=" \t")
    return pc.equal(pc.binary_length(cells), 0)


