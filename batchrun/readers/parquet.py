"""Parquet input: every column as strings, rows numbered 1..n."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.errors import PermanentSourceError
from batchrun.layout import LINE
from batchrun.readers.raw import RawFile, as_strings, first_line


def read_parquet(path: str, data: bytes) -> RawFile:
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise PermanentSourceError(path, f"cannot read as Parquet: {first_line(exc)}") from None
    strings = as_strings(path, table)
    lines = pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64))
    return RawFile(path=path, table=strings.append_column(LINE, lines))
