#!/usr/bin/env python
"""Benchmark batchrun against plain CSV → Parquet converters on the same files.

    .venv/bin/pip install -r scripts/bench_requirements.txt     # the peers (optional)
    .venv/bin/python scripts/bench.py                           # few-big + many-small, 3 rounds
    .venv/bin/python scripts/bench.py --quick --rounds 1        # smoke test, tiny shapes
    .venv/bin/python scripts/bench.py --scale seed              # 10,000 × 2 MB (20 GB)
    .venv/bin/python scripts/bench.py --scale 4gb --rounds 2 --peers duckdb,polars,pyarrow_2proc \
        --baseline /work/before --markdown bench.md              # the scale comparison

Method
------
* Data: `batchrun.tools.demo.generate` writes the supplier-orders data set (clean rows, so
  every contender must write exactly the generator's `total_rows`). Each shape is cached
  under `--data-dir` (default `bench-data/`), keyed by its dimensions and seed, and
  read once before timing so every contender starts from a warm page cache.
* Shapes: few-big = 400 files × 2 MB, many-small = 10,000 files × 20 KB (default scale);
  4gb = 2,000 × 2 MB in 20 supplier folders (`--scale 4gb`, 39,059,990 rows at seed 42);
  seed = 10,000 × 2 MB (`--scale seed`); `--scale all` = 4gb, seed, then the default
  shapes; `--quick` = 20 × 200 KB and 200 × 5 KB.
* Contenders: each run is a fresh subprocess writing typed Parquet (the schema of
  configs/demo.toml) into a fresh output folder. Wall time is measured by this process
  from spawn to exit, so interpreter start, imports and `ray.init` count for everyone.
  A sampler thread sums the RSS of the whole process tree (the child and every
  descendant: Ray's raylet, GCS and workers too) every `--poll-ms` (50 ms) and keeps
  the peak. RSS counts shared pages (Ray's object store) once per process that maps
  them, so the Ray-based figures are upper bounds.
* batchrun runs as `python -m batchrun run JOB --json --no-progress` with a fresh
  --state-dir and --staging-dir; JOB is the full job: configs/demo.toml (its schema, rules
  and default batch settings, checkpoints on) with source.paths pointing at the shape and
  `unique = true` on order_id (batchrun: 2 workers; batchrun_types_only: the column rules
  required, min, max, allowed, pattern, max_length and unique removed, types and formats
  kept; batchrun_1worker: --workers 1; batchrun_before, with `--baseline PATH`: the same
  job file run by `PATH/.venv/bin/python -m batchrun`, a checkout from before a change).
  Its rows are read back from staging/<table>/, and `batchrun verify` (untimed, with the
  contender's own batchrun) checks every committed output's size and checksum.
* `--peers duckdb,polars,...` runs batchrun (and batchrun_before) with only those peers
  (`duckdb` means duckdb_copy); `--contenders` names every contender, batchrun's too.
* Rounds: `--rounds` rounds per shape; every round runs every contender once and the
  order rotates each round (A/B interleaving), so drift on a shared machine spreads
  evenly. Reported: the median wall time, the maximum peak RSS over rounds.
* Budget: `--budget-min` (13, so that a first run, which also generates the data, ends
  within 15 minutes) is shared by the shapes; a shape stops before a round that
  would overrun its share (at least one round always runs) and reports how many ran.
* Correctness: after each run (untimed) the output is read back with
  `pyarrow.dataset` and its row count compared with the generator's truth; the column
  types are compared with the job schema. A mismatch is flagged, and the script exits 1.
* A contender that exceeds `--timeout` is killed with its whole tree, reported as
  "timeout" and not retried in later rounds of that shape. A peer whose library is not
  installed is reported as "skipped (not installed)".
* Derived figures: machine limit = cores × pyarrow_1thread MB/s (its own timing: each
  core doing the same per-file parse+write as the one-thread loop) and batchrun's steady
  throughput as a share of it; pyarrow_2proc runs that loop in one process per core at
  once, which shows what the cores really give together; 2-vs-1 worker speedup = steady
  MB/s of batchrun over batchrun_1worker; validation cost = wall(batchrun) /
  wall(batchrun_types_only) − 1, in %. The checkpoint cost is measured directly: each
  run logs the time its catalog transactions took ("catalog writes took ... s").
* CPU seconds: the sampler also reads each process's user + system CPU time and sums it
  by kind (driver, Ray's daemons, workers), so every wall time comes with where its CPU
  went: the profile that explains what bounds each contender. Peak RSS by kind: the
  driver alone and the largest single worker process (max over rounds).
* Stages (batchrun contenders): planning, Ray start, batches, unique, publish, exit and
  the rest, from the run's own log (scripts/bench_stages.py says which line gives what),
  median over rounds.
* Targets: the issue's ratios (batchrun wall / duckdb_copy, / polars; steady MB/s /
  pyarrow_2proc's; unique stage / wall), each printed as met or not met; `--markdown FILE`
  writes the tables, the machine, the versions and the command (scripts/bench_markdown.py).
MB are 10**6 bytes of CSV on disk.
"""

from __future__ import annotations

