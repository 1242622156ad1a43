#!/usr/bin/env python
"""Driver capacity, planning half: how long one driver takes to plan N files, and its memory.

    .venv/bin/python scripts/capacity.py 1000000        # ~1 minute to create, then measure
    .venv/bin/python scripts/bench.py --driver-capacity # this and the commit half, one table

`measure_planning(files)` creates `files` tiny CSV files (`order_id\\n1\\n`, 11 bytes) in a
temporary folder (on /dev/shm when it has room: creating a million files on a disk takes
minutes), `FOLDERS` folders of files/FOLDERS each, and runs the real planning path of
`start_run` in a fresh interpreter: import the execution modules, `expand_sources` (walk,
stat, dedupe by inode, sort), `cut_batches`, `Catalog.create_run` (the plan transaction,
into a catalog in a temporary folder on disk). The child reports each phase's wall and
CPU seconds (on a shared machine the CPU seconds are what an idle one would take) and its
peak RSS (`ru_maxrss`: the whole process, interpreter and imports included). Both folders
are removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FOLDERS = 1_000
MAX_FILES = 100
"""Files per batch for the measurement (the job default is 500): more batches, more rows."""
TARGET_S = 60.0
TARGET_MB = 1_000.0
ROW = b"order_id\n1\n"


def measure_planning(files: int, max_files: int = MAX_FILES, where: Path | None = None
                     ) -> dict[str, Any]:
    """Plan `files` tiny files as `batchrun run` does; seconds per phase, peak RSS (MB)."""
    root = Path(tempfile.mkdtemp(prefix="batchrun-capacity-", dir=where or _scratch(files)))
    state = Path(tempfile.mkdtemp(prefix="batchrun-capacity-state-"))  # on disk, as usual
    try:
        started = time.perf_counter()
        job = make_tree(root, files, max_files)
        made = time.perf_counter() - started
        load = os.getloadavg()[0]
        result = _run_child(job, state)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    return {"files": files, "folders": min(FOLDERS, files), "max_files": max_files,
            "files_dir": str(root.parent), "create_files_s": round(made, 1),
            "load_avg_1min": round(load, 1), **result,
            "meets_target": result["plan_s"] <= TARGET_S and result["peak_rss_mb"] <= TARGET_MB}


def _scratch(files: int) -> Path | None:
    """/dev/shm when it holds the files with room to spare (a tmpfs: no disk writes)."""
    shm = Path("/dev/shm")
    try:
        room = shutil.disk_usage(shm).free
    except OSError:
        return None
    return shm if room > files * 8_192 else None


def make_tree(root: Path, files: int, max_files: int) -> Path:
    """`files` tiny CSVs in min(FOLDERS, files) folders, and a job file reading them."""
    folders = max(1, min(FOLDERS, files))
    for index in range(folders):
        (root / f"supplier_{index:04d}").mkdir()
    data = str(root)
    for index in range(files):
        path = f"{data}/supplier_{index % folders:04d}/f{index:07d}.csv"
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(handle, ROW)
        os.close(handle)
    job = root / "job.toml"
    job.write_text(f'[job]\nname = "capacity"\ntable = "t"\n[source]\npaths = ["{data}/*/*.csv"]\n'
                   f'[batch]\nmax_files = {max_files}\n[staging]\ndir = "{data}/staging"\n'
                   '[schema.columns]\norder_id = { type = "int64" }\n')
    return job


def _run_child(job: Path, state_dir: Path) -> dict[str, Any]:
    """The planning in a fresh interpreter, so its peak RSS is the driver's own."""
    done = subprocess.run([sys.executable, __file__, "--child", str(job), str(state_dir)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"planning failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def plan_in_this_process(job_file: Path, state_dir: Path) -> dict[str, Any]:
    """start_run's planning (`_plan_run`), phase by phase: wall and CPU seconds of each,
    this process's peak RSS, and its RSS before the first file (interpreter and imports)."""
    import importlib

    from batchrun.config import load_job
    from batchrun.plan import cut_batches, expand_sources

    clock = _Clock()
    job = load_job(job_file)
    importlib.import_module("batchrun.execution.start")  # what `batchrun run` imports
    clock.lap("import")
    baseline = _peak_rss_mb()
    planned = expand_sources(job, state_dir)
    clock.lap("expand")
    batches = cut_batches(planned, job.config.batch.max_files, job.config.batch.max_bytes)
    clock.lap("cut")
    _record(job, state_dir, batches)
    clock.lap("catalog")
    return {"batches": len(batches), "planned_files": len(planned), **clock.report(),
            "rss_before_files_mb": baseline, "peak_rss_mb": _peak_rss_mb()}


class _Clock:
    """Wall and CPU (user + system) seconds per phase."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, phase: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall[phase], self.cpu[phase] = wall - self._wall, cpu - self._cpu
        self._wall, self._cpu = wall, cpu

    def report(self) -> dict[str, float]:
        return {**{f"{phase}_s": round(s, 2) for phase, s in self.wall.items()},
                **{f"{phase}_cpu_s": round(s, 2) for phase, s in self.cpu.items()},
                "plan_s": round(sum(self.wall.values()), 2),
                "plan_cpu_s": round(sum(self.cpu.values()), 2)}


def _record(job: Any, state_dir: Path, batches: list[Any]) -> None:
    """The plan transaction, as `_plan_run` writes it."""
    import socket

    from batchrun.catalog import Catalog
    from batchrun.execution.start import _stored_config
    from batchrun.model import RunRecord, RunState

    record = RunRecord(run_id="capacity", job=job.name, table=job.table, job_file=str(job.path),
                       staging_dir=str(job.staging_dir), config=_stored_config(job.config),
                       schema={"order_id": "int64"}, state=RunState.PLANNED, pid=os.getpid(),
                       host=socket.gethostname(), created_at=time.time(), started_at=None,
                       finished_at=None, message=None)
    catalog = Catalog(state_dir)
    try:
        catalog.create_run(record, batches)
    finally:
        catalog.close()


def _peak_rss_mb() -> float:
    """This process's peak resident set (ru_maxrss: KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--max-files", type=int, default=MAX_FILES)
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(plan_in_this_process(*args.child)))
        return 0
    result = measure_planning(args.files, args.max_files)
    print(json.dumps(result, indent=2))
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
