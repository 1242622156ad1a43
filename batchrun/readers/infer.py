"""Schema inference for a job without `[schema]`: column names and types from a sample.

Inference reads the first few files in plan order (a bounded head of each) with the very
reader the workers use, so a file reads the same way at inference and at work: the
job's `[source.csv]` settings, bad rows tolerated (they become rejects later), header
cells named by `header.header_names`. A file that cannot be read (empty, binary,
undecodable, ...) is skipped for the next one; if none can be read, `CannotInferSchema`
names the files and why. Types are guessed from the raw cells, only as narrow as every
sampled value allows: a later value that breaks the guess is a reject, not a crash.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchrun import objectstore
from batchrun.coltypes import arrow_type, name_of_arrow
from batchrun.config import CsvOptions
from batchrun.errors import BatchrunError, SourceError
from batchrun.layout import LINE
from batchrun.readers.header import header_names
from batchrun.readers.raw import table_as_raw
from batchrun.readers.source import open_stream, read_data

SAMPLE_FILES = 3
"""Files whose types are merged (the first readable one gives the columns)."""
MAX_TRIES = 10
"""Files tried, at most, to find the samples: unreadable ones are skipped."""
SAMPLE_BYTES = 4 * 2**20
"""Decompressed bytes read from the head of each sampled file."""
_REASON_CHARS = 160
_INTEGER = r"^[+-]?[0-9]+$"
_LEADING_ZERO = r"^[+-]?0[0-9]"
"""A number with a leading zero ("08123": a zip code, an account number) keeps its text:
its column is a string, never 8123."""
_GUESSES: tuple[tuple[str, pa.DataType], ...] = tuple(
    (name, arrow_type(name)) for name in ("float64", "bool", "date", "timestamp"))


class CannotInferSchema(BatchrunError):
    """No sampled file gave a header: the job needs a readable file or a `[schema]`."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(reasons)
        self.reasons = reasons

    def __str__(self) -> str:
        return (f"cannot infer the columns from the first {len(self.reasons)} file(s) "
                f"({'; '.join(self.reasons)}); fix them or add a [schema] section")


def infer_schema(paths: list[str], fmt: str, options: CsvOptions) -> dict[str, str]:
    """Column → batchrun type, from the first readable files of `paths` (plan order)."""
    return _infer(paths, lambda path: _sample(path, fmt, options))


def infer_with_reader(paths: list[str], reader: Callable[[str], pa.Table]) -> dict[str, str]:
    """The same, through a custom reader (path → Table); a failing call skips the file."""
    def sample(path: str) -> dict[str, str | None]:
        try:
            table = reader(path)
        except Exception as exc:  # noqa: BLE001 - user code: any failure skips the file
            raise SourceError(path, f"the reader failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(table, pa.Table):
            raise SourceError(path, f"the reader returned {type(table).__name__}, not a Table")
        return _guess_table(table_as_raw(path, table).table)
    return _infer(paths, sample)


def _infer(paths: list[str], sample: Callable[[str], dict[str, str | None]]
           ) -> dict[str, str]:
    samples: list[dict[str, str | None]] = []
    reasons: list[str] = []
    for path in paths[:MAX_TRIES]:
        try:
            samples.append(sample(path))
        except SourceError as exc:
            reasons.append(f"{path}: {exc.reason}"[:_REASON_CHARS])
        except Exception as exc:  # noqa: BLE001 - inference must never crash a run's start
            reasons.append(f"{path}: {type(exc).__name__}: {exc}"[:_REASON_CHARS])
        if len(samples) == SAMPLE_FILES:
            break
    if not samples:
        raise CannotInferSchema(reasons)
    return _merged(samples)


def _merged(samples: list[dict[str, str | None]]) -> dict[str, str]:
    """The first sample's columns, each at the narrowest type all samples allow."""
    columns: dict[str, str] = {}
    for name in samples[0]:
        kinds = {s[name] for s in samples if s.get(name) is not None}
        columns[name] = _widest(kinds)
    return columns


def _widest(kinds: set[str | None]) -> str:
    if len(kinds) == 1:
        return str(next(iter(kinds)))
    return "float64" if kinds == {"int64", "float64"} else "string"


def _sample(path: str, fmt: str, options: CsvOptions) -> dict[str, str | None]:
    if fmt == "parquet":
        return _parquet_types(path)
    data = _head(path, options.encoding if fmt == "csv" else "utf-8")
    return _guess_table(read_data(path, data, fmt, options).table)


def _parquet_types(path: str) -> dict[str, str | None]:
    """An object is read through batchrun's S3 file system: given a bare `s3://` URI,
    pyarrow would make its own, which ignores `[storage]` and may ask AWS for the region."""
    try:
        if objectstore.is_object(path):
            schema = pq.read_schema(objectstore.Location.of(path).arrow_path,
                                    filesystem=objectstore.filesystem())
        else:
            schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        reason = objectstore.arrow_error(path, exc).reason \
            if objectstore.is_object(path) and isinstance(exc, OSError) else str(exc)
        raise SourceError(path, f"cannot read as Parquet: {reason}") from None
    return dict(zip(header_names(schema.names), (name_of_arrow(t) for t in schema.types)))


def _head(path: str, encoding: str) -> bytes:
    """Up to SAMPLE_BYTES of the (decompressed) file, cut after its last whole line."""
    with open_stream(path) as stream:
        data = stream.read(SAMPLE_BYTES + 1)
    if len(data) <= SAMPLE_BYTES:
        return data
    try:
        text = codecs.getincrementaldecoder(encoding)().decode(data[:SAMPLE_BYTES])
    except (LookupError, UnicodeDecodeError):
        return data[:SAMPLE_BYTES]  # the reader names the problem
    end = text.rfind("\n")
    if end < 0:
        raise SourceError(path, f"first line longer than {SAMPLE_BYTES // 2**20} MiB")
    return text[:end + 1].encode(encoding)


def _guess_table(table: pa.Table) -> dict[str, str | None]:
    return {name: _guess(table.column(name)) for name in table.column_names if name != LINE}


def _guess(column: pa.ChunkedArray) -> str | None:
    """The narrowest type every non-empty value casts to; None when there is no value."""
    values = column.filter(pc.greater(pc.binary_length(column), 0))
    if len(values) == 0:
        return None
    if pc.any(pc.match_substring_regex(values, _LEADING_ZERO)).as_py():
        return "string"
    if pc.all(pc.match_substring_regex(values, _INTEGER)).as_py():
        try:
            values.cast(pa.int64())
            return "int64"
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return "string"  # digits past int64
    for name, kind in _GUESSES:
        try:
            values.cast(kind)
            return name
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return "string"