import argparse
import base64
import importlib.metadata
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_markdown import SCALE_SHAPES, markdown, target_checks
from bench_results import console, exit_code, git_rev, machine_info, render, summarise
from bench_stages import run_stage_times
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:  # the children (peers) import this script: no batchrun import at its top
    from batchrun.tools.sampler import TreeWatcher

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_JOB = REPO_ROOT / "configs" / "demo.toml"
RULE_KEYS = ("required", "min", "max", "allowed", "pattern", "max_length", "unique")
UNIQUE_KEY = "order_id"
"""The full job's unique key (`unique = true`): the demo's order ids are unique."""
PEER_ALIASES = {"duckdb": "duckdb_copy"}
CHILD_ENV_DROP = ("RAY_ADDRESS", "BATCHRUN_ADDRESS", "BATCHRUN_WORKERS", "BATCHRUN_STAGING_DIR",
                  "BATCHRUN_STATE_DIR", "BATCHRUN_FAULT_BATCH_DELAY")
EXIT_NOT_INSTALLED = 3


# -- shapes and contenders ------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    name: str
    suppliers: int
    files_per_supplier: int
    file_bytes: int

    @property
    def files(self) -> int:
        return self.suppliers * self.files_per_supplier

    def folder(self, seed: int) -> str:
        return f"{self.name}-{self.files}x{self.file_bytes}-s{seed}"


SCALES: dict[str, dict[str, Shape]] = {
    "default": {"few-big": Shape("few-big", 20, 20, 2_000_000),
                "many-small": Shape("many-small", 20, 500, 20_000)},
    "seed": {"seed": Shape("seed", 20, 500, 2_000_000)},
    "4gb": {"4gb": Shape("4gb", 20, 100, 2_000_000)},
    "quick": {"few-big": Shape("few-big", 4, 5, 200_000),
              "many-small": Shape("many-small", 20, 10, 5_000)},
}
SCALES["all"] = {**SCALES["4gb"], **SCALES["seed"], **SCALES["default"]}
assert all(name in SCALES["all"] for name in SCALE_SHAPES)


@dataclass(frozen=True)
class Contender:
    name: str
    needs: tuple[str, ...] = ()
    """Top-level modules that must be installed (checked without importing them)."""
    workers: int = 0
    """0 = a Python peer run by this script; > 0 = the batchrun CLI with this many workers."""
    rules: bool = True
    """batchrun only: the demo job's validation rules, or types only."""
    env: tuple[tuple[str, str], ...] = ()
    """Extra environment for the child."""
    baseline: bool = False
    """batchrun only: run by `--baseline PATH`'s own interpreter (PATH/.venv/bin/python)."""

    @property
    def is_batchrun(self) -> bool:
        return self.workers > 0


CONTENDERS: tuple[Contender, ...] = (
    Contender("duckdb_copy", needs=("duckdb",)),
    Contender("pyarrow_1thread", needs=("pyarrow",)),
    Contender("pyarrow_2proc", needs=("pyarrow",)),
    Contender("ray_data", needs=("ray", "pandas", "fsspec")),
    Contender("dask", needs=("dask", "pandas")),
    Contender("polars", needs=("polars",)),
    Contender("batchrun", workers=2),
    Contender("batchrun_types_only", workers=2, rules=False),
    Contender("batchrun_1worker", workers=1),
)
BEFORE = Contender("batchrun_before", workers=2, baseline=True)
"""Added by --baseline PATH: the same full job, run by PATH's batchrun."""
BY_NAME = {c.name: c for c in CONTENDERS}


@dataclass
class Sample:
    contender: str
    round: int
    status: str
    """ok | failed | timeout | skipped (not installed)"""
    wall_s: float | None = None
    peak_rss_mb: float | None = None
    rows: int | None = None
    rejected: int | None = None
    types_ok: bool | None = None
    steady_mb_per_s: float | None = None
    """batchrun only: MB/s from the first commit to the last (`batchrun report`), which
    leaves out Ray's start-up, the actors' start and shutdown."""
    inner_s: float | None = None
    """Seconds measured inside the child, from just before the peer imports its library
    (interpreter start excluded); batchrun: the run's own duration_s."""
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds (user + system) of the whole process tree by kind of process: driver
    (the command itself), ray_daemons (GCS, raylet, dashboard, agents, monitors),
    workers (Ray workers and actors, or a peer's own child processes). Sampled every
    --poll-ms, so a process's last few milliseconds can be missed."""
    peak_rss_by_kind_mb: dict[str, float] = field(default_factory=dict)
    """The largest RSS one process of each kind reached: driver, and workers (the largest
    single worker, not their sum)."""
    verified: bool | None = None
    """batchrun only: `batchrun verify` found every committed output intact."""
    stages: dict[str, Any] | None = None
    """batchrun only: seconds per stage from the run log (bench_stages.stage_times)."""
    error: str | None = None


@dataclass
class ShapeData:
    shape: Shape
    data_dir: Path
    paths: list[str]
    bytes: int
    rows: int
    samples: list[Sample] = field(default_factory=list)
    rounds_run: int = 0


# -- the job schema (configs/demo.toml) -----------------------------------------------------


def demo_job() -> dict[str, Any]:
    with DEMO_JOB.open("rb") as handle:
        return tomllib.load(handle)


def schema_types() -> dict[str, str]:
    """Column → batchrun type name, in output order."""
    return {name: spec["type"] for name, spec in demo_job()["schema"]["columns"].items()}


def column_types() -> dict[str, Any]:
    """The job's column types, spelled for the contenders by batchrun.coltypes (the one type
    registry) here in the parent. The peers get them in their task file, so a peer's
    process imports neither batchrun nor, unless it uses it, pyarrow."""
    import pyarrow as pa

    from batchrun.coltypes import arrow_type, decimal_parts, duckdb_type

    schema = schema_types()
    arrow = pa.schema([(name, arrow_type(kind)) for name, kind in schema.items()])
    return {"names": schema,
            "duckdb": "{" + ", ".join(f"'{n}': '{duckdb_type(t)}'" for n, t in schema.items()) + "}",
            "decimals": {n: list(parts) for n, t in schema.items() if (parts := decimal_parts(t))},
            "arrow_ipc": base64.b64encode(arrow.serialize().to_pybytes()).decode()}


def arrow_types(types: dict[str, Any]) -> dict[str, Any]:
    """Column → Arrow type, from `column_types()` (an Arrow IPC schema)."""
    import pyarrow as pa

    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(types["arrow_ipc"])))
    return {field.name: field.type for field in schema}


