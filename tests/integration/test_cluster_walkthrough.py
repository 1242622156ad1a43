"""The README's "Running on a cluster" walkthrough, end to end: a cluster of real
`ray start` processes whose worker node is another machine as Ray sees it (its own IP,
127.0.0.2), a bucket on a real S3 server (SeaweedFS), `s3://` sources and staging, a
worker node killed mid-run, and every row staged exactly once, read back offline by
`batchrun query`.

Everything runs in one network namespace with only `lo` (the cluster's): the head, the
worker node, the S3 server and the batchrun driver. Each node gets the S3 credentials
in its environment, as the README tells a user to set them on the nodes.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK
from batchrun.tools.demo import DemoTruth
from tests.conftest import wait_for
from tests.integration.cluster import LoopbackCluster, kill_session, loopback_cluster
from tests.integration.test_cluster import committed_nodes
from tests.integration.test_object_storage import (
    ACCESS_KEY,
    BUCKET,
    S3_PORT,
    SECRET,
    UPLOAD,
    Server,
    assert_staged_once,
    s3_job,
    seaweed_home,
    serving,
    weed_mini,
)

pytestmark = pytest.mark.slow

S3_ENV = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
          "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}"}


@contextmanager
def credentials_on_every_node() -> Iterator[None]:
    """The S3 variables in this process's environment while the cluster starts, so the
    head and every node inherit them (the cluster helper copies os.environ)."""
    saved = {name: os.environ.get(name) for name in S3_ENV}
    os.environ.update(S3_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def bucket_beside(cluster: LoopbackCluster, home: Path) -> Iterator[Server]:
    """A SeaweedFS with one identity and BUCKET, in the cluster's network namespace."""
    weed = subprocess.Popen(
        cluster.inside(*weed_mini(seaweed_home(home))), cwd=home, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    with serving(weed, {**cluster.env, **S3_ENV}, kill_session) as server:
        yield server


def test_the_readme_cluster_walkthrough_stages_every_row_once_on_s3_through_a_node_loss(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    data, truth = demo_data
    with credentials_on_every_node(), loopback_cluster(workers=0) as cluster:
        node = cluster.add_node(ip="127.0.0.2")  # another machine: a local staging dir is refused
        cluster.wait_for_nodes(2)
        with bucket_beside(cluster, tmp_path / "seaweed") as server:
            uploaded = server.python(UPLOAD, str(data), f"s3://{BUCKET}/in/")
            assert uploaded.returncode == 0, uploaded.stderr
            staging, state = f"s3://{BUCKET}/staging", tmp_path / "state"
            job = s3_job(tmp_path / "job", f"s3://{BUCKET}/in", staging, batch="max_files = 1")
            run = cluster.batchrun("run", job, "--state-dir", state, "--no-progress",
                                   cwd=tmp_path, env={**S3_ENV, "BATCHRUN_FAULTS": "batch_delay = 1.0"})
            wait_for(lambda: len(committed_nodes(state)) == 2, timeout=180)
            cluster.kill_node(node)
            killed_at = time.time()
            _, stderr = run.communicate(timeout=300)
            assert run.returncode == EXIT_OK, stderr
            assert_staged_once(server, state, staging, truth)  # by batchrun query, offline
            with Catalog(state) as catalog:
                run_id = catalog.latest_run_id()
                late = {b["node_ip"] for b in catalog.batches(run_id)
                        if b["finished_at"] > killed_at + 1}
                retried = [a for a in catalog.attempt_rows(run_id) if a["attempt"] > 1]
            assert late <= {"127.0.0.1"} and retried, "the lost node's batches ran again on the head"
            status = server.cli("status", "--state-dir", state)
            assert "127.0.0.2" in status.stdout and "127.0.0.1" in status.stdout, status.stdout
            again = min(a["queued_at"] for a in retried) - killed_at
            report = server.cli("report", "--state-dir", state).stdout
            print(f"node killed; its batch dispatched again after {again:.1f}s\n{report}")
