"""Edges of s3:// sources and staging that an adversarial user hits, against the real
SeaweedFS of test_object_storage (a server of this module's own, in its own network
namespace; batchrun runs inside it)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from batchrun.cli import EXIT_ENVIRONMENT, EXIT_OK
from batchrun.tools.demo import DemoTruth
from tests.integration import test_object_storage as base
from tests.integration.test_object_storage import (
    BUCKET,
    S3_PORT,
    Server,
    assert_secret_nowhere,
    objects,
    s3_job,
)

pytestmark = pytest.mark.slow

server = base.server  # a SeaweedFS of this module's own

PUT_STDIN = """
import sys
from batchrun import objectstore as o
o.configure({"endpoint": "http://127.0.0.1:8333"})
o.client().put(o.Location.of(sys.argv[1]), sys.stdin.buffer.read())
"""

ODD_NAMES = ["sup one/a b.parquet", "ünïcode/ü.parquet", "p+q/e=f.parquet", "pct/c%20d.parquet"]


def put(server: Server, uri: str, data: bytes) -> None:
    done = subprocess.run([*server.enter, sys.executable, "-c", PUT_STDIN, uri], input=data,
                          env=server.env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def parquet_of(path: Path) -> bytes:
    out = io.BytesIO()
    pq.write_table(pacsv.read_csv(path), out)
    return out.getvalue()


def test_parquet_objects_under_odd_keys_are_inferred_through_the_storage_endpoint_and_staged_once(
        server: Server, demo_data: tuple[Path, DemoTruth], tmp_path: Path) -> None:
    """Schema inference reads Parquet footers through batchrun's S3 file system: before, a
    bare `s3://` URI made pyarrow ask AWS for the bucket's region ([storage] endpoint
    ignored). Keys with spaces, unicode, '%', '+' and '=' are listed and read as they are;
    a folder marker ("x/") beside them is not a file."""
    data, truth = demo_data
    names = sorted(truth.files)[:len(ODD_NAMES)]
    for name, key in zip(names, ODD_NAMES, strict=True):
        put(server, f"s3://{BUCKET}/odd/{key}", parquet_of(data / name))
    put(server, f"s3://{BUCKET}/odd/marker/", b"")
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nname = "odd"\ntable = "odd"\n[source]\npaths = ["s3://{BUCKET}/odd/**"]\n'
                   f'format = "parquet"\n[staging]\ndir = "s3://{BUCKET}/staged-odd"\n'
                   f'[storage]\nendpoint = "http://127.0.0.1:{S3_PORT}"\n')
    state = tmp_path / "state"
    env = {"AWS_ENDPOINT_URL": "http://192.0.2.1:9"}  # not the endpoint: [storage] must win
    done = server.cli("run", job, "--state-dir", state, "--no-progress", env=env)
    assert "Traceback" not in done.stderr
    expected = sum(truth.files[name] for name in names)
    sql = "SELECT count(*) AS n, count(DISTINCT order_id) AS d FROM odd"
    counted = server.cli("query", sql, "--state-dir", state, "--format", "json", env=env)
    assert counted.returncode == EXIT_OK, done.stderr + counted.stderr
    assert json.loads(counted.stdout) == [{"n": expected, "d": expected}]
    assert done.returncode == EXIT_OK, done.stderr
    status = server.cli("status", "--state-dir", state, env=env).stdout
    assert "marker/" not in status  # a folder marker ends in "/": no glob name matches it


def test_staging_into_a_missing_bucket_stops_while_planning_with_one_line_and_exit_4(
        server: Server, demo_data: tuple[Path, DemoTruth], tmp_path: Path) -> None:
    """Before, the run staged anyway: SeaweedFS creates a missing bucket on the first PUT
    (AWS refuses every PUT instead, failing each batch)."""
    data, _ = demo_data
    plain = min(p for p in data.rglob("*.csv"))
    put(server, f"s3://{BUCKET}/one/s/{plain.name}", plain.read_bytes())
    job = s3_job(tmp_path, f"s3://{BUCKET}/one", "s3://no-such-staging-bucket/staging")
    done = server.cli("run", job, "--state-dir", tmp_path / "state", "--no-progress")
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: s3://no-such-staging-bucket/staging/: bucket does not exist"
                     f" (HTTP 404 NoSuchBucket from endpoint http://127.0.0.1:{S3_PORT})"]
    assert "Traceback" not in done.stderr
    assert_secret_nowhere(tmp_path / "state", done.stdout + done.stderr)
    with pytest.raises(AssertionError, match="NoSuchBucket|bucket does not exist"):
        objects(server, "s3://no-such-staging-bucket/")  # not made by a PUT


PLAN = """
import sys
from batchrun.config import load_job
from batchrun.errors import ConfigError
from batchrun.plan import expand_sources
try:
    print(len(expand_sources(load_job(sys.argv[1]))))
except ConfigError as exc:
    print(exc)
"""


def test_objects_matched_only_inside_the_staging_prefix_are_counted_in_the_no_match_error(
        server: Server, demo_data: tuple[Path, DemoTruth], tmp_path: Path) -> None:
    """The run never reads its own output; before, the line did not say why nothing matched
    (a local staging dir's matches were counted, an s3:// one's were not)."""
    data, _ = demo_data
    plain = sorted(data.rglob("*.csv"))[:2]
    for path in plain:
        put(server, f"s3://{BUCKET}/lake/s/{path.name}", path.read_bytes())
    job = s3_job(tmp_path, f"s3://{BUCKET}/lake", f"s3://{BUCKET}/lake")
    planned = server.python(PLAN, str(job))
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.strip().endswith("; 2 match(es) in its staging or state dir skipped)")
    elsewhere = s3_job(tmp_path / "other", f"s3://{BUCKET}/lake", f"s3://{BUCKET}/lake-staged")
    assert server.python(PLAN, str(elsewhere)).stdout.strip() == "2"
