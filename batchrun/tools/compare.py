"""`batchrun compare`: the same job under several shapes, measured side by side.

Each shape is a real `batchrun run` of the job in its own subprocess, with its own
scratch state dir and staging dir, on the same input files. While it runs, a sampler
reads the resident memory of the driver and of the Ray worker processes under it. When it
ends, its catalog gives the metrics (see `metrics.py`) and its staging view gives a
checksum: the row count and the sum of a hash of every staged row (all columns except
`_batch_id`, with `_file` and `_line`, so a row staged twice, missing, changed or moved to
another position changes it), and the same over the rejects. A shape's output is
*identical* when both checksums equal the sequential baseline's.

Shapes: `sequential` (one batch at a time, plan order), `parallel` (no per-source cap,
stagger, byte or rate limit), `hybrid` (the job's own limits), or `KEY=V1,V2,...` giving
one shape per value on top of the job's limits (KEY is an `[execution]` key or a dotted
job key). The sequential baseline always runs first.

Rounds: with `rounds=N` every shape runs N times, the shapes interleaved (round 1 runs
each shape once, then round 2, its order rotated by one, ...), so a machine that gets
busier or quieter halfway weighs on every shape alike. Each shape reports the median and
the min–max of its rounds (`Spread`); its other figures are its median round's. The
verdict compares the fastest shape with sequential by their medians and says when their
ranges overlap: a difference inside the noise is not a ranking.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from batchrun.catalog import Catalog
from batchrun.config import load_job
from batchrun.errors import ConfigError
from batchrun.layout import BATCH, rejects_table_name
from batchrun.metrics import Percentiles, RunMetrics, run_metrics
from batchrun.staging import query_connection, quote_identifier
from batchrun.tools.faults import FAULTS_ENV
from batchrun.tools.numbers import number, ratio, signed_mb
from batchrun.tools.sampler import TreeWatcher
from batchrun.tools.tomltext import toml_value

DEFAULT_FAULTS = "seed = 1, read_error_rate = 0.05, crash_worker = 'before_write', crash_batches = [2]"
"""What `--inject-faults` injects unless told otherwise: 5% transient read errors and one
worker process that dies in the middle of a batch."""

UNCAPPED: dict[str, Any] = {"execution.mode": "parallel", "execution.per_source_concurrency": "unlimited",
            "execution.stagger": 0, "execution.max_bytes_in_flight": "unlimited",
            "execution.rate_limit": "unlimited"}
NAMED: dict[str, dict[str, Any]] = {"sequential": {"execution.mode": "sequential"}, "parallel": UNCAPPED,
         "hybrid": {"execution.mode": "parallel"}}
DEFAULT_SHAPES = ("sequential", "parallel", "hybrid")
DEFAULT_ROUNDS = 3
SPREAD_METRICS = ("wall_s", "mb_per_s", "rows_per_s", "peak_rss_mb")


@dataclass(frozen=True)
class Spread:
    """One figure over a shape's rounds."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        ordered = sorted(values)
        middle = len(ordered) // 2
        median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        return cls(round(median, 3), ordered[0], ordered[-1])

    def overlaps(self, other: Spread) -> bool:
        return self.low <= other.high and other.low <= self.high

    def text(self) -> str:
        return number(self.low) if self.low == self.high else f"{number(self.low)}–{number(self.high)}"

    def as_json(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high}


@dataclass(frozen=True)
class Shape:
    name: str
    overrides: dict[str, Any]
    faults: str | None = None

    def with_faults(self, faults: str) -> Shape:
        return Shape(f"{self.name} +faults", self.overrides, faults)


