"""A real multi-node Ray cluster on loopback (tests/integration/cluster.py: `ray start`
processes, as a user starts them): batchrun joins it with --address, spreads its workers
over the nodes, survives the loss of one, and refuses a local staging folder when a node
is on another machine."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_ENVIRONMENT, EXIT_OK, EXIT_USAGE, invoke
from batchrun.config import load_job
from batchrun.execution.ray_pool import RayActorPool
from batchrun.model import AttemptOutcome, BatchTask, RunState
from batchrun.pipeline import PipelineSpec
from batchrun.tools.demo import DemoTruth
from tests.conftest import assert_exactly_once, parse_json, wait_for, write_job
from tests.integration.cluster import LoopbackCluster, loopback_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[LoopbackCluster]:
    """A head of 1 CPU and a worker node of 1 CPU, shared by this module's tests."""
    with loopback_cluster(workers=1) as running:
        yield running


def start_run(cluster: LoopbackCluster, tmp_path: Path, data: Path, faults: str = ""
              ) -> subprocess.Popen[str]:
    job = write_job(tmp_path, data, batch="max_files = 1")
    return cluster.batchrun("run", job, "--state-dir", tmp_path / "state", "--no-progress",
                            cwd=tmp_path, env={"BATCHRUN_FAULTS": faults} if faults else None)


def finished(run: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = run.communicate(timeout=300)
    return run.returncode, stderr


def committed_nodes(state: Path) -> set[str]:
    if not (state / "catalog.sqlite").exists():
        return set()
    with Catalog(state) as catalog:
        runs = catalog.run_ids()
        return {b["node"] for b in catalog.batches(runs[0]) if b["node"]} if runs else set()


@pytest.mark.slow
def test_batches_land_on_both_nodes_and_a_killed_nodes_batches_are_retried_exactly_once(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], cluster: LoopbackCluster,
        capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = demo_data
    node = cluster.worker_node()
    bare = subprocess.run([cluster.node_python, "-c", "import batchrun"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert "No module named 'batchrun'" in bare.stderr  # the run ships it (py_modules)
    state = tmp_path / "state"
    run = start_run(cluster, tmp_path, data, faults="batch_delay = 1.0")
    both = wait_for(lambda: len(committed_nodes(state)) == 2 and committed_nodes(state))
    cluster.kill_node(node)
    killed_at = time.time()
    code, stderr = finished(run)
    assert code == EXIT_OK, stderr
    run_id = assert_exactly_once(state, truth.total_rows)
    with Catalog(state) as catalog:
        attempts, batches = catalog.attempt_rows(run_id), catalog.batches(run_id)
    late = {b["node"] for b in batches if b["finished_at"] > killed_at + 1}
    assert len(late) == 1 and late < both, "after the kill only the head commits"
    retried = [a for a in attempts if a["outcome"] == AttemptOutcome.RETRIED.value]
    assert retried and all("died" in a["error"] for a in retried)
    noticed = min(a["ended_at"] for a in retried) - killed_at
    again = min(a["queued_at"] for a in attempts if a["attempt"] > 1) - killed_at
    assert again < 10, f"a lost node's batch was dispatched again {again:.1f}s after the kill"
    print(f"node killed: noticed after {noticed:.1f}s, batch dispatched again after {again:.1f}s")
    assert_status_and_report_name_both_nodes(state, run_id, truth, capsys)


def assert_status_and_report_name_both_nodes(state: Path, run_id: str, truth: DemoTruth,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(["status", run_id, "--state-dir", str(state), "--json"]) == EXIT_OK
    nodes = parse_json(capsys.readouterr().out)["nodes"]
    assert sum(n["batches"] for n in nodes) == 12 and len(nodes) == 2
    assert {n["node_ip"] for n in nodes} == {"127.0.0.1"}
    assert invoke(["report", run_id, "--state-dir", str(state), "--json"]) == EXIT_OK
    per_node = parse_json(capsys.readouterr().out)["nodes"]
    assert sum(n["rows"] for n in per_node) == truth.total_rows
    assert all(n["mb_per_s"] > 0 and n["batches"] for n in per_node) and len(per_node) == 2


@pytest.mark.slow
def test_a_local_staging_dir_with_a_node_on_another_machine_is_refused_before_any_batch(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], cluster: LoopbackCluster) -> None:
    data, _ = demo_data
    other = cluster.add_node(ip="127.0.0.2")  # another machine, as Ray sees it
    try:
        cluster.worker_node()
        code, stderr = finished(start_run(cluster, tmp_path, data))
    finally:
        cluster.kill_node(other)
    assert code == EXIT_USAGE, stderr
    assert stderr.strip().count("\n") == 0, stderr
    assert "staging dir" in stderr and "127.0.0.2" in stderr and "s3://" in stderr
    with Catalog(tmp_path / "state") as catalog:
        run_id = catalog.latest_run_id()
        assert catalog.attempt_rows(run_id) == []
        assert catalog.run(run_id).state is RunState.FAILED


class CpuHolder:
    def ready(self) -> bool:
        return True


def test_a_replacement_gets_batches_once_placed_and_writes_a_partition_nobody_owned(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], ray_session: None) -> None:
    import ray

    data, _ = demo_data
    config = load_job(write_job(tmp_path, data), {}).config
    spec = PipelineSpec(run_id="r", table="orders", staging_dir=str(tmp_path / "staging"),
                        fmt="csv", csv=config.source.csv, columns=dict(config.schema_.columns),
                        validation=config.validation)
    pool = RayActorPool(spec, {"num_cpus": 1})
    pool.start(2)  # the session's 2 CPUs
    try:
        ray.kill(pool.actors[1])  # as if its node died, and its CPU went to another job:
        holder = ray.remote(num_cpus=1)(CpuHolder).remote()
        ray.get(holder.ready.remote())
        pool.replace(1)  # no CPU is free for the replacement
        time.sleep(1)
        assert not pool.usable(1)
        ray.kill(holder)
        wait_for(lambda: pool.usable(1), timeout=60)
        task = BatchTask(batch_id="b", files=(str(next(data.glob("*/*.csv"))),))
        result = ray.get(pool.submit(1, task))
        assert result.worker == 2 and "/part-002/" in (result.output_path or "")
    finally:
        pool.shutdown()


def test_an_unreachable_cluster_fails_fast_with_exit_4(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = demo_data
    job = write_job(tmp_path, data)
    code = invoke(["run", str(job), "--address", "127.0.0.1:9", "--state-dir", str(tmp_path / "s")])
    assert code == EXIT_ENVIRONMENT
    assert "cannot reach Ray at 127.0.0.1:9" in capsys.readouterr().err
    catalog = Catalog(tmp_path / "s")
    run = catalog.run(catalog.latest_run_id())  # planned beside the attempt, then failed
    assert run.state is RunState.FAILED
    assert run.message is not None and "cannot reach Ray at 127.0.0.1:9" in run.message
