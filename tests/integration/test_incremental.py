"""Incremental runs of one job into one state dir: unchanged files are skipped, a changed
file is staged again and supersedes its old rows, --full-refresh stages everything again,
files still being written settle first, and `batchrun plan` shows it all without writing.

Real Ray (the session's), real catalogs and Parquet; the job's table is computed here from
`Catalog.served_files` and the committed outputs with DuckDB, against the rows written."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, invoke
from batchrun.layout import FILE
from batchrun.logs import run_log_path
from tests.conftest import parse_json

JOB = "nightly"
FILES = {"a/1.csv": range(1, 5), "a/2.csv": range(5, 8), "b/3.csv": range(8, 13)}
"""Each file's order ids: 12 rows in three files."""
HOUR = 3600


def write_rows(path: Path, ids: range | list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("order_id,quantity\n" + "".join(f"{i},{i % 7 + 1}\n" for i in ids))


def nightly_job(directory: Path, settle: str = "0s") -> Path:
    """A job over the three files of FILES (written here, an hour old)."""
    for relative, ids in FILES.items():
        write_rows(directory / "in" / relative, ids)
        os.utime(directory / "in" / relative, (time.time() - HOUR,) * 2)
    job = directory / "job.toml"
    job.write_text(f"""
[job]
name = "{JOB}"
table = "orders"
[source]
paths = ["in/*/*.csv"]
settle = "{settle}"
[batch]
max_files = 1
[execution]
workers = 1
[schema.columns]
order_id = {{ type = "int64", required = true }}
quantity = {{ type = "int32", min = 1 }}
""")
    return job


def run(job: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict, str]:
    """`batchrun run --json` in this process: exit code, its JSON, its stderr."""
    code = invoke(["run", str(job), "--state-dir", str(job.parent / "state"), "--json",
                   "--no-progress", *extra])
    captured = capsys.readouterr()
    return code, parse_json(captured.out), captured.err


def job_table(state: Path) -> list[tuple[int, str]]:
    """(order_id, file) of every row the job's table serves: for each served path, its
    rows in the output of the run that served it."""
    rows: list[tuple[int, str]] = []
    with duckdb.connect() as db:
        for served in Catalog(state).served_files(JOB):
            if served.output_path:
                rows += db.execute(f"SELECT order_id, {FILE} FROM read_parquet(?) WHERE {FILE} = ?",
                                   [served.output_path, served.path]).fetchall()
    return sorted(rows)


def truth(directory: Path, files: dict[str, range | list[int]] = FILES) -> list[tuple[int, str]]:
    return sorted((i, str(directory / "in" / relative)) for relative, ids in files.items()
                  for i in ids)


def serving_runs(state: Path) -> dict[str, str]:
    return {Path(s.path).name: s.run_id for s in Catalog(state).served_files(JOB)}


@pytest.mark.usefixtures("ray_session")
def test_a_second_nightly_run_stages_nothing_says_so_and_starts_no_ray(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = nightly_job(tmp_path)
    code, first, _ = run(job, capsys)
    assert code == EXIT_OK and first["rows"]["staged"] == 12
    assert first["incremental"] == {"new": 3, "changed": 0, "unchanged": 0, "settling": 0,
                                    "full_refresh": False}
    ray_tmp = tmp_path / "ray-tmp"  # where a Ray started by the second run would live
    second = subprocess.run(
        [sys.executable, "-m", "batchrun", "run", str(job), "--state-dir", str(tmp_path / "state"),
         "--no-progress"], env={**os.environ, "RAY_TMPDIR": str(ray_tmp)},
        capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == EXIT_OK, second.stderr
    assert second.stderr.startswith("nothing new: 3 files unchanged (run ")
    assert not ray_tmp.exists()
    assert invoke(["status", "--state-dir", str(tmp_path / "state"), "--json"]) == EXIT_OK
    status = parse_json(capsys.readouterr().out)
    assert status["state"] == "succeeded" and status["batches"]["total"] == 0
    assert status["rows"]["staged"] == 0 and status["run_id"] != first["run_id"]
    assert status["incremental"]["unchanged"] == 3 and status["incremental"]["new"] == 0
    log = run_log_path(tmp_path / "state", status["run_id"]).read_text()
    assert "nothing new: 3 files unchanged; Ray not started" in log and "connected to Ray" not in log
    assert job_table(tmp_path / "state") == truth(tmp_path)
    inbox = tmp_path / "in"  # a renamed file and a copy re-sent under a new name: same bytes
    (inbox / "a" / "2.csv").rename(inbox / "a" / "2-renamed.csv")
    (inbox / "b" / "3-resent.csv").write_bytes((inbox / "b" / "3.csv").read_bytes())
    code, third, _ = run(job, capsys)
    assert code == EXIT_OK and third["batches"]["total"] == 0
    assert third["incremental"]["unchanged"] == 4 and third["incremental"]["new"] == 0
    assert job_table(tmp_path / "state") == truth(tmp_path)  # each row once, as first staged


@pytest.mark.usefixtures("ray_session")
def test_an_appended_file_is_staged_again_once_and_a_touched_file_is_not(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = nightly_job(tmp_path)
    first = run(job, capsys)[1]["run_id"]
    appended = [*FILES["a/1.csv"], 100, 101]
    write_rows(tmp_path / "in" / "a" / "1.csv", appended)
    touched = tmp_path / "in" / "b" / "3.csv"
    os.utime(touched, (time.time() - 60,) * 2)  # same bytes, another mtime
    code, second, _ = run(job, capsys)
    assert code == EXIT_OK
    assert second["incremental"] == {"new": 0, "changed": 1, "unchanged": 2, "settling": 0,
                                     "full_refresh": False}
    assert second["rows"]["staged"] == len(appended) and second["batches"]["total"] == 1
    assert serving_runs(tmp_path / "state") == {"1.csv": second["run_id"], "2.csv": first,
                                                "3.csv": first}
    assert job_table(tmp_path / "state") == truth(tmp_path, {**FILES, "a/1.csv": appended})
    with Catalog(tmp_path / "state") as catalog:  # the touched file's checksum is kept
        assert catalog.verified_checksums(JOB)[str(touched)][:2] == (
            touched.stat().st_size, touched.stat().st_mtime_ns)
    code, third, _ = run(job, capsys)
    assert code == EXIT_OK and third["batches"]["total"] == 0
    assert third["incremental"]["unchanged"] == 3


@pytest.mark.usefixtures("ray_session")
def test_full_refresh_stages_every_file_again_and_the_table_serves_the_new_run_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = nightly_job(tmp_path)
    run(job, capsys)
    code, again, _ = run(job, capsys, "--full-refresh")
    assert code == EXIT_OK
    assert again["rows"]["staged"] == 12 and again["batches"]["committed"] == 3
    assert again["incremental"] == {"new": 0, "changed": 0, "unchanged": 3, "settling": 0,
                                    "full_refresh": True}
    assert set(serving_runs(tmp_path / "state").values()) == {again["run_id"]}
    assert job_table(tmp_path / "state") == truth(tmp_path)
    gone = tmp_path / "in" / "a" / "2.csv"  # re-sent compressed: other bytes, another name
    with gone.open("rb") as plain, gzip.open(gone.with_suffix(".csv.gz"), "wb") as packed:
        packed.write(plain.read())
    gone.unlink()
    job.write_text(job.read_text().replace('paths = ["in/*/*.csv"]',
                                           'paths = ["in/*/*.csv", "in/*/*.csv.gz"]'))
    code, rebuilt, _ = run(job, capsys, "--full-refresh")
    assert code == EXIT_OK and rebuilt["rows"]["staged"] == 12
    assert "2.csv" not in serving_runs(tmp_path / "state")  # gone since the full refresh
    assert job_table(tmp_path / "state") == sorted(
        (i, str(tmp_path / "in" / relative.replace("2.csv", "2.csv.gz"))) for relative, ids
        in FILES.items() for i in ids)


@pytest.mark.usefixtures("ray_session")
def test_a_file_still_being_written_is_left_for_the_run_after_it_settles(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = nightly_job(tmp_path, settle="10m")
    uploading = tmp_path / "in" / "b" / "3.csv"
    os.utime(uploading, (time.time() - 5,) * 2)  # written 5 s ago: inside settle
    code, first, _ = run(job, capsys)
    assert code == EXIT_OK and first["rows"]["staged"] == 7
    assert first["incremental"] == {"new": 2, "changed": 0, "unchanged": 0, "settling": 1,
                                    "full_refresh": False}
    assert "3.csv" not in serving_runs(tmp_path / "state")
    code, waiting, _ = run(job, capsys)  # still settling, the rest unchanged: nothing new
    assert code == EXIT_OK and waiting["batches"]["total"] == 0
    assert waiting["incremental"]["settling"] == 1 and waiting["message"] == (
        "nothing new: 2 files unchanged, 1 settling")
    os.utime(uploading, (time.time() - HOUR,) * 2)  # the upload has settled
    code, second, _ = run(job, capsys)
    assert code == EXIT_OK and second["rows"]["staged"] == 5
    assert second["incremental"] == {"new": 1, "changed": 0, "unchanged": 2, "settling": 0,
                                     "full_refresh": False}
    assert job_table(tmp_path / "state") == truth(tmp_path)


def listing(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below `folders`: (size, mtime_ns)."""
    found = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            stat = path.stat()
            found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.mark.usefixtures("ray_session")
def test_plan_shows_what_a_run_would_do_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = nightly_job(tmp_path)
    state = tmp_path / "state"
    assert invoke(["plan", str(job), "--state-dir", str(state)]) == EXIT_OK
    shown = capsys.readouterr().out
    assert "files: 3 new, 0 changed, 0 unchanged" in shown and "3 batch(es) of 3 file(s)" in shown
    assert not state.exists() and not (tmp_path / "staging").exists()
    run(job, capsys)
    write_rows(tmp_path / "in" / "a" / "2.csv", [5, 6, 7, 8000])
    os.utime(tmp_path / "in" / "b" / "3.csv", (time.time() - 60,) * 2)  # hashed, not kept
    before = listing(state, tmp_path / "staging")
    assert invoke(["plan", str(job), "--state-dir", str(state), "--json"]) == EXIT_OK
    planned = parse_json(capsys.readouterr().out)
    assert listing(state, tmp_path / "staging") == before
    assert planned["files"] == {"new": 0, "changed": 1, "unchanged": 2, "settling": 0}
    assert planned["examples"]["changed"] == [str(tmp_path / "in" / "a" / "2.csv")]
    assert (planned["batches"], planned["planned_files"]) == (1, 1)
    assert planned["sources"] == {"a": {"batches": 1, "files": 1, "bytes": planned["bytes"]}}
    assert invoke(["plan", str(job), "--state-dir", str(state), "--full-refresh"]) == EXIT_OK
    assert "would run: 3 batch(es) of 3 file(s)" in capsys.readouterr().out
    assert listing(state, tmp_path / "staging") == before
