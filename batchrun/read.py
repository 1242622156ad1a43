"""Reading one source file into an Arrow table of raw strings plus its line numbers.

Every reader returns the same shape: one string column per input column (the raw cell,
as it appears in the file) and `_line`, the 1-based line of the row in the file as an
editor shows it (header and quoted newlines counted). Rows the parser cannot split into
the right number of fields come back separately as `RaggedRow`s. Anything that makes
the whole file unreadable raises `PermanentSourceError` with a one-line reason.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from batchrun.config import CsvOptions
from batchrun.errors import PermanentSourceError, TransientSourceError
from batchrun.header import (
    blank_prefix,
    first_record,
    has_lone_cr,
    header_cells,
    header_names,
    line_breaks,
    line_one,
    sniff_delimiter,
)

LINE = "_line"
_UTF8_BOM = b"\xef\xbb\xbf"
_THREADED_READ_BYTES = 32 * 2**20
_BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")
_WHITESPACE_LINE = re.compile(rb"(?:^|[\r\n])[ \t]+(?:[\r\n]|$)")
_BLANK_CHARS = " \t\r"
"""A line of only these is blank: dropped, its line number still counted."""


@dataclass(frozen=True)
class RaggedRow:
    """A record that could not be split into cells: a reject before validation."""

    line: int
    text: str
    fields: int
    rule: str = "ragged_row"
    detail: str | None = None


@dataclass
class RawFile:
    path: str
    table: pa.Table
    """One string column per input column, plus `_line` (int64)."""
    ragged: list[RaggedRow] = field(default_factory=list)
    text: bytes | None = None
    """The decoded (UTF-8) file content, kept to quote rejected lines."""

    def raw_lines(self, lines: list[int]) -> list[str]:
        """The text of the given 1-based physical lines (empty when unknown)."""
        if self.text is None:
            return ["" for _ in lines]
        starts = _line_starts(self.text)
        out = []
        for line in lines:
            if 1 <= line <= len(starts):
                begin = int(starts[line - 1])
                end = int(starts[line]) if line < len(starts) else len(self.text)
                text = self.text[begin:end].removesuffix(b"\n").removesuffix(b"\r")
                out.append(text.decode("utf-8", "replace"))
            else:
                out.append("")
        return out


def _line_starts(text: bytes) -> np.ndarray:
    """Offsets where each line starts: after every LF, CRLF, or lone CR."""
    codes = np.frombuffer(text, np.uint8)
    ends = codes == 10
    if has_lone_cr(text):
        lone = codes == 13
        lone[:-1] &= codes[1:] != 10
        ends |= lone
    return np.concatenate(([0], np.flatnonzero(ends) + 1))


def _newlines_in(values: pa.ChunkedArray | pa.Array, universal: bool) -> pa.Array:
    """Line breaks inside each value (LF, CRLF, lone CR when `universal`)."""
    count = pc.count_substring(values, "\n")
    if universal:
        count = pc.subtract(pc.add(count, pc.count_substring(values, "\r")),
                            pc.count_substring(values, "\r\n"))
    return pc.fill_null(count, 0)


def read_file(path: str, fmt: str, options: CsvOptions,
              column_names: list[str] | None = None, max_bytes: int | None = None) -> RawFile:
    """Read any supported file; compression is detected from the extension.

    `column_names` names the columns of a CSV without a header (by position); a file
    past `max_bytes` (decompressed) is refused with a PermanentSourceError.
    """
    return read_data(path, _read_bytes(path, max_bytes), fmt, options, column_names)


def read_data(path: str, data: bytes, fmt: str, options: CsvOptions,
              column_names: list[str] | None = None) -> RawFile:
    """`read_file` on bytes already read (schema inference reads a file's head)."""
    if fmt == "parquet":
        return _read_parquet(path, data)
    encoding = options.encoding if fmt == "csv" else "utf-8"
    if not data or (data[:1].isspace() and not data.strip()):
        raise PermanentSourceError(path, "empty file (no header, no rows)")
    if b"\0" in data[:8192] and not encoding.replace("-", "").lower().startswith(("utf16", "utf32")):
        raise PermanentSourceError(path, "binary content (NUL bytes), not text")
    text = _decode(path, data, encoding)
    if fmt == "jsonl":
        return _read_jsonl(path, text)
    return _read_csv(path, text, options, column_names)


_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
"""The suffixes Arrow's compression="detect" decompresses (case-sensitive, as Arrow's);
other files are read plainly: one copy instead of Arrow's buffer plus a bytes copy."""


_READ_CHUNK = 8 * 2**20
"""A compressed file is decompressed this many bytes at a time, checked against the cap."""


@contextmanager
def open_stream(path: str) -> Iterator[Any]:
    """The file as a binary stream (decompressed by its suffix); errors as SourceErrors."""
    try:
        if not path.endswith(_COMPRESSED):
            with open(path, "rb") as handle:
                yield handle
        else:
            with pa.input_stream(path, compression="detect") as stream:
                yield stream
    except FileNotFoundError:
        raise PermanentSourceError(path, "file not found (deleted after planning?)") from None
    except PermissionError:
        raise PermanentSourceError(path, "permission denied") from None
    except (OSError, zlib.error, pa.ArrowInvalid) as exc:
        if _looks_like_corrupt_compression(exc):
            raise PermanentSourceError(path, f"corrupt or truncated compression: {exc}") from None
        raise TransientSourceError(path, f"I/O error: {exc}") from None


def _read_bytes(path: str, limit: int | None = None) -> bytes:
    """The whole (decompressed) file. Past `limit` bytes it is refused: a plain file by
    its size, before reading; a compressed one as soon as the stream passes the limit,
    so at most limit + one chunk is ever held."""
    with open_stream(path) as stream:
        if not path.endswith(_COMPRESSED):
            if limit is not None and os.fstat(stream.fileno()).st_size > limit:
                raise PermanentSourceError(path, f"larger than max_file_bytes {_size(limit)}")
            return bytes(stream.read())
        return read_capped(path, stream, limit)


def read_capped(path: str, stream: Any, limit: int | None, chunk: int = _READ_CHUNK) -> bytes:
    """Read `stream` to its end in chunks; PermanentSourceError once past `limit` bytes."""
    parts: list[bytes] = []
    total = 0
    while True:
        part = stream.read(chunk)
        if not part:
            return b"".join(parts)
        total += len(part)
        if limit is not None and total > limit:
            raise PermanentSourceError(path, f"decompresses past max_file_bytes {_size(limit)}")
        parts.append(part)


def _size(count: int) -> str:
    """1_000_000_000 → '1GB'; 20 * 2**20 → '20MiB' (how a limit is written in a job)."""
    for unit, factor in (("GB", 10**9), ("GiB", 2**30), ("MB", 10**6), ("MiB", 2**20),
                         ("KB", 10**3), ("KiB", 2**10)):
        if count >= factor and count % factor == 0:
            return f"{count // factor}{unit}"
    return f"{count} bytes"


def gzip_size_estimate(path: str) -> int:
    """A gzip's decompressed size from its trailer (ISIZE: the size mod 2**32 of its last
    member), for budgets such as max_bytes_in_flight; the file's own size when it is not
    a gzip or the trailer is clearly wrong (smaller than the file: a multi-member gzip or
    one past 4 GiB). An estimate: never trusted for the per-file cap, which is counted."""
    size = os.path.getsize(path)
    if not path.endswith(".gz") or size < 18:
        return size
    with open(path, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            return size
        handle.seek(-4, os.SEEK_END)
        isize = int.from_bytes(handle.read(4), "little")
    return isize if isize >= size else size


def _looks_like_corrupt_compression(exc: Exception) -> bool:
    message = str(exc).lower()
    return any(word in message for word in ("gzip", "zstd", "compress", "truncated",
                                            "inflate", "bz2", "lz4", "zlib"))


def _decode(path: str, data: bytes, encoding: str) -> bytes:
    """Return UTF-8 without a BOM, or say where the text stops decoding."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PermanentSourceError(
            path, f"not valid {encoding} text at line {line} (byte {exc.start})") from None
    except LookupError:
        raise PermanentSourceError(path, f"unknown encoding {encoding!r}") from None
    return data if encoding.replace("-", "").lower() == "utf8" else text.encode("utf-8")


def _has_blank_line(text: bytes, columns: int, delimiter: str) -> bool:
    """Whether `text` may hold a blank line that the fast parse would not notice.
    Conservative: a line of spaces or tabs, or any bare CR (a CR-only or mixed file), says
    yes. An empty line is caught after the parse (a row null in every column, see
    `_has_all_null_row`); a line of spaces in a file of two or more columns is one field
    short, a ragged row: either sends the file to the slow path. That fails when a
    whitespace line has enough fields: one column, or a space or tab delimiter (a line of
    tabs is a full row of empty cells). Only then does the regex scan (~1 ms per MB) run."""
    if (columns < 2 or delimiter.isspace()) and _BLANK_LINE.search(text):
        return True
    return has_lone_cr(text)


def _is_utf8(encoding: str) -> bool:
    return encoding.replace("-", "").replace("_", "").lower() == "utf8"


def _read_csv(path: str, text: bytes, options: CsvOptions,
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
        raise PermanentSourceError(path, f"cannot parse as CSV: {_first_line(exc)}") from None
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


def table_as_raw(path: str, table: pa.Table) -> RawFile:
    """Any Arrow table (a custom reader's, say) as raw strings numbered 1..n."""
    strings = _as_strings(path, table)
    lines = pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64))
    return RawFile(path=path, table=strings.append_column(LINE, lines))


def _read_jsonl(path: str, text: bytes) -> RawFile:
    """Fast path: pyarrow reads the whole file. If a line is malformed, parse line by line
    so the good lines still load and each bad one becomes a `malformed_json` reject."""
    try:
        table = pajson.read_json(pa.BufferReader(text))
    except pa.ArrowInvalid:
        return _read_jsonl_lines(path, text)
    if any(pa.types.is_timestamp(t) or pa.types.is_date(t) for t in table.schema.types):
        return _read_jsonl_lines(path, text)  # keep date-like strings exactly as written
    strings = _as_strings(path, table)
    if _BLANK_LINE.search(text) or not text[:1].strip():
        numbers = [i for i, line in enumerate(text.splitlines(), 1) if line.strip()]
        lines = pa.array(numbers, pa.int64())
    else:
        lines = pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64))
    return RawFile(path=path, table=strings.append_column(LINE, lines), text=text)