def polars_schema(types: dict[str, Any]) -> dict[str, Any]:
    import polars as pl

    simple = {"string": pl.String, "int32": pl.Int32, "int64": pl.Int64, "float64": pl.Float64,
              "bool": pl.Boolean, "date": pl.Date, "timestamp": pl.Datetime("us")}
    return {n: pl.Decimal(*types["decimals"][n]) if n in types["decimals"] else simple[t]
            for n, t in types["names"].items()}


# -- the contenders, run inside a child process ---------------------------------------------


def run_duckdb_copy(paths: list[str], types: dict[str, Any], out: Path) -> None:
    import duckdb

    files = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
    target = str(out).replace("'", "''")
    duckdb.connect().execute(
        f"COPY (SELECT * FROM read_csv({files}, columns={types['duckdb']}, header=true)) "
        f"TO '{target}' (FORMAT parquet, PER_THREAD_OUTPUT true)")


def run_pyarrow_1thread(paths: list[str], types: dict[str, Any], out: Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    read = pacsv.ReadOptions(use_threads=False)
    convert = pacsv.ConvertOptions(column_types=arrow_types(types))
    out.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(paths):
        table = pacsv.read_csv(path, read_options=read, convert_options=convert)
        pq.write_table(table, out / f"part-{index:05d}.parquet")


def run_pyarrow_2proc(paths: list[str], types: dict[str, Any], out: Path) -> None:
    """The single-thread loop in one process per core, each on its share of the files:
    what the cores really give together (shared caches, memory bandwidth, a VM's
    neighbours), next to the cores × one-core figure the machine limit assumes."""
    from concurrent.futures import ProcessPoolExecutor

    cores = os.cpu_count() or 1
    shares = [paths[k::cores] for k in range(cores)]
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(run_pyarrow_1thread, shares, [types] * cores,
                      [out / f"proc-{k}" for k in range(cores)]))


def run_ray_data(paths: list[str], types: dict[str, Any], out: Path) -> None:
    import logging

    import pyarrow.csv as pacsv
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        convert = pacsv.ConvertOptions(column_types=arrow_types(types))
        ray.data.read_csv(paths, convert_options=convert).write_parquet(str(out))
    finally:
        ray.shutdown()


def run_dask(paths: list[str], types: dict[str, Any], out: Path) -> None:
    import dask.dataframe as dd
    import pandas as pd
    import pyarrow as pa

    arrow = arrow_types(types)
    # pandas cannot parse decimals from CSV text (dask samples with the C engine): read
    # them as strings and cast with Arrow, per partition.
    decimals = {n: pd.ArrowDtype(t) for n, t in arrow.items() if pa.types.is_decimal(t)}
    dtype = {n: pd.ArrowDtype(pa.string() if n in decimals else t) for n, t in arrow.items()}
    frame = dd.read_csv(paths, dtype=dtype, engine="pyarrow").astype(decimals)
    frame.to_parquet(str(out), write_index=False)


def run_polars(paths: list[str], types: dict[str, Any], out: Path) -> None:
    import polars as pl

    out.mkdir(parents=True, exist_ok=True)
    pl.scan_csv(paths, schema=polars_schema(types)).sink_parquet(str(out / "data.parquet"))


PEERS: dict[str, Callable[[list[str], dict[str, Any], Path], None]] = {
    "duckdb_copy": run_duckdb_copy, "pyarrow_1thread": run_pyarrow_1thread,
    "pyarrow_2proc": run_pyarrow_2proc,
    "ray_data": run_ray_data, "dask": run_dask, "polars": run_polars,
}


def child_main(name: str, task_file: Path, out: Path) -> int:
    """Run one peer on the task file's paths; print {"inner_s": ...} on the last line."""
    task = json.loads(task_file.read_text())
    started = time.perf_counter()
    try:
        PEERS[name](task["paths"], task["types"], out)
    except ImportError as exc:
        print(f"not installed: {exc}", file=sys.stderr)
        return EXIT_NOT_INSTALLED
    print(json.dumps({"inner_s": round(time.perf_counter() - started, 3)}))
    return 0


