#!/usr/bin/env python
"""Per-batch CPU of the worker pipeline, next to the bare pyarrow loop, in one process.

    .venv/bin/python scripts/profile_batch.py                       # 64 MB and 200 MB batches
    .venv/bin/python scripts/profile_batch.py --batch-mb 64 --batches 3 --rounds 3
    .venv/bin/python scripts/profile_batch.py --rss                 # peak RSS per batch size
    py-spy record --native -o x.svg -- .venv/bin/python scripts/profile_batch.py --no-bare

What it measures
----------------
* `BatchPipeline(...).process(task)` (no Ray: what one worker actor runs) on batches cut
  from the files of `--data` (default: supplier_00 of the 4 GB bench shape, 100 × 2 MB)
  the way the planner cuts them (consecutive files, at most `--batch-mb` MB each), with
  the demo job's schema and rules (configs/demo.toml), one thread, as a worker runs.
* The bare loop of scripts/bench.py's pyarrow_1thread / pyarrow_2proc contender on the
  same files in the same process: `pacsv.read_csv(path, convert_options=column_types)`
  then `pq.write_table`, one file at a time, one thread.
* CPU seconds (time.process_time: every thread of this process), not wall: the machine
  may be shared. Rounds alternate pipeline and bare, and the median of each is reported.
* The breakdown: the pipeline's stages are wrapped (in this process only) with timers
  that count exclusive CPU: read+parse (fast path), clean check, slow validation, lineage
  columns, input checksum, identity checks, Parquet encode, output checksum; `other`
  is the rest of `process` (fsync, rename, result). Also per loop: its system CPU and
  minor page faults (memory first touched), from getrusage.
* `--rss`: each batch size in a fresh child process, one batch, its ru_maxrss against
  the RSS it had before the batch and the batch's input bytes.
MB are 10**6 bytes of CSV on disk.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path("/work/bench-data/4gb-2000x2000000-s42/supplier_00")

# -- exclusive CPU timers around named functions ------------------------------------------

_spent: dict[str, float] = defaultdict(float)
_stack: list[float] = []
"""Per open timed call, the CPU its timed callees used (subtracted from it)."""


def _timed(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        _stack.append(0.0)
        try:
            return function(*args, **kwargs)
        finally:
            inner = _stack.pop()
            elapsed = time.process_time() - start
            _spent[label] += elapsed - inner
            if _stack:
                _stack[-1] += elapsed
    return wrapper


def _instrument() -> None:
    """Wrap the pipeline's stages (module globals and methods it calls by name)."""
    from batchrun import layout, pipeline
    from batchrun.fastcheck import CleanCheck
    from batchrun.validate import Validator

    for module, name, label in (
            (pipeline, "read_csv_fast_batch", "read+parse"),
            (pipeline, "read_file", "read+parse (slow)"),
            (pipeline, "_file_column", "lineage"), (pipeline, "_constant", "lineage"),
            (pipeline, "content_checksum", "input checksum"),
            (pipeline, "change_since_planning", "identity checks"),
            (pipeline, "check_not_changed_while_read", "identity checks"),
            (pipeline, "_sorted_by_file_and_line", "sort (slow path)"),
            (layout, "_write_table", "parquet encode"),
            (layout, "describe_written", "output checksum")):
        setattr(module, name, _timed(label, getattr(module, name)))
    CleanCheck.typed_if_clean = _timed("clean check", CleanCheck.typed_if_clean)  # type: ignore[method-assign]
    Validator.validate = _timed("validate (slow)", Validator.validate)  # type: ignore[method-assign]


# -- the job and its batches ----------------------------------------------------------------


def _columns(job_file: Path) -> dict[str, Any]:
    from batchrun.config import load_job

    config = load_job(job_file).config
    assert config.schema_ is not None
    columns = dict(config.schema_.columns)
    columns["order_id"] = columns["order_id"].model_copy(update={"unique": True})
    return columns