def _read_jsonl_lines(path: str, text: bytes) -> RawFile:
    records, numbers, bad = [], [], []
    for number, line in enumerate(text.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"expected an object, got {type(record).__name__}")
        except ValueError as exc:
            bad.append(RaggedRow(line=number, text=line, fields=0, rule="malformed_json",
                                 detail=str(exc).splitlines()[0]))
            continue
        records.append({k: None if v is None else v if isinstance(v, str) else json.dumps(v)
                        for k, v in record.items()})
        numbers.append(number)
    if not records and bad:
        raise PermanentSourceError(path, f"no valid JSON line (line {bad[0].line}: {bad[0].detail})")
    table = pa.Table.from_pylist(records) if records else pa.table({})
    table = _as_strings(path, table).append_column(LINE, pa.array(numbers, pa.int64()))
    return RawFile(path=path, table=table, ragged=bad, text=text)


def _read_parquet(path: str, data: bytes) -> RawFile:
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise PermanentSourceError(path, f"cannot read as Parquet: {_first_line(exc)}") from None
    strings = _as_strings(path, table)
    lines = pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64))
    return RawFile(path=path, table=strings.append_column(LINE, lines))


def _as_strings(path: str, table: pa.Table) -> pa.Table:
    """Every column as strings, named as `header_names` names a CSV header's cells."""
    table = table.rename_columns(header_names(table.column_names))
    try:
        return table.cast(pa.schema([(n, pa.string()) for n in table.column_names]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise PermanentSourceError(path, f"nested or unsupported column type: {exc}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def type_name(arrow_type: pa.DataType) -> str:
    checks = [(pa.types.is_boolean, "bool"), (pa.types.is_int32, "int32"),
              (pa.types.is_integer, "int64"), (pa.types.is_floating, "float64"),
              (pa.types.is_date, "date"), (pa.types.is_timestamp, "timestamp")]
    for check, name in checks:
        if check(arrow_type):
            return name
    if pa.types.is_decimal(arrow_type):
        return f"decimal({arrow_type.precision},{arrow_type.scale})"
    return "string"
