#!/usr/bin/env python
"""Which checksum for committed Parquet files: time each candidate on real output.

    .venv/bin/python scripts/bench_checksum.py [--mb 40] [--rounds 7]

Writes one Parquet file of about `--mb` MB from the demo generator's data (the typed
schema of configs/demo.toml, as a worker writes it), reads it once so it is in the page
cache (as the worker's just-written temporary file is), then hashes it with each
candidate the way the worker does (an mmap of the file, one update call) and prints the
median MB/s over `--rounds`. xxhash is timed only when it is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batchrun.demo import DemoSpec, generate


def candidates() -> dict[str, Callable[[memoryview], object]]:
    found: dict[str, Callable[[memoryview], object]] = {
        "zlib.crc32": zlib.crc32,
        "hashlib.sha256": lambda data: hashlib.sha256(data).digest(),
        "hashlib.blake2b": lambda data: hashlib.blake2b(data).digest(),
        "hashlib.md5": lambda data: hashlib.md5(data).digest(),
    }
    try:
        import xxhash
    except ImportError:
        return found
    found["xxhash.xxh3_64"] = xxhash.xxh3_64_digest
    found["xxhash.xxh3_128"] = xxhash.xxh3_128_digest
    return found


def parquet_file(directory: Path, megabytes: float) -> Path:
    data = directory / "data"
    generate(DemoSpec(out_dir=data, suppliers=4, files_per_supplier=5,
                      file_bytes=int(megabytes * 0.3e6), seed=3))
    tables = [pacsv.read_csv(p) for p in sorted(data.rglob("*.csv"))]
    table = pa.concat_tables(tables, promote_options="default")
    path = directory / "out.parquet"
    pq.write_table(table, path, row_group_size=1 << 20)
    return path


def median_mb_per_s(path: Path, hasher: Callable[[memoryview], object], rounds: int) -> float:
    """Open, map and hash the file each round, as the worker does once per output."""
    size = path.stat().st_size
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        with open(path, "rb") as handle, \
                mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            hasher(memoryview(view))
        seconds.append(time.perf_counter() - started)
    return size / 1e6 / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = parquet_file(Path(scratch), args.mb)
        path.read_bytes()  # warm the page cache
        print(f"{path.stat().st_size / 1e6:.1f} MB Parquet file, median of {args.rounds} rounds")
        for name, hasher in candidates().items():
            print(f"{name:18} {median_mb_per_s(path, hasher, args.rounds):8,.0f} MB/s")


if __name__ == "__main__":
    main()