# -- data sets ------------------------------------------------------------------------------


def ensure_data(shape: Shape, data_root: Path, seed: int) -> ShapeData:
    """Generate the shape's files unless a complete cached copy is there."""
    from batchrun.tools.demo import DemoSpec, generate, load_truth

    folder = data_root / shape.folder(seed)
    if not cache_complete(folder, shape):
        console.print(f"generating {shape.name}: {shape.files:,} files × "
                      f"{shape.file_bytes / 1e6:g} MB → {folder}")
        check_disk(data_root, shape.files * shape.file_bytes * 2)
        started = time.perf_counter()
        generate(DemoSpec(out_dir=folder, suppliers=shape.suppliers,
                          files_per_supplier=shape.files_per_supplier,
                          file_bytes=shape.file_bytes, seed=seed))
        console.print(f"  generated in {time.perf_counter() - started:.1f} s")
    truth = load_truth(folder)
    paths = [str(folder / rel) for rel in sorted(truth.files)]
    size = sum(os.path.getsize(p) for p in paths)
    return ShapeData(shape, folder, paths, size, truth.total_rows)


def cache_complete(folder: Path, shape: Shape) -> bool:
    from batchrun.tools.demo import TRUTH_FILE, load_truth

    if not (folder / TRUTH_FILE).is_file():
        return False
    files = load_truth(folder).files
    return len(files) == shape.files and all((folder / rel).is_file() for rel in files)


def check_disk(root: Path, needed: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < needed:
        raise SystemExit(f"not enough disk under {root}: {free / 1e9:.1f} GB free, "
                         f"~{needed / 1e9:.1f} GB needed (data + outputs)")


def warm_cache(paths: Iterable[str]) -> None:
    """Read every file once so no contender pays for a cold page cache."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 22):
                pass


# -- batchrun job files ---------------------------------------------------------------------


def job_document(data_dir: Path, rules: bool) -> dict[str, Any]:
    """configs/demo.toml with the shape's paths, optionally without column rules."""
    doc = demo_job()
    doc["source"] = {**doc["source"], "paths": [str(data_dir / "supplier_*" / "*.csv")]}
    doc["staging"] = {"dir": "staging"}
    doc["execution"] = {**doc.get("execution", {}), "workers": 2}
    doc["schema"]["columns"][UNIQUE_KEY]["unique"] = True
    if not rules:
        columns = doc["schema"]["columns"]
        doc["schema"]["columns"] = {n: {k: v for k, v in spec.items() if k not in RULE_KEYS}
                                    for n, spec in columns.items()}
    return doc


def write_jobs(data: ShapeData, folder: Path) -> dict[bool, Path]:
    """One job file with the rules and one types-only; validated with batchrun's loader."""
    from batchrun.config import load_job
    from batchrun.tools.tomltext import toml_text

    jobs = {}
    for rules in (True, False):
        path = folder / f"job-{data.shape.name}-{'full' if rules else 'types-only'}.toml"
        path.write_text(toml_text(job_document(data.data_dir, rules)))
        load_job(path)
        jobs[rules] = path
    return jobs


# -- running one sample ---------------------------------------------------------------------


@dataclass
class Finished:
    code: int | None
    """None when killed at the timeout."""
    wall_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str
    cpu_s: dict[str, float] = field(default_factory=dict)
    peak_one_mb: dict[str, float] = field(default_factory=dict)
    """Kind of process → the largest RSS one process of it reached, and when."""
    peak_one_at: dict[str, float] = field(default_factory=dict)
    spawned_at: float = 0.0
    """time.time() at the spawn, and at the exit: the run log's stages sit between."""
    exited_at: float = 0.0


def run_tree(command: list[str], workdir: Path, timeout: float, poll: float,
             extra_env: tuple[tuple[str, str], ...] = ()) -> Finished:
    """Run a command in its own session; time it and watch the RSS of its process tree."""
    from batchrun.tools.sampler import TreeWatcher

    out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"
    env = ({"RAY_USAGE_STATS_ENABLED": "0"} | {k: v for k, v in os.environ.items()
                                               if k not in CHILD_ENV_DROP} | dict(extra_env))
    with out_path.open("wb") as out, err_path.open("wb") as err:
        spawned_at, started = time.time(), time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=workdir, env=env, start_new_session=True)
        with TreeWatcher(proc.pid, poll) as watcher:
            code = _wait(proc, timeout, watcher)
            wall = time.perf_counter() - started
        _reap(watcher)
    return Finished(code, wall, watcher.peak / 1e6, out_path.read_text(errors="replace"),
                    err_path.read_text(errors="replace"), watcher.cpu_by_kind(),
                    {kind: round(rss / 1e6, 1) for kind, rss in watcher.peak_one.items()},
                    dict(watcher.peak_one_at), spawned_at, spawned_at + wall)


def _wait(proc: subprocess.Popen[bytes], timeout: float, watcher: TreeWatcher) -> int | None:
    """Exit code, or None after killing the tree at the timeout.

    A blocking wait in a thread: Popen.wait(timeout) polls and would round every wall
    time up to its 50 ms sleep steps.
    """
    waiter = threading.Thread(target=proc.wait, daemon=True)
    waiter.start()
    waiter.join(timeout)
    if not waiter.is_alive():
        return proc.returncode
    watcher.kill_tree()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    waiter.join()
    return None


