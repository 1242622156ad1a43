"""Readers: one source file in, its cells as raw strings plus line numbers out.

- `source.py`  the file's bytes (decompressed, capped, decoded) and the dispatch by format
- `csv.py`     the reference CSV reader (exact line numbers, blank and ragged rows)
- `fastcsv.py` the fast path for clean CSV: many files parsed and typed at once
- `header.py`  line breaks, the header line and its column names (one rule for all readers)
- `jsonl.py`, `parquet.py`   the other formats
- `custom.py`  user code (`module:function` readers and transforms)
- `infer.py`   schema inference from a sample, with the workers' own reader
- `raw.py`     `RawFile`, the shape every reader returns
"""
