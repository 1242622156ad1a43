"""The staged files' Parquet encoding: what it changes on disk, and what it must not."""

from __future__ import annotations

import decimal
import gzip
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.config import ColumnSpec, CsvOptions
from batchrun.layout import file_checksum, write_parquet_atomically
from batchrun.model import BatchTask
from batchrun.pipeline import BatchPipeline, PipelineSpec


def test_text_columns_are_dictionary_encoded_and_numbers_plain_with_the_schema_kept(
        tmp_path: Path) -> None:
    table = pa.table({
        "order_id": pa.array(range(1000), pa.int64()),
        "price": pa.array([decimal.Decimal("1.25")] * 1000, pa.decimal128(12, 2)),
        "at": pa.array([datetime(2025, 1, 1)] * 1000, pa.timestamp("us")),
        "status": pa.array(["shipped", "open"] * 500, pa.string()),
        "_file": pa.array(["a.csv"] * 1000, pa.string()),
    })
    written = write_parquet_atomically(table, tmp_path / "b.parquet")
    meta = pq.ParquetFile(written.path).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings
                 for i in range(meta.num_columns)}
    assert all("RLE_DICTIONARY" in encodings[name] for name in ("status", "_file"))
    assert not any("RLE_DICTIONARY" in encodings[name] for name in ("order_id", "price", "at"))
    assert pq.read_table(written.path).equals(table)
    query = f"SELECT count(*), sum(order_id) FROM '{written.path}'"
    assert duckdb.connect().execute(query).fetchone() == (1000, 499500)
    assert written.checksum == file_checksum(written.path)


def test_each_staged_file_records_the_checksum_of_its_bytes_plain_or_compressed(
        tmp_path: Path) -> None:
    """The fast path hashes the bytes it read (no second read); a gzip's record is still
    the checksum of the file on disk, not of its decompressed text."""
    text = "id,name\n" + "".join(f"{i},n{i}\n" for i in range(2000))
    plain, packed = tmp_path / "a.csv", tmp_path / "b.csv.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    spec = PipelineSpec(run_id="r", table="t", staging_dir=str(tmp_path / "staging"), fmt="csv",
                        csv=CsvOptions(), columns={"id": ColumnSpec(type="int64"),
                                                   "name": ColumnSpec(type="string")})
    result = BatchPipeline(0, spec).process(BatchTask(batch_id="b", files=(str(plain), str(packed))))
    assert {Path(f.path).name: (f.rows_staged, f.checksum) for f in result.files} == {
        "a.csv": (2000, file_checksum(plain)), "b.csv.gz": (2000, file_checksum(packed))}
