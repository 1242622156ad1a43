"""One file, one identity: symlinks, loops and glob spellings plan a file once; a file
that changed after planning is never staged silently; resume retries what may recover."""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, invoke
from batchrun.config import load_job
from batchrun.errors import ConfigError
from batchrun.plan import cut_batches, expand_sources
from batchrun.tools.faults import FAULTS_ENV
from batchrun.walk import matching_files
from tests.conftest import assert_exactly_once, kill_group, parse_json, spawn_cli, table_rows

KILLED_AFTER_PLAN = {FAULTS_ENV: 'kill_driver = "after_plan"'}


def write_csv(path: Path, ids: range) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("id,name\n" + "".join(f"{i},name{i:04d}\n" for i in ids))
    return path


def write_job(folder: Path, *patterns: str, source: str = "", steps: str = "") -> Path:
    paths = ", ".join(f'"{p}"' for p in patterns)
    job = folder / "job.toml"
    job.write_text(f"""
[job]
name = "identity"
table = "items"
[source]
paths = [{paths}]
{source}
[batch]
max_files = 1
[execution]
workers = 2
[staging]
dir = "staging"
{steps}
[schema.columns]
id = {{ type = "int64" }}
name = {{ type = "string" }}
""")
    return job


def run(job: Path, state: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = invoke(["run", str(job), "--state-dir", str(state), "--json", "--no-progress"])
    return code, parse_json(capsys.readouterr().out)


def resume(state: Path) -> int:
    return invoke(["resume", "latest", "--state-dir", str(state), "--no-progress"])


def status(state: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    invoke(["status", "latest", "--state-dir", str(state), "--json"])
    return parse_json(capsys.readouterr().out)


def planned_paths(job: Path) -> list[str]:
    return [f.path for f in expand_sources(load_job(job))]


def plan_then_die(job: Path, state: Path) -> None:
    """`batchrun run` in a subprocess that SIGKILLs itself once the plan is in the catalog."""
    process = spawn_cli("run", job, "--state-dir", state, "--no-progress", env=KILLED_AFTER_PLAN)
    try:
        assert process.wait(timeout=240) == -signal.SIGKILL
    finally:
        kill_group(process)  # the Ray it started
    catalog = Catalog(state)
    assert catalog.counts(catalog.latest_run_id()).batches.pending > 0


# -- planning: one file, one identity ------------------------------------------------------


def test_a_latest_link_and_a_loop_plan_each_file_once_under_its_first_spelling(
        tmp_path: Path) -> None:
    day = tmp_path / "in" / "2024-11-30"
    write_csv(day / "a.csv", range(2))
    write_csv(tmp_path / "in" / "sub" / "b.csv", range(2, 4))
    (tmp_path / "in" / "latest").symlink_to("2024-11-30")
    (tmp_path / "in" / "sub" / "up").symlink_to("..")
    job = write_job(tmp_path, "in/**/*.csv")
    assert planned_paths(job) == [str(day / "a.csv"), str(tmp_path / "in" / "sub" / "b.csv")]


@pytest.mark.parametrize("pattern", [
    "**/*.csv", "*/*.csv", "**", "a/**/c/*.csv", "[ab]*/*.csv", ".hidden/*.csv", "**/.*.csv",
    "a/b/c/x.csv", "a/?/*.csv", "*", "a/**", "a/**/*"])
def test_the_walk_matches_what_glob_matches_where_there_are_no_symlinks(
        tmp_path: Path, pattern: str) -> None:
    for name in ["x.csv", "a/x.csv", "a/b/x.csv", "a/b/c/x.csv", "a/c/y.csv", "b1/z.csv",
                 "b1/.dot.csv", ".hidden/h.csv", "a/.hidden/c/q.csv", "a/b/c/d/e.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("id\n1\n")
    expected = sorted(p for p in glob.glob(f"{tmp_path}/{pattern}", recursive=True)
                      if os.path.isfile(p))
    assert [path for path, _ in matching_files(f"{tmp_path}/{pattern}")] == expected


def test_dangling_links_fifos_and_folders_are_not_planned(tmp_path: Path) -> None:
    write_csv(tmp_path / "in" / "a.csv", range(2))
    (tmp_path / "in" / "gone.csv").symlink_to("nowhere.csv")
    os.mkfifo(tmp_path / "in" / "pipe.csv")
    (tmp_path / "in" / "folder.csv").mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "in" / "sock.csv"))
        assert planned_paths(write_job(tmp_path, "in/*.csv")) == [str(tmp_path / "in" / "a.csv")]


def test_the_same_files_plan_the_same_batch_ids_whatever_the_spellings(tmp_path: Path) -> None:
    for n in range(5):
        write_csv(tmp_path / "in" / f"s{n % 2}" / f"f{n}.csv", range(n * 10, n * 10 + 3))
    plain = load_job(write_job(tmp_path, "in/*/*.csv"))
    first = [b.batch_id for b in cut_batches(expand_sources(plain), 2, 1 << 30)]
    doubled = load_job(write_job(tmp_path, "in/*/*.csv", f"{tmp_path}/in/./*/*.csv",
                                 "in/**/*.csv"))
    assert [b.batch_id for b in cut_batches(expand_sources(doubled), 2, 1 << 30)] == first


def test_planning_skips_files_in_the_staging_and_state_dirs_however_reached(
        tmp_path: Path) -> None:
    write_csv(tmp_path / "data" / "x.csv", range(2))
    output = write_csv(tmp_path / "data" / "staging" / "items" / "part-0" / "y.csv", range(2))
    write_csv(tmp_path / "data" / "state" / "z.csv", range(2))
    (tmp_path / "data" / "link.csv").symlink_to(output)
    job = write_job(tmp_path, "data/**/*.csv").read_text().replace('dir = "staging"',
                                                                  'dir = "data/staging"')
    (tmp_path / "job.toml").write_text(job)
    found = expand_sources(load_job(tmp_path / "job.toml"), tmp_path / "data" / "state")
    assert [f.path for f in found] == [str(tmp_path / "data" / "x.csv")]
    (tmp_path / "data" / "x.csv").unlink()
    with pytest.raises(ConfigError, match=r"3 match\(es\) in its staging or state dir skipped"):
        expand_sources(load_job(tmp_path / "job.toml"), tmp_path / "data" / "state")


def test_a_backtracking_group_by_pattern_plans_in_linear_time(tmp_path: Path) -> None:
    """`(a+)+b` against a long run of a's is exponential in Python's re (18 s for one
    path); RE2 answers at once. A generous bound: only that it finishes."""
    folder = tmp_path / ("a" * 40)
    write_csv(folder / "ab.csv", range(2))
    write_csv(folder / "aab.csv", range(2, 4))
    job = write_job(tmp_path, f"{'a' * 40}/*.csv", source='group_by = "/(?P<src>(a+)+)b"')
    files = _with_timeout(10, lambda: expand_sources(load_job(job)))
    assert {Path(f.path).name: f.source for f in files} == {"ab.csv": "a", "aab.csv": "aa"}


def _with_timeout(seconds: int, call: Callable[[], Any]) -> Any:
    def alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"planning took more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        return call()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_group_by_pattern_re2_refuses_is_a_config_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_csv(tmp_path / "in" / "aa.csv", range(2))  # Python's re would take it, and match
    job = write_job(tmp_path, "in/*.csv", source=r'group_by = "/(?P<src>[a-z])\\1"')
    code = invoke(["run", str(job), "--state-dir", str(tmp_path / "state"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == EXIT_USAGE
    assert "source.group_by" in captured.err and "Traceback" not in captured.err + captured.out
    assert len(captured.err.strip().splitlines()) == 1


# -- runs: rows of a file reached by several paths are staged once -------------------------


@pytest.mark.usefixtures("ray_session")
class TestOneIdentityRuns:
    def test_symlinked_latest_folder_is_staged_once(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        write_csv(tmp_path / "in" / "2024-11-30" / "a.csv", range(10))
        write_csv(tmp_path / "in" / "2024-11-30" / "b.csv", range(10, 25))
        (tmp_path / "in" / "latest").symlink_to("2024-11-30")
        code, report = run(write_job(tmp_path, "in/**/*.csv"), tmp_path / "state", capsys)
        assert code == EXIT_OK and report["files"]["total"] == 2
        assert_exactly_once(tmp_path / "state", 25, key="id")

    def test_a_folder_loop_stages_its_file_once(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        write_csv(tmp_path / "in" / "sub" / "a.csv", range(2))
        (tmp_path / "in" / "sub" / "up").symlink_to("..")
        code, report = run(write_job(tmp_path, "in/**/*.csv"), tmp_path / "state", capsys)
        assert code == EXIT_OK and report["files"]["total"] == 1
        assert_exactly_once(tmp_path / "state", 2, key="id")

    def test_two_spellings_of_one_glob_stage_the_file_once(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        write_csv(tmp_path / "in" / "a.csv", range(7))
        write_csv(tmp_path / "in" / "b.csv", range(7, 9))
        job = write_job(tmp_path, "in/*.csv", f"{tmp_path}/in/./*.csv")  # as typed, not via pathlib
        code, report = run(job, tmp_path / "state", capsys)
        assert code == EXIT_OK and report["files"]["total"] == 2
        assert_exactly_once(tmp_path / "state", 9, key="id")

    def test_a_file_changing_while_it_is_read_is_retried_then_quarantined(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        # a module name no other test uses: the tests share one process and its sys.modules
        (tmp_path / "growing_reader.py").write_text(GROWING_READER)
        write_csv(tmp_path / "in" / "a.csv", range(5))
        grows = write_csv(tmp_path / "in" / "grows.csv", range(5, 8))
        size = grows.stat().st_size
        job = write_job(tmp_path, "in/*.csv", source='reader = "growing_reader:read_and_grow"')
        code, _ = run(job, tmp_path / "state", capsys)
        assert code == EXIT_PARTIAL
        detail = status(tmp_path / "state", capsys)
        assert [(f["path"], f["error"]) for f in detail["failed_files"]] == [
            (str(grows), f"changed since planning: size {size} → {size + 12} bytes")]
        assert any("changed while being read" in b["last_error"] for b in detail["retried_batches"])
        assert_exactly_once(tmp_path / "state", 5, key="id")


GROWING_READER = '''
import pyarrow.csv as pacsv


def read_and_grow(path):
    """Reads the file, and appends a row to grows.csv while reading it the first time."""
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={"id": "string", "name": "string"}))
    if path.endswith("grows.csv") and table.num_rows == 3:
        with open(path, "a") as handle:
            handle.write("99,name0099\\n")
    return table
'''


def quarantined_then_staged(state: Path, capsys: pytest.CaptureFixture[str], path: Path,
                            reason: str, rows: tuple[int, int]) -> None:
    """A resume quarantines `path` alone, for `reason`, staging the other rows exactly once
    (rows[0]); the next resume plans it again and stages every row exactly once (rows[1])."""
    assert resume(state) == EXIT_PARTIAL
    detail = status(state, capsys)
    assert [(f["path"], f["error"]) for f in detail["failed_files"]] == [(str(path), reason)]
    assert_exactly_once(state, rows[0], key="id")
    assert resume(state) == EXIT_OK
    assert_exactly_once(state, rows[1], key="id")


# -- changed and missing input across kill and resume ---------------------------------------


@pytest.mark.usefixtures("ray_session")
class TestChangedInputOnResume:
    def test_a_file_appended_to_after_a_kill_is_quarantined_then_staged_once_on_resume(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        state = tmp_path / "state"
        write_csv(tmp_path / "in" / "a.csv", range(10))
        grown = write_csv(tmp_path / "in" / "b.csv", range(10, 20))
        plan_then_die(write_job(tmp_path, "in/*.csv"), state)
        size = grown.stat().st_size
        with grown.open("a") as handle:
            handle.write("".join(f"{i},name{i:04d}\n" for i in range(20, 25)))
        quarantined_then_staged(state, capsys, grown,
                                f"changed since planning: size {size} → {grown.stat().st_size}"
                                " bytes", rows=(10, 25))
        detail = status(state, capsys)
        assert detail["state"] == "succeeded" and detail["files"]["committed"] == 2
        assert [w["warning"].split(" (")[0] for w in detail["warnings"]] == [
            f"re-planned on resume: size {size} → {grown.stat().st_size} bytes"]

    def test_a_same_size_change_with_its_mtime_restored_is_caught_by_sha256(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        state = tmp_path / "state"
        write_csv(tmp_path / "in" / "a.csv", range(10))
        edited = write_csv(tmp_path / "in" / "b.csv", range(10, 20))
        plan_then_die(write_job(tmp_path, "in/*.csv", source='fingerprint = "sha256"'), state)
        before = edited.stat()
        edited.write_text(edited.read_text().replace("name0015", "NAME0015"))
        os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert edited.stat().st_size == before.st_size
        quarantined_then_staged(state, capsys, edited,
                                "changed since planning: content changed (sha256)", rows=(10, 20))

    def test_a_file_renamed_over_with_its_size_and_mtime_restored_is_caught_by_its_inode(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        state = tmp_path / "state"
        write_csv(tmp_path / "in" / "a.csv", range(10))
        replaced = write_csv(tmp_path / "in" / "b.csv", range(10, 20))
        plan_then_die(write_job(tmp_path, "in/*.csv"), state)
        before = replaced.stat()
        fresh = tmp_path / "b.csv.new"
        fresh.write_text(replaced.read_text().replace("name0015", "NAME0015"))
        os.utime(fresh, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(fresh, replaced)  # what an editor or a sync tool does
        after = replaced.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        quarantined_then_staged(state, capsys, replaced,
                                "changed since planning: now another file"
                                f" (inode {before.st_ino} → {after.st_ino})", rows=(10, 20))

    def test_a_file_whose_latest_link_was_removed_is_staged_under_its_dated_name(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        state = tmp_path / "state"
        day = write_csv(tmp_path / "in" / "2024-11-30" / "a.csv", range(10))
        write_csv(tmp_path / "in" / "2024-12-01" / "a.csv", range(10, 15))
        (tmp_path / "in" / "latest").symlink_to("2024-11-30")
        plan_then_die(write_job(tmp_path, "in/latest/*.csv", "in/2024-*/*.csv"), state)
        (tmp_path / "in" / "latest").unlink()
        assert resume(state) == EXIT_PARTIAL  # in/latest/a.csv: file not found
        assert_exactly_once(state, 5, key="id")
        assert resume(state) == EXIT_OK
        assert_exactly_once(state, 15, key="id")
        detail = status(state, capsys)
        latest = f"{tmp_path}/in/latest/a.csv"
        assert [(w["path"], w["warning"].split(",")[0]) for w in detail["warnings"]] == [
            (str(day), f"planned on resume in place of {latest}")]
        catalog = Catalog(state)
        assert [(row.path, row.reason) for row in catalog.skipped_files(
            catalog.latest_run_id())] == [(latest, "changed since planning: no longer found;"
                                           f" the file it reached when planned is in this run as {day}")]

    def test_a_file_only_chmodded_and_hard_linked_after_planning_is_staged_as_planned(
            self, tmp_path: Path) -> None:
        """Its ctime moved, its bytes did not: ctime is not part of the fingerprint."""
        state = tmp_path / "state"
        write_csv(tmp_path / "in" / "a.csv", range(10))
        touched = write_csv(tmp_path / "in" / "b.csv", range(10, 20))
        plan_then_die(write_job(tmp_path, "in/*.csv"), state)
        ctime = touched.stat().st_ctime_ns
        touched.chmod(0o640)
        (tmp_path / "backup").mkdir()
        os.link(touched, tmp_path / "backup" / "b.csv")  # a snapshot by hard links
        assert touched.stat().st_ctime_ns != ctime
        assert resume(state) == EXIT_OK
        assert_exactly_once(state, 20, key="id")

    def test_a_missing_file_restored_before_resume_is_staged_once(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        state = tmp_path / "state"
        write_csv(tmp_path / "in" / "a.csv", range(10))
        missing = write_csv(tmp_path / "in" / "b.csv", range(10, 30))
        plan_then_die(write_job(tmp_path, "in/*.csv"), state)
        saved, inode = missing.read_bytes(), missing.stat().st_ino
        missing.unlink()
        assert resume(state) == EXIT_PARTIAL
        detail = status(state, capsys)
        assert [(f["path"], f["error"].split(" (")[0]) for f in detail["failed_files"]] == [
            (str(missing), "file not found")]
        assert resume(state) == EXIT_PARTIAL  # still missing: nothing to retry yet
        missing.write_bytes(saved)
        assert resume(state) == EXIT_OK
        run_id = assert_exactly_once(state, 30, key="id")
        detail = status(state, capsys)
        assert detail["files"] == {"total": 2, "committed": 2, "failed": 0, "skipped": 0}
        restored = missing.stat().st_ino  # a new file, unless the inode number is reused
        change = (f"now another file (inode {inode} → {restored})" if restored != inode
                  else "mtime changed")
        assert detail["warnings"][0]["warning"].startswith(
            f"re-planned on resume: {change} (quarantined for: file not found")
        log = (state / "logs" / f"{run_id}.log").read_text()
        assert "still No such file or directory" in log and "re-planned on resume" in log

    def test_a_file_quarantined_for_its_content_is_not_retried(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        write_csv(tmp_path / "in" / "a.csv", range(10))
        (tmp_path / "in" / "b.csv").write_bytes(b"id,name\n1,\xff\xfe\n")
        code, _ = run(write_job(tmp_path, "in/*.csv"), tmp_path / "state", capsys)
        assert code == EXIT_PARTIAL
        batches = len(Catalog(tmp_path / "state").batches(_latest(tmp_path / "state")))
        assert resume(tmp_path / "state") == EXIT_PARTIAL
        assert len(Catalog(tmp_path / "state").batches(_latest(tmp_path / "state"))) == batches
        assert_exactly_once(tmp_path / "state", 10, key="id")


def _latest(state: Path) -> str:
    return Catalog(state).latest_run_id()


# -- round 2: own output, flipped links, NUL bytes (found by the adversarial pass) ----------

SUBPROCESS_ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
ID_V_SCHEMA = '[schema.columns]\nid = { type = "int64" }\nv = { type = "string" }\n'


def cli_process(*args: str | Path, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
    """One real `batchrun` command in a subprocess; stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", "batchrun", *map(str, args)],
                          env={**SUBPROCESS_ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=300, check=False)


def job_file(folder: Path, body: str) -> Path:
    job = folder / "job.toml"
    job.write_text(body)
    return job


def test_a_run_never_reads_its_own_staging_dir_as_input(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3], "v": ["a", "b", "c"]}), tmp_path / "data" / "x.parquet")
    job = job_file(tmp_path, '[job]\nname = "j"\ntable = "t"\n[source]\n'
                   'paths = ["data/**/*.parquet"]\nformat = "parquet"\n'
                   '[staging]\ndir = "data/staging"\n[validation]\n'
                   'on_unknown_columns = "ignore"\n' + ID_V_SCHEMA)
    state = tmp_path / "state"
    for again in ((), ("--full-refresh",)):  # the second run reads every input again
        done = cli_process("run", job, "--state-dir", state, "--no-progress", *again)
        assert done.returncode == 0, done.stderr
    assert table_rows(state, "SELECT count(*), count(DISTINCT id) FROM t") == [(3, 3)]


def test_a_flipped_latest_link_is_not_staged_twice_after_resume(tmp_path: Path) -> None:
    days = {"2024-11-30": "1,a\n2,b\n", "2024-12-01": "3,c\n4,d\n5,e\n"}
    for day, rows in days.items():
        (tmp_path / "in" / day).mkdir(parents=True)
        (tmp_path / "in" / day / "a.csv").write_text("id,v\n" + rows)
    (tmp_path / "in" / "latest").symlink_to("2024-11-30")
    job = job_file(tmp_path, '[job]\nname = "j"\ntable = "t"\n[source]\n'
                   'paths = ["in/latest/*.csv", "in/2024-*/*.csv"]\n'
                   '[execution]\nmode = "sequential"\n' + ID_V_SCHEMA)
    state = tmp_path / "state"
    cli_process("run", job, "--state-dir", state, "--no-progress",
                env={"BATCHRUN_FAULTS": 'kill_driver = "after_commit", kill_driver_after = 1'})
    (tmp_path / "in" / "latest").unlink()
    (tmp_path / "in" / "latest").symlink_to("2024-12-01")  # the nightly feed moves on
    codes = [cli_process("resume", "--state-dir", state, "--no-progress").returncode
             for _ in range(2)]  # the README: resume, restore or wait, resume once more
    count, distinct = table_rows(state, "SELECT count(*), count(DISTINCT id) FROM t")[0]
    assert count == distinct, f"{count} rows staged for {distinct} distinct ids"
    # Truth: each of the two distinct files staged once; `latest` now reaches the file
    # already staged as 2024-12-01, and the day it reached when planned is staged under
    # its own name.
    day = {d: str(tmp_path / "in" / d / "a.csv") for d in days}
    assert table_rows(state, "SELECT id, _file FROM t ORDER BY id") == [
        (1, day["2024-11-30"]), (2, day["2024-11-30"]),
        (3, day["2024-12-01"]), (4, day["2024-12-01"]), (5, day["2024-12-01"])]
    assert codes == [1, 0]
    catalog = Catalog(state)
    assert [(row.path, row.reason) for row in catalog.skipped_files(
        catalog.latest_run_id())] == [
        (str(tmp_path / "in" / "latest" / "a.csv"), "changed since planning: is now the same"
         f" file as {day['2024-12-01']}, already in this run; the file it reached when planned"
         f" is in this run as {day['2024-11-30']}")]


def test_a_nul_byte_in_a_source_path_is_a_job_file_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,v\n1,a\n")
    job = job_file(tmp_path, '[job]\nname = "j"\ntable = "t"\n[source]\n'
                   'paths = ["in/a.csv\\u0000x"]\n' + ID_V_SCHEMA)
    done = cli_process("run", job, "--state-dir", tmp_path / "state", "--no-progress")
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode == 2, done.stderr
    assert "source.paths" in done.stderr
