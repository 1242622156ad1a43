#!/usr/bin/env python
"""Which checksum for committed Parquet files: time each candidate on real output.

    .venv/bin/python scripts/bench_checksum.py [--mb 40] [--rounds 7]
    .venv/bin/python scripts/bench_checksum.py --worker-ab DATA_DIR [--rounds 3]

Writes one Parquet file of about `--mb` MB from the demo generator's data (the typed
schema of configs/demo.toml, as a worker writes it), reads it once so it is in the page
cache (as the worker's just-written temporary file is), then hashes it with each
candidate the way the worker does (an mmap of the file, one update call) and prints the
median MB/s over `--rounds`. xxhash is timed only when it is installed.

`--worker-ab DATA_DIR` (a `batchrun demo` folder) measures what the checksum costs a
worker: one in-process `BatchPipeline` (no Ray, so no start-up noise) processes each
supplier folder as one batch, with the checksum and without it (the hash replaced by a
stat), the two back to back in alternating order, `--rounds` times. It prints the total
CPU time of each (a worker is CPU-bound, and CPU time is what other processes on a
shared machine disturb least) and the median of the paired per-batch ratios.
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
from loguru import logger

from batchrun import pipeline as worker
from batchrun.config import load_job
from batchrun.layout import describe_written
from batchrun.model import BatchTask, WrittenFile
from batchrun.pipeline import PipelineSpec
from batchrun.tools.demo import DemoSpec, generate

REPO = Path(__file__).resolve().parents[1]


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


def _without_checksum(path: str | Path) -> WrittenFile:
    return WrittenFile(path=str(path), size=Path(path).stat().st_size, checksum="")


def worker_ab(data: Path, rounds: int) -> None:
    job = load_job(REPO / "configs" / "demo.toml")
    columns = dict(job.config.schema_.columns) if job.config.schema_ else {}
    batches = [tuple(str(p) for p in sorted(d.iterdir())) for d in sorted(data.iterdir())
               if d.is_dir()]
    logger.remove()  # the worker's debug lines
    totals: dict[str, float] = {"with": 0.0, "without": 0.0}
    ratios = []
    with tempfile.TemporaryDirectory() as staging:
        spec = PipelineSpec(run_id="ab", table="orders", staging_dir=staging, fmt="csv",
                          csv=job.config.source.csv, columns=columns,
                          validation=job.config.validation, threads=1)
        batch_worker = worker.BatchPipeline(0, spec)
        for round_number in range(rounds):
            for n, files in enumerate(batches):
                order = ["with", "without"] if (n + round_number) % 2 else ["without", "with"]
                seconds = {side: _timed(batch_worker, files, side) for side in order}
                ratios.append(seconds["with"] / seconds["without"])
                for side in order:
                    totals[side] += seconds[side]
    print(f"{len(batches)} batches x {rounds} rounds, CPU time: with checksum {totals['with']:.2f} s,"
          f" without {totals['without']:.2f} s ({totals['with'] / totals['without'] - 1:+.2%});"
          f" median per-batch ratio {statistics.median(ratios) - 1:+.2%}")


def _timed(batch_worker: worker.BatchPipeline, files: tuple[str, ...], side: str) -> float:
    worker.describe_written = describe_written if side == "with" else _without_checksum
    started = time.process_time()
    result = batch_worker.process(BatchTask(batch_id=f"{side}-{len(files)}", files=files))
    elapsed = time.process_time() - started
    for path in (result.output_path, result.rejects_path):
        if path:
            Path(path).unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--worker-ab", type=Path, metavar="DATA_DIR")
    args = parser.parse_args()
    if args.worker_ab:
        worker_ab(args.worker_ab, args.rounds)
        return
    with tempfile.TemporaryDirectory() as scratch:
        path = parquet_file(Path(scratch), args.mb)
        path.read_bytes()  # warm the page cache
        print(f"{path.stat().st_size / 1e6:.1f} MB Parquet file, median of {args.rounds} rounds")
        for name, hasher in candidates().items():
            print(f"{name:18} {median_mb_per_s(path, hasher, args.rounds):8,.0f} MB/s")


if __name__ == "__main__":
    main()