@dataclass(frozen=True)
class ShapeResult:
    """One shape's run: what was measured around it, its metrics and its checksum."""

    name: str
    faults: str | None
    overrides: dict[str, Any]
    exit_code: int | None
    wall_s: float
    peak_rss_mb: float
    peak_driver_mb: float
    peak_workers_mb: float
    metrics: RunMetrics | None = None
    """None when the run left no run id behind (see `error`)."""
    checksum: str | None = None
    error: str | None = None
    """The last line of the run's output when it left no run id."""
    identical: bool = False
    """Whether both checksums equal the sequential baseline's (in every round)."""
    rounds: tuple[ShapeResult, ...] = ()
    """Every round of the shape (this result is its median round); empty for one run."""

    def spread(self, figure: str) -> Spread:
        """`figure` (a SPREAD_METRICS name) over the rounds: median, min and max."""
        return Spread.of([getattr(r, figure) for r in self.rounds or (self,)])

    @property
    def mb_per_s(self) -> float:
        return self.metrics.mb_per_s if self.metrics else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.metrics.rows_per_s if self.metrics else 0.0

    @property
    def latency(self) -> Percentiles:
        return self.metrics.latency if self.metrics else Percentiles()

    @property
    def concurrency(self) -> tuple[tuple[float, int], ...]:
        return self.metrics.concurrency if self.metrics else ()

    def as_json(self) -> dict[str, Any]:
        measured = {"name": self.name, "faults": self.faults, "overrides": self.overrides,
                    "exit_code": self.exit_code, "wall_s": self.wall_s,
                    "peak_rss_mb": self.peak_rss_mb, "peak_driver_mb": self.peak_driver_mb,
                    "peak_workers_mb": self.peak_workers_mb}
        varied = {"rounds": [r.round_json() for r in self.rounds or (self,)],
                  "spread": {f: self.spread(f).as_json() for f in SPREAD_METRICS}}
        if self.metrics is None:
            return {**measured, **_EMPTY, "error": self.error, "identical": self.identical,
                    **varied}
        return {**measured, **_from_metrics(self.metrics), "checksum": self.checksum,
                "identical": self.identical, **varied}

    def round_json(self) -> dict[str, Any]:
        """This run's own figures, as one entry of a shape's `rounds`."""
        return {"run_id": self.metrics.run_id if self.metrics else None,
                "exit_code": self.exit_code, "wall_s": self.wall_s, "mb_per_s": self.mb_per_s,
                "rows_per_s": self.rows_per_s, "peak_rss_mb": self.peak_rss_mb,
                "latency_p50_s": self.latency.p50, "checksum": self.checksum,
                "identical": self.identical}


@dataclass
class CompareResult:
    job: str
    scratch: str
    shapes: list[ShapeResult] = field(default_factory=list)
    rounds: int = 1

    @property
    def all_identical(self) -> bool:
        return all(s.identical for s in self.shapes)

    def as_json(self) -> dict[str, Any]:
        return {"job": self.job, "scratch": self.scratch, "rounds": self.rounds,
                "verdict": verdict(self), "all_identical": self.all_identical,
                "shapes": [s.as_json() for s in self.shapes]}


def verdict(result: CompareResult) -> str:
    """One sentence: the fastest shape against sequential (or, when sequential is the
    fastest, against the runner-up) by their median throughput, within noise when their
    ranges overlap, its memory cost, and whether every shape staged the same rows."""
    ran = [s for s in result.shapes if s.metrics is not None]
    base = next((s for s in ran if s.name == "sequential"), None)
    failed = [s.name for s in result.shapes if s.metrics is None]
    tail = "; ".join([_sameness(result), *(f"{name} did not run" for name in failed)])
    if base is None:
        return f"no comparison: the sequential baseline did not run; {tail}"
    best = max(ran, key=lambda s: s.spread("mb_per_s").median)
    rival = base if best is not base else max(
        (s for s in ran if s is not base), key=lambda s: s.spread("mb_per_s").median, default=None)
    of = f"medians of {result.rounds} rounds" if result.rounds > 1 else "one round, no spread"
    if rival is None:
        return f"on this data, only sequential ran ({number(base.spread('mb_per_s').median)} MB/s); {tail}"
    fast, slow = best.spread("mb_per_s"), rival.spread("mb_per_s")
    if result.rounds > 1 and fast.overlaps(slow):
        return (f"on this data, {best.name} and {rival.name} are within noise of each other"
                f" ({fast.text()} vs {slow.text()} MB/s over {result.rounds} rounds); {tail}")
    memory = best.spread("peak_rss_mb").median - rival.spread("peak_rss_mb").median
    times = ratio(fast.median / slow.median) if slow.median else "faster than"
    close = [s.name for s in ran if s not in (best, rival) and result.rounds > 1
             and s.spread("mb_per_s").overlaps(fast)]
    tie = f", {' and '.join(close)} within noise of it" if close else ""
    return (f"on this data, {best.name} is {times} {rival.name}'s throughput at"
            f" {signed_mb(memory)} ({of}{tie}); {tail}")


