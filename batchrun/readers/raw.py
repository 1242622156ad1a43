"""What every reader returns: a file's cells as raw strings plus `_line`, and its ragged rows.

Every reader returns the same shape: one string column per input column (the raw cell,
as it appears in the file) and `_line`, the 1-based line of the row in the file as an
editor shows it (header and quoted newlines counted). Rows the parser cannot split into
the right number of fields come back separately as `RaggedRow`s. Anything that makes
the whole file unreadable raises `PermanentSourceError` with a one-line reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from batchrun.errors import PermanentSourceError
from batchrun.layout import LINE
from batchrun.readers.header import has_lone_cr, header_names

BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")
"""Two line breaks with only blanks between them: a blank line (CSV and JSON Lines)."""


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


def table_as_raw(path: str, table: pa.Table) -> RawFile:
    """Any Arrow table (a custom reader's, say) as raw strings numbered 1..n."""
    strings = as_strings(path, table)
    lines = pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64))
    return RawFile(path=path, table=strings.append_column(LINE, lines))


def as_strings(path: str, table: pa.Table) -> pa.Table:
    """Every column as strings, named as `header_names` names a CSV header's cells."""
    table = table.rename_columns(header_names(table.column_names))
    try:
        return table.cast(pa.schema([(n, pa.string()) for n in table.column_names]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise PermanentSourceError(path, f"nested or unsupported column type: {exc}") from None


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
