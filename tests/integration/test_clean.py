"""`batchrun clean`: old runs go, what the job's table serves stays (checked with the
truth), live runs and live processes' files are left alone, the bytes freed are exact.

The module's tests share three runs of one job and run in order: the ones that must
remove nothing first, the one that cleans last. Run 1 stages all 12 files; runs 2 and 3
stage two of them again (supplier_00's first, which shares its batch with the second, and
third, alone in its batch), so the table serves those two from run 3 and the other ten
from run 1: with --keep 1, run 2 goes whole, run 1 keeps the batches that serve."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_LOCKED, EXIT_OK, invoke
from batchrun.tools.demo import DemoTruth
from tests.conftest import parse_json, write_job

pytestmark = pytest.mark.usefixtures("ray_session")
COUNT = "SELECT count(*) AS n, count(DISTINCT order_id) AS d FROM orders"


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory, demo_data: tuple[Path, DemoTruth],
               ray_session: None) -> tuple[Path, Path, DemoTruth]:
    """(folder with job.toml and staging/, state dir, truth) after three runs of one job:
    all 12 files, then twice two of supplier_00's files re-exported (other bytes, the same
    rows), so the first run still serves 10 files and the second serves nothing."""
    folder = tmp_path_factory.mktemp("clean")
    source = folder / "in"
    shutil.copytree(demo_data[0], source)
    job, state = write_job(folder, source), folder / "state"
    some = sorted(source.glob("supplier_00/*.csv"))[::2]
    for night in range(3):
        for path in some if night else []:
            text = path.read_bytes()
            path.write_bytes(text.replace(b"\r\n", b"\n") if b"\r\n" in text
                             else text.replace(b"\n", b"\r\n"))
        assert invoke(["run", str(job), "--state-dir", str(state), "--no-progress"]) == EXIT_OK
    return folder, state, demo_data[1]


def files_under(folder: Path) -> dict[str, int]:
    """Path → size of every staged file and run log of the job in `folder`."""
    return {str(p): p.stat().st_size for under in (folder / "staging", folder / "state" / "logs")
            for p in under.rglob("*") if p.is_file()}


def clean(state: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = invoke(["clean", "--state-dir", str(state), "--json", *args])
    return code, parse_json(capsys.readouterr().out)


def query_count(state: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, int]]:
    capsys.readouterr()
    assert invoke(["query", COUNT, "--state-dir", str(state), "--format", "json"]) == EXIT_OK
    return list(parse_json(capsys.readouterr().out))


@pytest.fixture
def job_lock_held(three_runs: tuple[Path, Path, DemoTruth]) -> Iterator[None]:
    """The job's lock held by another process, as a live run holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from batchrun.lock import JobLock;"
         f" lock = JobLock({str(three_runs[1])!r}, 'orders_job').acquire('live-run');"
         " print('held', flush=True); time.sleep(600)"], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    yield
    holder.kill()
    holder.wait()


def test_a_dry_run_and_a_job_with_a_live_run_remove_nothing(
        three_runs: tuple[Path, Path, DemoTruth], capsys: pytest.CaptureFixture[str],
        job_lock_held: None) -> None:
    folder, state, _ = three_runs
    before = files_under(folder)
    code, report = clean(state, capsys, "--keep", "1")
    assert code == EXIT_LOCKED and "orders_job" in report["busy"][0]
    assert report["removed_runs"] == [] and report["freed_bytes"] == 0
    assert files_under(folder) == before


def test_a_dry_run_says_what_it_would_free_and_removes_nothing(
        three_runs: tuple[Path, Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    folder, state, _ = three_runs
    before = files_under(folder)
    code, report = clean(state, capsys, "--keep", "1", "--dry-run")
    first, second, _ = reversed(Catalog(state).run_ids())
    assert code == EXIT_OK and report["removed_runs"] == [second] and report["freed_bytes"] > 0
    assert report["trimmed_runs"] == [first]
    assert files_under(folder) == before



def test_clean_keeps_what_the_table_serves_and_frees_the_rest_and_dead_leftovers(
        three_runs: tuple[Path, Path, DemoTruth], capsys: pytest.CaptureFixture[str],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, state, truth = three_runs
    staging, (first, second, third) = folder / "staging", reversed(Catalog(state).run_ids())
    with Catalog(state) as catalog:  # as a clean killed after its catalog transaction left it
        catalog.forget_batches({second: set()})
    assert query_count(state, capsys) == [{"n": truth.total_rows, "d": truth.total_rows}]
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftovers = [staging / f".staging.duckdb.{dead.pid}.tmp", staging / f".staging.duckdb.{dead.pid}.tmp.wal",
                 tmp_path / f"batchrun-compare-{dead.pid}-x1y2" / "00-sequential" / "f"]
    alive = [staging / ".staging.duckdb.1.tmp", tmp_path / "batchrun-compare-1-abcd"]
    for path in leftovers + alive:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = files_under(folder)
    code, report = clean(state, capsys, "--keep", "1")
    after = files_under(folder)
    assert code == EXIT_OK and report["removed_runs"] == [second]
    assert report["trimmed_runs"] == [first]
    assert query_count(state, capsys) == [{"n": truth.total_rows, "d": truth.total_rows}]
    gone = set(before) - set(after)
    assert report["freed_bytes"] == sum(before[p] for p in gone) + 100
    assert {f["path"] for f in report["files"]} == gone | {str(leftovers[2].parent.parent)}
    assert not any(second in p for p in after)  # outputs, rejects, log
    assert sum(first in p for p in gone) == 1  # the output of its superseded batch
    assert all(p.exists() for p in alive) and not any(p.exists() for p in leftovers)
    with Catalog(state) as catalog:
        assert catalog.run_ids() == [third, first]
