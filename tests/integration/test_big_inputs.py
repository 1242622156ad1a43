"""Compressed input is read with a cap, and lineage columns never overflow.

A small gzip can expand to gigabytes: it is read as a stream and quarantined once past
`[source] max_file_bytes`, while the other files of its batch commit. The lineage
columns (`_file`, `_batch_id`) are built in bounded chunks: rows × path length passes
the 2 GiB of one Arrow string array for a big enough file.
"""

from __future__ import annotations

import gzip
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_PARTIAL, invoke
from batchrun.config import CsvOptions
from batchrun.errors import PermanentSourceError
from batchrun.layout import FILE
from batchrun.pipeline import LINEAGE_CHUNK_BYTES, _constant, _file_column, _sorted_by_file_and_line
from batchrun.readers.source import _READ_CHUNK, gzip_size_estimate, read_file
from tests.conftest import parse_json, staged_counts

CAP = 20_000_000


def bomb(path: Path, megabytes: int = 50) -> Path:
    """~`megabytes` MB of repetitive CSV, gzipped (a few hundred KB)."""
    block = b"".join(b"%d,1.00,name\n" % i for i in range(1000))
    with gzip.open(path, "wb", compresslevel=6) as handle:
        handle.write(b"order_id,price,name\n")
        for _ in range(megabytes * 10**6 // len(block)):
            handle.write(block)
    return path


def test_a_gzip_past_max_file_bytes_is_quarantined_and_the_rest_of_its_batch_commits(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], ray_session: None) -> None:
    data = tmp_path / "in"
    data.mkdir()
    bomb(data / "a_bomb.csv.gz")
    (data / "b.csv").write_bytes(b"order_id,price,name\n1,1.00,a\n2,2.00,b\n3,x,c\n")
    with gzip.open(data / "c.csv.gz", "wb") as handle:
        handle.write(b"order_id,price,name\n4,4.00,d\n")
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "bomb"\ntable = "orders"\n[source]\npaths = ["in/*"]\n'
                   'max_file_bytes = "20MB"\n[staging]\ndir = "staging"\n'
                   "[schema.columns]\norder_id = { type = \"int64\" }\n"
                   "price = { type = \"decimal(12,2)\" }\nname = { type = \"string\" }\n")
    code = invoke(["run", str(job), "--state-dir", str(tmp_path / "s"), "--json", "--no-progress"])
    output = capsys.readouterr()
    assert "Traceback" not in output.out + output.err
    assert code == EXIT_PARTIAL
    assert staged_counts(tmp_path / "s") == {"rows": 3, "distinct": 3, "rejected": 1}
    catalog = Catalog(tmp_path / "s")
    assert len(catalog.batches(catalog.latest_run_id())) == 1  # one batch, three files
    report = parse_json(output.out)
    assert "decompresses past max_file_bytes 20MB" in str(report)


def test_the_capped_reader_never_holds_more_than_the_cap_and_one_chunk(tmp_path: Path) -> None:
    path = bomb(tmp_path / "bomb.csv.gz")
    tracemalloc.start()
    try:
        with pytest.raises(PermanentSourceError, match="decompresses past max_file_bytes 20MB"):
            read_file(str(path), "csv", CsvOptions(), max_bytes=CAP)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= CAP + 2 * _READ_CHUNK


def test_a_plain_file_past_max_file_bytes_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"id\n" + b"1\n" * 1000)
    with pytest.raises(PermanentSourceError, match="larger than max_file_bytes 1KB"):
        read_file(str(path), "csv", CsvOptions(), max_bytes=1000)


def test_the_gzip_size_estimate_is_the_decompressed_size(tmp_path: Path) -> None:
    path = bomb(tmp_path / "bomb.csv.gz", megabytes=5)
    with gzip.open(path, "rb") as handle:
        size = len(handle.read())
    assert gzip_size_estimate(str(path)) == size > 10 * path.stat().st_size
    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"id\n1\n")
    assert gzip_size_estimate(str(plain)) == 5


def test_lineage_columns_come_in_bounded_chunks_sharing_one_buffer() -> None:
    path = "/data/" + "x" * 200 + "/file.csv"
    rows = 2**31 // len(path) + 10_000  # past 2 GiB of path text
    column = _constant(path, rows)
    assert len(column) == rows and column.num_chunks > 1
    assert all(chunk.nbytes <= LINEAGE_CHUNK_BYTES + 8 * len(chunk) for chunk in column.chunks)
    assert pa.total_allocated_bytes() < 2**30  # the full chunks are one shared array
    files = _file_column([("a.csv", 3), (path, 5), ("c.csv", 0)])
    assert files.to_pylist() == ["a.csv"] * 3 + [path] * 5


def test_a_table_with_more_than_2_gib_of_file_names_sorts_without_overflow() -> None:
    path = "/data/" + "x" * 200 + "/file.csv"
    rows = 2**31 // len(path) + 10_000
    started = time.monotonic()
    table = pa.table({"v": pa.array(np.arange(rows, dtype=np.int32)),
                      FILE: _constant(path, rows),
                      "_line": pa.array(np.arange(rows, 0, -1, dtype=np.int64))})
    ordered = _sorted_by_file_and_line(table)
    assert ordered.column_names == ["v", FILE, "_line"]
    assert ordered["_line"][0].as_py() == 1 and ordered["v"][0].as_py() == rows - 1
    assert ordered[FILE].num_chunks > 1 and len(ordered) == rows
    assert time.monotonic() - started < 60  # generous: a shared 2-core machine


def test_a_truncated_gzip_is_estimated_at_its_own_size_not_its_cut_trailer(tmp_path: Path) -> None:
    path = tmp_path / "cut.csv.gz"
    whole = gzip.compress(b"a,b\n" + b"".join(b"%d,x\n" % i for i in range(5000)))
    path.write_bytes(whole[:40] + b"\xff\xff\xff\x7f")  # a trailer claiming ~2 GB
    assert gzip_size_estimate(str(path)) == 44