def _batches(data: Path, batch_mb: float, count: int) -> list[list[str]]:
    """Consecutive files, at most batch_mb MB a batch (one file at least), as planned.
    The parts and totals are scaled to a batch of exactly batch_mb MB."""
    limit = batch_mb * 1e6
    batches: list[list[str]] = [[]]
    size = 0
    for path in sorted(str(p) for p in data.glob("*.csv")):
        grows = os.path.getsize(path)
        if batches[-1] and size + grows > limit:
            if len(batches) == count:
                break
            batches.append([])
            size = 0
        batches[-1].append(path)
        size += grows
    return batches[:count]


def _pipeline(job_file: Path, staging: Path) -> Any:
    from batchrun.config import load_job
    from batchrun.pipeline import BatchPipeline, PipelineSpec

    config = load_job(job_file).config
    spec = PipelineSpec(run_id="profile", table="orders", staging_dir=str(staging),
                        fmt="csv", csv=config.source.csv, columns=_columns(job_file),
                        validation=config.validation, threads=1)
    return BatchPipeline(0, spec)


def _task(paths: list[str], index: int) -> Any:
    from batchrun.identity import fingerprint
    from batchrun.model import BatchTask

    return BatchTask(batch_id=f"b{index:04d}", files=tuple(paths),
                     expected=tuple(fingerprint(p) for p in paths))


def _arrow_types(job_file: Path) -> dict[str, Any]:
    from batchrun.coltypes import arrow_type

    return {name: arrow_type(spec.type) for name, spec in _columns(job_file).items()}


# -- the two loops ---------------------------------------------------------------------------


_faults: dict[str, list[float]] = defaultdict(list)
"""Per round of each loop: system CPU seconds and minor page faults (memory first touched)."""


def _counted(loop: str, run: Callable[[], None]) -> float:
    """CPU seconds of `run`, its system seconds and page faults kept under `loop`."""
    start, usage = time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
    run()
    after = resource.getrusage(resource.RUSAGE_SELF)
    _faults[f"{loop}_system_s"].append(after.ru_stime - usage.ru_stime)
    _faults[f"{loop}_minor_faults"].append(after.ru_minflt - usage.ru_minflt)
    return time.process_time() - start


def run_pipeline(pipeline: Any, batches: list[list[str]]) -> float:
    def run() -> None:
        for index, paths in enumerate(batches):
            result = pipeline.process(_task(paths, index))
            assert result.rows_rejected == 0 and all(not f.error for f in result.files), result
    return _counted("pipeline", run)