def _reap(watcher: TreeWatcher, grace: float = 5.0) -> None:
    """Give descendants (Ray's daemons) a moment to exit, then kill what is left."""
    deadline = time.monotonic() + grace
    while watcher.leftovers() and time.monotonic() < deadline:
        time.sleep(0.1)
    if watcher.leftovers():
        watcher.kill_tree()


def python_for(contender: Contender, baseline: Path | None) -> str:
    """The interpreter that runs the contender: the baseline checkout's own for
    batchrun_before, this one's otherwise."""
    if contender.baseline and baseline is not None:
        return str(baseline / ".venv" / "bin" / "python")
    return sys.executable


def contender_command(contender: Contender, task: Path, out: Path,
                      jobs: dict[bool, Path], baseline: Path | None = None) -> list[str]:
    if not contender.is_batchrun:
        return [sys.executable, str(Path(__file__).resolve()), "--contender", contender.name,
                "--task", str(task), "--output", str(out)]
    return [python_for(contender, baseline), "-m", "batchrun", "run", str(jobs[contender.rules]),
            "--state-dir", str(out / "state"), "--staging-dir", str(out / "staging"),
            "--workers", str(contender.workers), "--json", "--no-progress"]


def run_sample(contender: Contender, data: ShapeData, round_no: int, scratch: Path,
               jobs: dict[bool, Path], args: argparse.Namespace) -> Sample:
    workdir = scratch / f"{data.shape.name}-{contender.name}-r{round_no}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    out = workdir / "out"
    command = contender_command(contender, scratch / f"{data.shape.name}-task.json", out, jobs,
                                args.baseline)
    done = run_tree(command, workdir, args.timeout, args.poll_ms / 1000, contender.env)
    sample = judge(contender, done, out, round_no)
    if contender.is_batchrun and sample.status == "ok":
        inspect_run(sample, done, out / "state", python_for(contender, args.baseline))
    if not args.keep_outputs:
        shutil.rmtree(workdir, ignore_errors=True)
    return sample


def judge(contender: Contender, done: Finished, out: Path, round_no: int) -> Sample:
    """Turn a finished process into a Sample: status, rows read back, types."""
    sample = Sample(contender.name, round_no, "ok", round(done.wall_s, 3),
                    round(done.peak_rss_mb, 1), cpu_s=done.cpu_s,
                    peak_rss_by_kind_mb=done.peak_one_mb)
    if done.code is None:
        sample.status, sample.error = "timeout", f"killed after {done.wall_s:.0f} s"
        return sample
    if done.code == EXIT_NOT_INSTALLED and not contender.is_batchrun:
        sample.status, sample.error = "skipped (not installed)", last_line(done.stderr)
        return sample
    if done.code != 0:
        sample.status = "failed"
        sample.error = f"exit {done.code}: {last_line(done.stderr) or last_line(done.stdout)}"
        return sample
    read_child_report(contender, done.stdout, sample)
    table_dir = out / "staging" / demo_job()["job"]["table"] if contender.is_batchrun else out
    sample.rows, sample.types_ok = read_back(table_dir)
    return sample


def child_report(stdout: str, first: bool) -> dict[str, Any]:
    """The JSON object a child printed: batchrun's status (from the first "{"), a peer's
    {"inner_s"} (its last line); {} if none."""
    start = stdout.find("{") if first else stdout.rfind("{")
    try:
        report = json.loads(stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}
    return report if isinstance(report, dict) else {}


def read_child_report(contender: Contender, stdout: str, sample: Sample) -> None:
    """Peers print {"inner_s"}; batchrun prints its status JSON (rows, duration_s)."""
    report = child_report(stdout, first=contender.is_batchrun)
    if contender.is_batchrun:
        sample.inner_s = report.get("duration_s")
        sample.rejected = report.get("rows", {}).get("rejected")
    else:
        sample.inner_s = report.get("inner_s")


def inspect_run(sample: Sample, done: Finished, state_dir: Path, python: str) -> None:
    """After a batchrun run (untimed): its steady MB/s, `batchrun verify`, its stages."""
    report = batchrun_json(python, "report", state_dir)
    steady = report.get("steady_mb_per_s") if isinstance(report, dict) else None
    sample.steady_mb_per_s = float(steady) if steady is not None else None
    sample.verified, problem = verify_run(python, state_dir)
    if problem:
        sample.error = problem
    run = child_report(done.stdout, first=True)
    began = _epoch(run.get("started_at"))
    sample.stages = run_stage_times(state_dir, run.get("run_id"), done.spawned_at, began,
                                    done.exited_at, {f"peak_rss_{kind}": at for kind, at
                                                     in done.peak_one_at.items()})


def batchrun_json(python: str, command: str, state_dir: Path) -> Any:
    """`batchrun COMMAND --json --state-dir STATE_DIR`'s JSON ({} if none), and its exit."""
    done = subprocess.run([python, "-m", "batchrun", command, "--json", "--state-dir",
                           str(state_dir)], capture_output=True, text=True, check=False)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"_exit": done.returncode, "_stderr": last_line(done.stderr)}


