"""A real multi-node Ray cluster on loopback: batchrun joins it with --address."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_ENVIRONMENT, EXIT_OK, invoke
from batchrun.model import RunState
from batchrun.tools.demo import DemoTruth
from tests.conftest import assert_exactly_once, write_job

LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Makes Ray keep 127.0.0.1 instead of swapping in the machine's external address."""


@pytest.fixture
def two_node_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    for name, value in LOOPBACK_ONLY.items():
        monkeypatch.setenv(name, value)
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False,
                                      "node_ip_address": "127.0.0.1"})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


@pytest.mark.slow
def test_a_job_runs_on_a_two_node_cluster_with_exact_counts(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], two_node_cluster: Cluster) -> None:
    data, truth = demo_data
    job = write_job(tmp_path, data, batch="max_files = 1")
    state = tmp_path / "state"
    done = subprocess.run([sys.executable, "-m", "batchrun", "run", str(job), "--address",
                           two_node_cluster.address, "--state-dir", str(state), "--json",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout)["rows"]["staged"] == truth.total_rows
    run_id = assert_exactly_once(state, truth.total_rows)
    nodes = {b["node"] for b in Catalog(state).batches(run_id)}
    assert len(nodes) == 2, "both nodes should have run batches"


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