def _sameness(result: CompareResult) -> str:
    if result.all_identical:
        return "all shapes identical"
    different = ", ".join(s.name for s in result.shapes if not s.identical)
    return f"NOT identical: {different} staged other rows than sequential"


def parse_shapes(specs: list[str] | tuple[str, ...]) -> list[Shape]:
    """`--shapes` values → shapes, the sequential baseline first."""
    shapes: list[Shape] = []
    for spec in specs or [",".join(DEFAULT_SHAPES)]:
        key, sep, values = spec.partition("=")
        if not sep:
            for name in filter(None, (n.strip() for n in spec.split(","))):
                if name not in NAMED:
                    raise ConfigError("--shapes", name, "expected sequential, parallel, hybrid "
                                      "or KEY=V1,V2,... such as workers=1,2,4")
                shapes.append(Shape(name, NAMED[name]))
            continue
        dotted = key.strip() if "." in key else f"execution.{key.strip()}"
        for value in filter(None, (v.strip() for v in values.split(","))):
            shapes.append(Shape(f"{key.strip()}={value}",
                                {"execution.mode": "parallel", dotted: _value(value)}))
    if not any(s.name == "sequential" for s in shapes):
        shapes.insert(0, Shape("sequential", NAMED["sequential"]))
    baseline = next(s for s in shapes if s.name == "sequential")
    return [baseline] + [s for s in shapes if s is not baseline]


def compare(job_file: Path, shapes: list[Shape], scratch: Path, inject_faults: str | None = None,
            keep: bool = False, on_shape: Callable[[str], None] | None = None,
            rounds: int = 1) -> CompareResult:
    """Run every shape (then every shape again with faults, if asked), `rounds` times,
    interleaved; return the table (each shape's median round, with all its rounds)."""
    for shape in shapes:  # a bad override fails here, before anything runs
        _checked(job_file, shape)
    plan = shapes + ([s.with_faults(inject_faults) for s in shapes] if inject_faults else [])
    scratch.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="compare-", dir=scratch))  # only this is deleted
    runs: dict[str, list[ShapeResult]] = {shape.name: [] for shape in plan}
    baseline: ShapeResult | None = None
    try:
        for done, (turn, index, shape) in enumerate(_schedule(plan, rounds)):
            if on_shape:
                on_shape(f"[{done + 1}/{len(plan) * rounds}] {shape.name}"
                         + (f" (round {turn + 1}/{rounds})" if rounds > 1 else ""))
            workdir = scratch / f"{turn + 1:02d}-{index:02d}-{_slug(shape.name)}"
            measured = run_shape(job_file, shape, workdir)
            baseline = baseline or measured
            same = measured.checksum is not None and measured.checksum == baseline.checksum
            runs[shape.name].append(replace(measured, identical=same))
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return CompareResult(job=str(job_file), scratch=str(scratch), rounds=rounds,
                         shapes=[_median_round(runs[shape.name]) for shape in plan])


def _schedule(plan: list[Shape], rounds: int) -> list[tuple[int, int, Shape]]:
    """(round, index in plan, shape) in running order: round by round, each round's order
    rotated by one, the first round starting with the sequential baseline."""
    order = []
    for turn in range(rounds):
        shift = turn % len(plan)
        order += [(turn, i, plan[i]) for i in [*range(shift, len(plan)), *range(shift)]]
    return order