def run_bare(batches: list[list[str]], types: dict[str, Any], out: Path) -> float:
    """scripts/bench.py's run_pyarrow_1thread, file by file."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    read = pacsv.ReadOptions(use_threads=False)
    convert = pacsv.ConvertOptions(column_types=types)

    def run() -> None:
        for index, path in enumerate(p for paths in batches for p in paths):
            table = pacsv.read_csv(path, read_options=read, convert_options=convert)
            pq.write_table(table, out / f"part-{index:05d}.parquet")
    return _counted("bare", run)


def _fresh(directory: Path) -> Path:
    for leftover in directory.rglob("*.parquet"):
        leftover.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def profile(args: argparse.Namespace, batch_mb: float) -> dict[str, Any]:
    import pyarrow as pa

    pa.set_io_thread_count(1)
    batches = _batches(args.data, batch_mb, args.batches)
    mb = sum(os.path.getsize(p) for b in batches for p in b) / 1e6
    with tempfile.TemporaryDirectory(prefix="profile-batch-") as scratch:
        staging, bare_out = Path(scratch) / "staging", Path(scratch) / "bare"
        pipeline = _pipeline(args.job, staging)
        types = _arrow_types(args.job)
        run_pipeline(pipeline, batches[:1])  # warm: imports, DuckDB, page cache
        times: dict[str, list[float]] = {"pipeline": [], "bare": []}
        _spent.clear()
        _faults.clear()
        for _ in range(args.rounds):
            times["pipeline"].append(run_pipeline(pipeline, batches))
            _fresh(staging)
            if not args.no_bare:
                times["bare"].append(run_bare(batches, types, _fresh(bare_out)))
    return _summary(batch_mb, batches, mb, times, args.rounds)


def _summary(batch_mb: float, batches: list[list[str]], mb: float,
             times: dict[str, list[float]], rounds: int) -> dict[str, Any]:
    per = batch_mb / mb  # seconds per batch of exactly batch_mb MB
    pipeline = statistics.median(times["pipeline"])
    parts = {k: round(v / rounds * per, 3) for k, v in sorted(_spent.items(), key=lambda i: -i[1])}
    if parts:
        parts["other"] = round(statistics.mean(times["pipeline"]) * per - sum(parts.values()), 3)
    bare = statistics.median(times["bare"]) if times["bare"] else None
    return {"batch_mb": batch_mb, "batches": len(batches), "files": sum(map(len, batches)),
            "input_mb": round(mb, 1), "pipeline_cpu_s_per_batch": round(pipeline * per, 3),
            "bare_cpu_s_per_batch": round(bare * per, 3) if bare else None,
            "pipeline_over_bare": round(pipeline / bare, 3) if bare else None,
            "min_cpu_s_per_batch": {k: round(min(v) * per, 3) for k, v in times.items() if v},
            "pipeline_cpu_mb_s": round(mb / pipeline, 1), "parts_cpu_s_per_batch": parts,
            "of_which_system_s_per_batch": {k.removesuffix("_system_s"): round(
                statistics.median(v) * per, 3) for k, v in _faults.items() if k.endswith("_s")},
            "minor_faults_per_batch": {k.removesuffix("_minor_faults"): int(
                statistics.median(v) * per) for k, v in _faults.items() if k.endswith("faults")},
            "rounds": {k: [round(t, 3) for t in v] for k, v in times.items()}}


# -- peak RSS --------------------------------------------------------------------------------


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_child(args: argparse.Namespace, batch_mb: float) -> dict[str, Any]:
    """One batch of `batch_mb` MB in this (fresh) process, after a 1-file warm-up."""
    batches = _batches(args.data, batch_mb, 1)
    with tempfile.TemporaryDirectory(prefix="profile-rss-") as scratch:
        pipeline = _pipeline(args.job, Path(scratch))
        pipeline.process(_task(batches[0][:1], 9999))
        before = _rss_kb()
        pipeline.process(_task(batches[0], 0))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mb = sum(os.path.getsize(p) for p in batches[0]) / 1e6
    return {"batch_mb": batch_mb, "input_mb": round(mb, 1), "rss_before_mb": round(before / 1e3, 1),
            "peak_rss_mb": round(peak / 1e3, 1), "peak_over_before_mb": round((peak - before) / 1e3, 1),
            "growth_over_input": round((peak - before) / 1e3 / mb, 2)}


def rss(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for batch_mb in args.batch_mb:
        command = [sys.executable, __file__, "--rss-child", "--batch-mb", str(batch_mb),
                   "--data", str(args.data), "--job", str(args.job)]
        rows.append(json.loads(subprocess.run(command, check=True, capture_output=True,
                                              text=True).stdout))
    return rows


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of CSV files")
    parser.add_argument("--job", type=Path, default=ROOT / "configs" / "demo.toml")
    parser.add_argument("--batch-mb", type=float, nargs="+", default=[64, 200])
    parser.add_argument("--batches", type=int, default=3, help="batches per size (at most)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-bare", action="store_true", help="skip the bare pyarrow loop")
    parser.add_argument("--no-parts", action="store_true", help="no stage timers")
    parser.add_argument("--rss", action="store_true", help="peak RSS per batch size instead")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    from loguru import logger

    logger.remove()  # the pipeline's per-batch debug line: not part of the measurement
    args = _arguments()
    if args.rss_child:
        print(json.dumps(rss_child(args, args.batch_mb[0])))
        return
    if args.rss:
        print(json.dumps(rss(args), indent=1))
        return
    if not args.no_parts:
        _instrument()
    print(json.dumps([profile(args, mb) for mb in args.batch_mb], indent=1))


if __name__ == "__main__":
    main()