def verify_run(python: str, state_dir: Path) -> tuple[bool, str | None]:
    """`batchrun verify` of the latest run: (every output intact, a one-line problem)."""
    done = subprocess.run([python, "-m", "batchrun", "verify", "--state-dir", str(state_dir)],
                          capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return True, None
    lines = [x.strip() for x in (done.stdout + done.stderr).splitlines() if x.strip()]
    said = "; ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else "no output"
    return False, f"verify exit {done.returncode}: {said[:300]}"


def _epoch(iso: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(iso)).timestamp() if iso else None
    except ValueError:
        return None


def read_back(folder: Path) -> tuple[int | None, bool | None]:
    """Rows in the Parquet files under folder, and whether the schema columns are typed."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if not folder.exists():
        return 0, None
    dataset = ds.dataset(str(folder), format="parquet")
    schema = dataset.schema
    expected = arrow_types(column_types())
    normal = {pa.large_string(): pa.string()}
    types_ok = all(name in schema.names and
                   normal.get(schema.field(name).type, schema.field(name).type) == kind
                   for name, kind in expected.items())
    return dataset.count_rows(), types_ok


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# -- the benchmark loop ---------------------------------------------------------------------


def installed(contender: Contender) -> bool:
    try:
        return all(importlib.util.find_spec(module) is not None for module in contender.needs)
    except ModuleNotFoundError:
        return False


def round_order(contenders: list[Contender], round_no: int) -> list[Contender]:
    shift = (round_no - 1) % len(contenders)
    return contenders[shift:] + contenders[:shift]


def bench_shape(data: ShapeData, contenders: list[Contender], scratch: Path,
                args: argparse.Namespace, deadline: float | None) -> None:
    """Run the rounds; stop early (at least one round) if another would pass `deadline`."""
    task = {"paths": data.paths, "types": column_types()}
    (scratch / f"{data.shape.name}-task.json").write_text(json.dumps(task))
    jobs = write_jobs(data, scratch)
    warm_cache(data.paths)
    runnable = [c for c in contenders if installed(c)]
    data.samples += [Sample(c.name, 0, "skipped (not installed)") for c in contenders
                     if c not in runnable]
    timed_out: set[str] = set()
    for round_no in range(1, args.rounds + 1):
        started = time.monotonic()
        for contender in round_order(runnable, round_no):
            if contender.name not in timed_out:
                sample = run_sample(contender, data, round_no, scratch, jobs, args)
                data.samples.append(sample)
                print_sample(data, sample)
                if sample.status == "timeout":
                    timed_out.add(contender.name)
        data.rounds_run = round_no
        took = time.monotonic() - started
        console.print(f"[dim]{data.shape.name} round {round_no}/{args.rounds}: {took:.1f} s[/]")
        if round_no < args.rounds and deadline and time.monotonic() + took > deadline:
            console.print(f"[yellow]{data.shape.name}: stopping after {round_no} round(s); "
                          f"another (~{took:.0f} s) would pass this shape's share of "
                          f"--budget-min[/]")
            break


def print_sample(data: ShapeData, sample: Sample) -> None:
    rows = "" if sample.rows is None else f"{sample.rows:,} rows"
    flag = "" if sample.rows in (None, data.rows) else " [red]ROW MISMATCH[/]"
    flag += " [red]VERIFY FAILED[/]" if sample.verified is False else ""
    wall = f"{sample.wall_s:7.2f} s" if sample.wall_s is not None else ""
    head = escape(f"[{data.shape.name} r{sample.round}]")
    console.print(f"  {head} {sample.contender:<20} {sample.status:<8} {wall} "
                  f"{sample.peak_rss_mb or 0:8.0f} MB RSS  {rows}{flag} "
                  f"{escape(sample.error or '')}")


# -- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=("default", "seed", "4gb", "all"), default="default",
                        help="default: few-big + many-small; seed: 10,000 × 2 MB; "
                             "4gb: 2,000 × 2 MB; all: 4gb, seed, then the default shapes")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, for smoke tests")
    parser.add_argument("--shapes", help="comma-separated shape names (default: all of the scale)")
    parser.add_argument("--contenders", help="comma-separated subset of: " + ", ".join(BY_NAME)
                        + (", batchrun_before (with --baseline)"))
    parser.add_argument("--peers", help="run batchrun (and batchrun_before) with only these "
                                        "peers, comma-separated (duckdb = duckdb_copy): " +
                        ", ".join(c.name for c in CONTENDERS if not c.is_batchrun))
    parser.add_argument("--baseline", type=Path, metavar="PATH",
                        help="a batchrun checkout with its own .venv: adds the contender "
                             "batchrun_before, the same job run by PATH/.venv/bin/python")
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="also write the results as README-ready Markdown to FILE")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per shape (medians)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--budget-min", type=float, default=13.0,
                        help="time budget for the whole benchmark, shared evenly by the shapes; "
                             "a shape stops before a round that would overrun its share "
                             "(at least one round always runs; 0 = no budget)")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "bench-data")
    parser.add_argument("--runs-dir", type=Path,
                        help="where the runs write (emptied first; default DATA_DIR/_runs): "
                             "keeps a shared, read-only DATA_DIR untouched")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench-results.json")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--poll-ms", type=float, default=50.0, help="RSS sampling interval")
    parser.add_argument("--keep-outputs", action="store_true",
                        help="keep every run's output under DATA_DIR/_runs")
    add_side_modes(parser)
    parser.add_argument("--contender", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--task", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.baseline and not (args.baseline / ".venv" / "bin" / "python").is_file():
        parser.error(f"--baseline {args.baseline}: no .venv/bin/python in it")
    return args


def add_side_modes(parser: argparse.ArgumentParser) -> None:
    """The options of the modes that measure one thing instead of the contenders."""
    parser.add_argument("--memory-scaling", action="store_true",
                        help="only measure batchrun's peak memory at N and 10×N files "
                             "(fixed batch size), and the bytes in flight")
    parser.add_argument("--planning", type=int, metavar="FILES", default=0,
                        help="only measure planning + cataloguing of FILES tiny files "
                             "(e.g. 100000) and the driver's memory while doing it")
    parser.add_argument("--driver-capacity", action="store_true",
                        help="only measure one driver's capacity: planning --capacity-files "
                             "tiny files (time, peak RSS) and, with scripts/capacity_commits.py, "
                             "batch commits per second on in-process no-op workers")
    parser.add_argument("--capacity-files", type=int, default=1_000_000, metavar="N",
                        help="files planned by --driver-capacity")
    parser.add_argument("--commit-batches", type=int, default=20_000, metavar="N",
                        help="no-op batches committed by --driver-capacity")
    parser.add_argument("--commit-workers", type=int, default=1_000, metavar="N",
                        help="in-process workers for --driver-capacity's commits")


def choose_contenders(names: str | None, peers: str | None, baseline: bool) -> list[Contender]:
    """--contenders (default: all, and batchrun_before with --baseline), then --peers:
    the batchrun contenders chosen, or batchrun and batchrun_before if --contenders named
    none, with only the peers it names."""
    known = {**BY_NAME, **({BEFORE.name: BEFORE} if baseline else {})}
    chosen: list[Contender] = pick(names, known, "contender")
    if not peers:
        return chosen
    own = [c for c in chosen if c.is_batchrun and (names or c.name in ("batchrun", BEFORE.name))]
    wanted = [PEER_ALIASES.get(n.strip(), n.strip()) for n in peers.split(",") if n.strip()]
    peer_known = {c.name: c for c in CONTENDERS if not c.is_batchrun}
    return own + pick(",".join(wanted), peer_known, "peer")


def command_line(argv: list[str] | None) -> str:
    """The command that ran this benchmark, as typed from the repository root."""
    words = sys.argv[1:] if argv is None else argv
    return shlex.join([".venv/bin/python", "scripts/bench.py", *words])


def pick(names: str | None, known: dict[str, Any], what: str) -> list[Any]:
    if not names:
        return list(known.values())
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; choose from {', '.join(known)}")
    return [known[n] for n in chosen]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.contender:
        return child_main(args.contender, args.task, args.output)
    if args.memory_scaling:
        return memory_scaling(args)
    if args.planning:
        return planning(args)
    if args.driver_capacity:
        return driver_capacity(args)
    scale = "quick" if args.quick else args.scale
    shapes: list[Shape] = pick(args.shapes, SCALES[scale], f"shape for scale {scale}")
    contenders = choose_contenders(args.contenders, args.peers, args.baseline is not None)
    scratch = args.runs_dir or args.data_dir / "_runs"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    results: dict[str, Any] = {"machine": machine_info(), "config": {
        "scale": scale, "rounds": args.rounds, "timeout_s": args.timeout, "seed": args.seed,
        "budget_min": args.budget_min, "command": command_line(argv),
        "baseline": str(args.baseline) if args.baseline else None,
        "contenders": [c.name for c in contenders],
        "shapes": {s.name: asdict(s) for s in shapes}}, "shapes": {}}
    started = time.perf_counter()
    budget_end = time.monotonic() + args.budget_min * 60 if args.budget_min > 0 else None
    for index, shape in enumerate(shapes):
        data = ensure_data(shape, args.data_dir, args.seed)
        bench_shape(data, contenders, scratch, args, shape_deadline(budget_end, len(shapes) - index))
        results["shapes"][shape.name] = summarise(data, contenders)
    results["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["machine"]["baseline_rev"] = git_rev(args.baseline) if args.baseline else None
    results["targets"] = target_checks(results)
    results["total_s"] = round(time.perf_counter() - started, 1)
    if not args.keep_outputs:
        shutil.rmtree(scratch, ignore_errors=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    render(results)
    if args.markdown:
        args.markdown.write_text(markdown(results) + "\n")
        console.print(f"markdown written to {args.markdown}")
    console.print(f"total {results['total_s']:.0f} s; results written to {args.out}")
    return exit_code(results)


def planning(args: argparse.Namespace) -> int:
    """Time to glob, fingerprint, cut into batches and write the plan of N tiny files to
    the catalog, and the driver's peak RSS (`scripts/capacity.py`: what `batchrun run`
    does before dispatching)."""
    result = capacity_module().measure_planning(args.planning)
    console.print(result)
    out = args.out.with_name(args.out.stem + "-planning.json")
    out.write_text(json.dumps({"machine": machine_info(), "planning": result}, indent=2) + "\n")
    return 0


def capacity_module(name: str = "capacity") -> Any:
    """scripts/<name>.py, imported (None if it is not there)."""
    if not (Path(__file__).with_name(f"{name}.py")).is_file():
        return None
    if str(Path(__file__).parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).parent))
    return importlib.import_module(name)


def driver_capacity(args: argparse.Namespace) -> int:
    """The issue's driver-capacity figures: planning 1,000,000 files (scripts/capacity.py)
    and, if scripts/capacity_commits.py is there, batch commits per second; a table, the
    JSON, and exit 0 if every target is met, else 1."""
    planning = capacity_module().measure_planning(args.capacity_files)
    commits_module = capacity_module("capacity_commits")
    commits = (commits_module.measure_commits(args.commit_batches, args.commit_workers)
               if commits_module else None)
    rows = capacity_rows(planning, commits)
    table = Table("measure", "value", "target", "met", title="driver capacity")
    for measure, value, target, met in rows:
        table.add_row(measure, value, target, "-" if met is None else ("yes" if met else "[red]NO[/]"))
    console.print(table)
    result = {"machine": machine_info(), "planning": planning, "commits": commits}
    args.out.with_name(args.out.stem + "-capacity.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if all(met is not False for *_, met in rows) else 1


def capacity_rows(planning: dict[str, Any], commits: dict[str, Any] | None
                  ) -> list[tuple[str, str, str, bool | None]]:
    """(measure, value, target, met) for the capacity table."""
    files = f"{planning['files']:,} files"
    rows: list[tuple[str, str, str, bool | None]] = [
        (f"plan {files}: wall s", f"{planning['plan_s']:,.1f}", "<= 60",
         planning["plan_s"] <= 60),
        (f"plan {files}: CPU s", f"{planning['plan_cpu_s']:,.1f}", "", None),
        (f"plan {files}: driver peak RSS MB", f"{planning['peak_rss_mb']:,.0f}", "<= 1,000",
         planning["peak_rss_mb"] <= 1_000),
        ("load average while planning", f"{planning['load_avg_1min']}", "", None)]
    if commits is None:
        return [*rows, ("commits/s", "n/a (no scripts/capacity_commits.py)", ">= 1,000", None)]
    return [*rows, (f"commits/s ({commits['batches']:,} batches, {commits['workers']:,} workers)",
                    f"{commits['commits_per_s']:,.0f}", ">= 1,000", commits["commits_per_s"] >= 1_000)]


def memory_scaling(args: argparse.Namespace, base_files: int = 400) -> int:
    """Peak memory of batchrun's driver and workers as the file count grows 10× at a fixed
    batch size: the design bounds it by the bytes in flight, not by the files or rows."""
    from batchrun.catalog import Catalog
    from batchrun.metrics import peak_bytes_in_flight
    from batchrun.tools.compare import Shape as RunShape
    from batchrun.tools.compare import run_shape

    table = Table("files", "MB", "rows staged", "wall s", "driver peak MB", "workers peak MB",
                  "batches in flight", "max bytes in flight MB")
    results = []
    for files in (base_files // (10 if args.quick else 1), base_files * (1 if args.quick else 10)):
        shape = Shape(f"memory-{files}", 20, files // 20, 20_000)
        data = ensure_data(shape, args.data_dir, args.seed)
        folder = args.data_dir / "_runs" / shape.name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        job = write_jobs(data, folder)[True]
        run = run_shape(job, RunShape(shape.name, {"batch.max_files": 20}), folder / "run").as_json()
        attempts = Catalog(folder / "run" / "state").attempt_rows(run["run_id"]) if run["run_id"] else []
        entry = {"files": files, "mb": round(shape.files * shape.file_bytes / 1e6, 1),
                 "rows_staged": run["rows_staged"], "truth_rows": data.rows,
                 "wall_s": run["wall_s"], "peak_driver_mb": run["peak_driver_mb"],
                 "peak_workers_mb": run["peak_workers_mb"], "max_in_flight": run["max_in_flight"],
                 "max_bytes_in_flight_mb": round(peak_bytes_in_flight(attempts) / 1e6, 2)}
        results.append(entry)
        table.add_row(*(str(entry[k]) for k in ("files", "mb", "rows_staged", "wall_s",
                                                "peak_driver_mb", "peak_workers_mb",
                                                "max_in_flight", "max_bytes_in_flight_mb")))
        shutil.rmtree(folder, ignore_errors=True)
    console.print(table)
    out = args.out.with_name(args.out.stem + "-memory.json")
    out.write_text(json.dumps({"machine": machine_info(), "memory_scaling": results}, indent=2) + "\n")
    console.print(f"results written to {out}")
    return 0 if all(r["rows_staged"] == r["truth_rows"] for r in results) else 1


def shape_deadline(budget_end: float | None, shapes_left: int) -> float | None:
    """An even share of the remaining budget for the next shape."""
    if budget_end is None:
        return None
    return time.monotonic() + max(0.0, budget_end - time.monotonic()) / shapes_left


if __name__ == "__main__":
    sys.exit(main())
