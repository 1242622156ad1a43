"""Reading one source file: its bytes (decompressed, capped, decoded) and the format's reader.

Compression is detected from the extension; a file past `max_file_bytes` (decompressed)
is refused while it is read, not after.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from batchrun import objectstore
from batchrun.config import CsvOptions
from batchrun.errors import PermanentSourceError, SourceError, TransientSourceError
from batchrun.layout import bytes_checksum
from batchrun.readers.csv import UTF8_BOM, read_csv
from batchrun.readers.jsonl import read_jsonl
from batchrun.readers.parquet import read_parquet
from batchrun.readers.raw import RawFile


def read_file(path: str, fmt: str, options: CsvOptions,
              column_names: list[str] | None = None, max_bytes: int | None = None) -> RawFile:
    """Read any supported file; compression is detected from the extension.

    `column_names` names the columns of a CSV without a header (by position); a file
    past `max_bytes` (decompressed) is refused with a PermanentSourceError.
    """
    return read_data(path, read_bytes(path, max_bytes), fmt, options, column_names)


def read_data(path: str, data: bytes, fmt: str, options: CsvOptions,
              column_names: list[str] | None = None) -> RawFile:
    """`read_file` on bytes already read (schema inference reads a file's head)."""
    if fmt == "parquet":
        return read_parquet(path, data)
    encoding = options.encoding if fmt == "csv" else "utf-8"
    if not data or (data[:1].isspace() and not data.strip()):
        raise PermanentSourceError(path, "empty file (no header, no rows)")
    if b"\0" in data[:8192] and not encoding.replace("-", "").lower().startswith(("utf16", "utf32")):
        raise PermanentSourceError(path, "binary content (NUL bytes), not text")
    text = _decode(path, data, encoding)
    if fmt == "jsonl":
        return read_jsonl(path, text)
    return read_csv(path, text, options, column_names)


_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
"""The suffixes Arrow's compression="detect" decompresses (case-sensitive, as Arrow's);
other files are read plainly: one copy instead of Arrow's buffer plus a bytes copy."""


_READ_CHUNK = 8 * 2**20
"""A compressed file is decompressed this many bytes at a time, checked against the cap."""


@contextmanager
def open_stream(path: str) -> Iterator[Any]:
    """The file as a binary stream (decompressed by its suffix); errors as SourceErrors."""
    if objectstore.is_object(path):
        with _object_stream(path) as stream:
            yield stream
        return
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


@contextmanager
def _object_stream(path: str) -> Iterator[Any]:
    """An object as a stream through pyarrow's S3 file system: a plain one random-access
    (its size known before reading), a compressed one decompressed as it streams."""
    where = objectstore.Location.of(path).arrow_path
    try:
        system = objectstore.filesystem()
        if path.endswith(_COMPRESSED):
            with system.open_input_stream(where, compression="detect") as stream:
                yield stream
        else:
            with system.open_input_file(where) as stream:
                yield stream
    except (zlib.error, pa.ArrowInvalid) as exc:
        raise PermanentSourceError(path, f"corrupt or truncated compression: {exc}") from None
    except OSError as exc:
        raise _source_error(path, objectstore.arrow_error(path, exc)) from None


def _source_error(path: str, exc: objectstore.ObjectStoreError) -> SourceError:
    if exc.status == 404:
        return PermanentSourceError(path, "file not found (deleted after planning?)")
    if exc.status == 403:
        return PermanentSourceError(path, f"permission denied ({exc.reason})")
    if _looks_like_corrupt_compression(exc):
        return PermanentSourceError(path, f"corrupt or truncated compression: {exc.reason}")
    return TransientSourceError(path, f"I/O error: {exc.reason}")


def _stream_size(path: str, stream: Any) -> int:
    return stream.size() if objectstore.is_object(path) else os.fstat(stream.fileno()).st_size


def read_bytes(path: str, limit: int | None = None) -> bytes:
    """The whole (decompressed) file. Past `limit` bytes it is refused: a plain file by
    its size, before reading; a compressed one as soon as the stream passes the limit,
    so at most limit + one chunk is ever held."""
    with open_stream(path) as stream:
        if not path.endswith(_COMPRESSED):
            if limit is not None and _stream_size(path, stream) > limit:
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


def read_checksum(path: str, data: bytes) -> str | None:
    """What `identity.content_checksum` gives the file, from `data`, its bytes just read:
    saves reading it again (0.013 s of CPU per 64 MB batch). For a plain local file only:
    a compressed file's `data` is decompressed, and an object's checksum is its ETag."""
    if objectstore.is_object(path) or path.endswith(_COMPRESSED):
        return None
    return bytes_checksum(data)


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
    a gzip or the trailer is clearly wrong: smaller than the file (a multi-member gzip or
    one past 4 GiB), or more than deflate's 1032:1 can expand it (a truncated gzip, whose
    last four bytes are whatever the cut left: it counted 3.3 GB for a 7 kB file). An
    estimate: never trusted for the per-file cap, which is counted."""
    size = os.path.getsize(path)
    if not path.endswith(".gz") or size < 18:
        return size
    with open(path, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            return size
        handle.seek(-4, os.SEEK_END)
        isize = int.from_bytes(handle.read(4), "little")
    return isize if size <= isize <= size * _DEFLATE_MAX_RATIO else size


_DEFLATE_MAX_RATIO = 1032


def _looks_like_corrupt_compression(exc: Exception) -> bool:
    message = str(exc).lower()
    return any(word in message for word in ("gzip", "zstd", "compress", "truncated",
                                            "inflate", "bz2", "lz4", "zlib"))


def _decode(path: str, data: bytes, encoding: str) -> bytes:
    """Return UTF-8 without a BOM, or say where the text stops decoding."""
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PermanentSourceError(
            path, f"not valid {encoding} text at line {line} (byte {exc.start})") from None
    except LookupError:
        raise PermanentSourceError(path, f"unknown encoding {encoding!r}") from None
    return data if encoding.replace("-", "").lower() == "utf8" else text.encode("utf-8")


def _is_utf8(encoding: str) -> bool:
    return encoding.replace("-", "").replace("_", "").lower() == "utf8"
