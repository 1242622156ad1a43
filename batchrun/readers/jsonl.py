"""JSON Lines: one object per line; a malformed line is a `malformed_json` reject."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from batchrun.errors import PermanentSourceError
from batchrun.layout import LINE
from batchrun.readers.raw import BLANK_LINE, RaggedRow, RawFile, as_strings


def read_jsonl(path: str, text: bytes) -> RawFile:
    """Fast path: pyarrow reads the whole file. If a line is malformed, parse line by line
    so the good lines still load and each bad one becomes a `malformed_json` reject."""
    try:
        table = pajson.read_json(pa.BufferReader(text))
    except pa.ArrowInvalid:
        return read_jsonl_lines(path, text)
    if any(pa.types.is_timestamp(t) or pa.types.is_date(t) for t in table.schema.types):
        return read_jsonl_lines(path, text)  # keep date-like strings exactly as written
    strings = as_strings(path, table)
    if BLANK_LINE.search(text) or not text[:1].strip():
        numbers = [i for i, line in enumerate(text.splitlines(), 1) if line.strip()]
        lines = pa.array(numbers, pa.int64())
    else:
        lines = pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64))
    return RawFile(path=path, table=strings.append_column(LINE, lines), text=text)


def read_jsonl_lines(path: str, text: bytes) -> RawFile:
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
    table = as_strings(path, table).append_column(LINE, pa.array(numbers, pa.int64()))
    return RawFile(path=path, table=table, ragged=bad, text=text)