def _median_round(runs: list[ShapeResult]) -> ShapeResult:
    """The shape's round with the median throughput (the lower one of an even count),
    carrying every round; identical only if every round was."""
    ordered = sorted(runs, key=lambda r: r.mb_per_s)
    middle = ordered[(len(ordered) - 1) // 2]
    if len(runs) == 1:
        return middle
    return replace(middle, identical=all(r.identical for r in runs), rounds=tuple(runs))


def _checked(job_file: Path, shape: Shape) -> None:
    try:
        load_job(job_file, shape.overrides)
    except ConfigError as exc:
        raise ConfigError(f"--shapes {shape.name}", exc.key, exc.expected) from None


def run_shape(job_file: Path, shape: Shape, workdir: Path) -> ShapeResult:
    """One real `batchrun run` in a subprocess, with its memory sampled; then its metrics."""
    state_dir, staging_dir = workdir / "state", workdir / "staging"
    command = [sys.executable, "-m", "batchrun", "run", str(job_file), "--state-dir",
               str(state_dir), "--staging-dir", str(staging_dir), "--json", "--no-progress"]
    overrides = {"execution.pool": "ray", **shape.overrides}  # parallelism needs workers
    for key, value in overrides.items():
        command += ["--set", f"{key}={toml_value(value)}"]
    env = {k: v for k, v in os.environ.items() if k not in (FAULTS_ENV, "BATCHRUN_POOL")}
    if shape.faults:
        env[FAULTS_ENV] = shape.faults
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(workdir / "output.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log)
        with TreeWatcher(process.pid, interval=0.1) as peaks:
            stdout, _ = process.communicate()
    wall = time.monotonic() - started
    measured = ShapeResult(shape.name, shape.faults, shape.overrides, process.returncode,
                           round(wall, 3), round(peaks.peak_run / 1e6, 1),
                           round(peaks.peak_driver / 1e6, 1), round(peaks.peak_workers / 1e6, 1))
    run_id = _run_id(stdout)
    if run_id is None:
        tail = (workdir / "output.log").read_text(errors="replace").strip().splitlines()[-1:]
        return replace(measured, error=tail[0] if tail else "no output")
    catalog = Catalog(state_dir)
    return replace(measured, metrics=run_metrics(catalog, run_id),
                   checksum=checksum(catalog, run_id))


_EMPTY: dict[str, Any] = {  # a shape that left no run id
    "run_id": None, "state": None, "run_s": None, "mb_per_s": 0.0, "rows_per_s": 0.0,
    "latency_p50_s": None, "latency_p95_s": None, "latency_p99_s": None, "retries": 0,
    "failed_batches": 0, "skipped_batches": 0, "rows_staged": 0, "rows_rejected": 0,
    "max_concurrency_per_source": 0, "max_in_flight": 0, "concurrency_per_source": {},
    "concurrency": [], "checksum": None}


def _from_metrics(metrics: RunMetrics) -> dict[str, Any]:
    m = metrics.as_json()
    keys = ("run_id", "state", "mb_per_s", "rows_per_s", "latency_p50_s", "latency_p95_s",
            "latency_p99_s", "retries", "failed_batches", "skipped_batches", "rows_staged",
            "rows_rejected", "max_concurrency_per_source", "max_in_flight", "concurrency")
    return {**{k: m[k] for k in keys}, "run_s": m["wall_s"], "active_s": m["active_s"],
            "concurrency_per_source": {s["source"]: s["max_concurrency"] for s in m["sources"]}}


def checksum(catalog: Catalog, run_id: str) -> str:
    """Row count and hash sum of the staged table and of its rejects (see module doc)."""
    record = catalog.run(run_id)
    db = query_connection(record.table, record.schema or {}, catalog.committed(run_id))
    parts = []
    for view, skip in ((record.table, {BATCH}),
                       (rejects_table_name(record.table), {"run_id", "batch_id"})):
        name = quote_identifier(view)
        columns = [c[0] for c in db.execute(f"SELECT * FROM {name} LIMIT 0").description
                   if c[0] not in skip]
        row = ", ".join(quote_identifier(c) for c in columns)
        found = db.execute(f"SELECT count(*), coalesce(sum(hash(row({row}))::HUGEINT), 0)"
                           f" FROM {name}").fetchone()
        count, total = found if found else (0, 0)
        parts.append(f"{count}:{total:x}")
    return "/".join(parts)


def _run_id(stdout: bytes) -> str | None:
    text = stdout.decode(errors="replace")
    start = text.find("{")
    if start < 0:
        return None
    try:
        return str(json.JSONDecoder().raw_decode(text[start:])[0]["run_id"])
    except (ValueError, KeyError):
        return None


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")
