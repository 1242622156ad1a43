"""Shared fixtures: one real Ray instance per session, generated data with a known truth,
job files in tmp_path, and helpers that check staged rows against that truth.

scripts/test.sh runs the suite on two pytest-xdist workers (`-n 2 --dist loadgroup`): each
worker has its own session fixtures (its own in-process Ray, its own demo data). Tests
that start a Ray cluster registering itself in the machine's /tmp/ray (see
`registers_ray_cluster`) all go to one worker, one at a time."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from batchrun.catalog import Catalog
from batchrun.execution.ray_session import _lean_local_start
from batchrun.staging import query_connection, staged_files
from batchrun.tools.demo import DemoSpec, DemoTruth, generate

REPO = Path(__file__).resolve().parents[1]
DEMO_JOB = REPO / "configs" / "demo.toml"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no Ray started by a test phones home
for _name in ("RAY_ADDRESS", "BATCHRUN_ADDRESS", "BATCHRUN_STATE_DIR"):
    # a test names the cluster it means (or sets these itself): a shell's cluster is not it
    os.environ.pop(_name, None)


REGISTRATION_GROUP = "ray_registration"
_STARTS_REGISTERED_CLUSTERS = ("standing_head", "registration_restored", "Cluster")
"""Names a test module has when it starts clusters registered in /tmp/ray: `ray start`
(test_registered_ray.py's `standing_head`, or anything saving the registration with its
`registration_restored`) and ray.cluster_utils' `Cluster` both write
/tmp/ray/ray_current_cluster, which two such tests at once would overwrite and restore
under each other."""


def registers_ray_cluster(item: pytest.Item) -> bool:
    """Whether `item` starts (or fakes) a Ray cluster registered in /tmp/ray: marked so, or
    in a module that uses one of `_STARTS_REGISTERED_CLUSTERS`."""
    module = getattr(item, "module", None)
    return (item.get_closest_marker(REGISTRATION_GROUP) is not None
            or any(hasattr(module, name) for name in _STARTS_REGISTERED_CLUSTERS))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist's `--dist loadgroup`, every test that registers a Ray cluster runs on
    the same worker, one after another (the other worker goes on with the rest)."""
    for item in items:
        if registers_ray_cluster(item):
            item.add_marker(pytest.mark.xdist_group(REGISTRATION_GROUP))


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One private local Ray instance for every in-process test (start-up costs ~3 s), never
    a cluster that happens to be registered on the machine or named by RAY_ADDRESS."""
    with _lean_local_start():  # as a run's own instance: no monitor or log monitor polling
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoTruth]:
    """12 small supplier files (every 4th gzipped): ~17k rows with a known truth."""
    out = tmp_path_factory.mktemp("suppliers")
    truth = generate(DemoSpec(out_dir=out, suppliers=4, files_per_supplier=3,
                              file_bytes=150_000, gzip_every=4, seed=7))
    return out, truth


ON_RAY = 'workers = 2\npool = "ray"'
"""`write_job(execution=ON_RAY)`: the run's batches go to Ray actors even where the plan is
small enough for the inline pool (tests of Ray's behaviour: kills, actors, sessions)."""


def write_job(directory: Path, data_dir: Path, *, name: str = "orders_job",
              batch: str = "max_files = 2", execution: str = "workers = 2",
              extra: str = "") -> Path:
    """A job file like configs/demo.toml, reading `data_dir` and staging into directory."""
    schema = DEMO_JOB.read_text().split("[validation]", 1)[1]
    body = f"""
[job]
name = "{name}"
table = "orders"

[source]
paths = ["{data_dir}/*/*.csv", "{data_dir}/*/*.csv.gz"]

[batch]
{batch}

[execution]
{execution}

[staging]
dir = "staging"
{extra}
[validation]{schema}"""
    path = directory / "job.toml"
    path.write_text(body)
    return path


def parse_json(stdout: str) -> Any:
    """The JSON document batchrun printed (a shared in-process Ray may print notices too)."""
    start = min(i for i in (stdout.find("{"), stdout.find("[")) if i >= 0)
    return json.JSONDecoder().raw_decode(stdout[start:])[0]


def spawn_cli(*args: str | Path, env: dict[str, str] | None = None,
              log: Path | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `python -m batchrun ...` in its own process group (so it can be killed whole)."""
    output = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "batchrun", *map(str, args)],
                            env={**os.environ, **(env or {})}, stdout=output, cwd=cwd,
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(process: subprocess.Popen[bytes], signum: int = signal.SIGKILL) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def wait_for(predicate: Any, timeout: float = 120.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


def committed_batches(state_dir: Path) -> int:
    catalog_file = state_dir / "catalog.sqlite"
    if not catalog_file.exists():
        return 0
    catalog = Catalog(state_dir)
    try:
        runs = catalog.run_ids()
        return catalog.counts(runs[0]).batches.committed if runs else 0
    finally:
        catalog.close()


def staged_counts(state_dir: Path, run_id: str | None = None, key: str = "order_id") -> dict[str, int]:
    """Rows, distinct order ids and rejects through the staging views of a run."""
    catalog = Catalog(state_dir)
    run_id = run_id or catalog.latest_run_id()
    record = catalog.run(run_id)
    db = query_connection(record.table, record.schema or {}, catalog.committed(run_id))
    rows, distinct = db.execute(f"SELECT count(*), count(DISTINCT {key}) FROM {record.table}"
                                ).fetchone()
    rejected = db.execute(f"SELECT count(*) FROM {record.table}__rejects").fetchone()[0]
    return {"rows": rows, "distinct": distinct, "rejected": rejected}


def table_rows(state_dir: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of `sql` over the latest run's staging views (the same views `query` builds)."""
    catalog = Catalog(state_dir)
    try:
        record = catalog.run(catalog.latest_run_id())
        db = query_connection(record.table, record.schema or {}, catalog.committed(record.run_id))
        return [tuple(row) for row in db.execute(sql).fetchall()]
    finally:
        catalog.close()


def assert_exactly_once(state_dir: Path, truth_rows: int, truth_rejects: int = 0,
                        key: str = "order_id") -> str:
    """Valid rows staged exactly once; no uncommitted or temporary file left on disk."""
    catalog = Catalog(state_dir)
    run_id = catalog.latest_run_id()
    counts = staged_counts(state_dir, run_id, key)
    assert counts == {"rows": truth_rows, "distinct": truth_rows, "rejected": truth_rejects}
    record = catalog.run(run_id)
    on_disk = {str(p) for p in staged_files(Path(record.staging_dir), record.table, run_id)}
    assert on_disk == catalog.committed(run_id).paths, "uncommitted or temporary files left behind"
    return run_id
