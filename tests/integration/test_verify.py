"""Committed output you can verify: size and checksum in every commit record, `verify`,
`resume --repair`, and one clear line (no traceback) when a committed file is lost."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_ENVIRONMENT, EXIT_OK, EXIT_PARTIAL, invoke
from batchrun.layout import file_checksum
from batchrun.model import CommittedFile
from batchrun.tools.demo import DemoSpec, DemoTruth, generate
from batchrun.tools.faults import FAULTS_ENV
from tests.conftest import assert_exactly_once, kill_group, parse_json, spawn_cli, staged_counts, write_job

UNIQUE_JOB = """
[job]
name = "unique"
table = "orders"
[source]
paths = ["in/*.csv"]
[batch]
max_files = 1
[execution]
workers = 2
[schema.columns]
order_id = { type = "int64", required = true, unique = true }
quantity = { type = "int32", min = 1 }
"""


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoTruth]:
    """6 supplier files with ~2% bad rows (so batches write rejects files too)."""
    out = tmp_path_factory.mktemp("feed")
    truth = generate(DemoSpec(out_dir=out, suppliers=3, files_per_supplier=2, file_bytes=80_000,
                              gzip_every=3, bad_row_rate=0.02, seed=5))
    assert truth.total_rejects > 0 and truth.quarantined_files == 0
    return out, truth


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """batchrun in its own process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "batchrun", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def run_feed(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    state = tmp_path / "state"
    job = write_job(tmp_path, data, batch="max_files = 1")
    assert invoke(["run", str(job), "--state-dir", str(state), "--no-progress"]) == EXIT_OK
    capsys.readouterr()
    return state


def committed_files(state: Path) -> list[CommittedFile]:
    catalog = Catalog(state)
    return catalog.committed_files(catalog.latest_run_id())


def flip_a_byte_in_the_middle(path: str) -> None:
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0x01
    Path(path).write_bytes(data)


def verify(state: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = invoke(["verify", "--state-dir", str(state), *args])
    return code, capsys.readouterr().out


@pytest.mark.usefixtures("ray_session")
def test_every_commit_records_the_size_and_checksum_of_the_bytes_on_disk(
        tmp_path: Path, feed: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = feed
    state = run_feed(tmp_path, data, capsys)
    files = committed_files(state)
    assert {f.kind for f in files} == {"output", "rejects"}
    for f in files:
        assert f.size == Path(f.path).stat().st_size
        assert f.checksum == file_checksum(f.path) and f.checksum.startswith("xxh3_128:")
    assert_exactly_once(state, truth.total_valid_rows, truth.total_rejects)


@pytest.mark.usefixtures("ray_session")
def test_verify_names_a_deleted_and_a_bit_flipped_file_and_repair_stages_their_rows_once(
        tmp_path: Path, feed: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = feed
    state = run_feed(tmp_path, data, capsys)
    outputs = [f for f in committed_files(state) if f.kind == "output"]
    rejects = [f for f in committed_files(state) if f.kind == "rejects"]
    deleted, flipped, flipped_rejects = outputs[0], outputs[1], rejects[-1]
    Path(deleted.path).unlink()
    flip_a_byte_in_the_middle(flipped.path)
    flip_a_byte_in_the_middle(flipped_rejects.path)

    code, printed = verify(state, capsys)
    assert code == EXIT_PARTIAL
    assert f"missing: {deleted.path}\n" in printed
    assert f"checksum mismatch: {flipped.path}\n" in printed
    assert f"checksum mismatch: {flipped_rejects.path}\n" in printed
    assert "3 bad" in printed.splitlines()[-1]
    code, printed = verify(state, capsys, "--json")
    report = parse_json(printed)
    assert code == EXIT_PARTIAL and not report["ok"]
    assert {(b["path"], b["problem"]) for b in report["bad"]} == {
        (deleted.path, "missing"), (flipped.path, "checksum"), (flipped_rejects.path, "checksum")}

    assert invoke(["resume", "--repair", "--state-dir", str(state), "--no-progress"]) == EXIT_OK
    assert f"repaired: missing: {deleted.path}" in capsys.readouterr().err
    assert verify(state, capsys)[0] == EXIT_OK
    run_id = assert_exactly_once(state, truth.total_valid_rows, truth.total_rejects)
    counts = Catalog(state).counts(run_id)
    assert counts.batches.committed == counts.batches.total
    assert counts.rows.staged == truth.total_valid_rows
    assert counts.rows.rejected == truth.total_rejects


@pytest.mark.usefixtures("ray_session")
def test_a_size_change_is_reported_with_both_sizes(
        tmp_path: Path, feed: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = feed
    state = run_feed(tmp_path, data, capsys)
    victim = committed_files(state)[0]
    with open(victim.path, "r+b") as handle:
        handle.truncate(100)
    code, printed = verify(state, capsys)
    assert code == EXIT_PARTIAL
    assert f"size 100 != recorded {victim.size}: {victim.path}" in printed


@pytest.mark.usefixtures("ray_session")
def test_outputs_committed_without_a_checksum_are_unverifiable_and_do_not_fail_verify(
        tmp_path: Path, feed: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = feed
    state = run_feed(tmp_path, data, capsys)
    with sqlite3.connect(state / "catalog.sqlite") as db:  # as an older batchrun left them
        db.execute("UPDATE batches SET output_size=NULL, output_checksum=NULL,"
                   " rejects_size=NULL, rejects_checksum=NULL")
    files = committed_files(state)
    code, printed = verify(state, capsys)
    assert code == EXIT_OK
    assert printed.count("unverifiable (no checksum recorded): ") == len(files)
    assert f"{len(files)} unverifiable" in printed.splitlines()[-1]
    assert_exactly_once(state, truth.total_valid_rows, truth.total_rejects)


@pytest.mark.usefixtures("ray_session")
def test_a_damaged_unique_key_rejects_file_is_recomputed_by_repair(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header = "order_id,quantity\n"
    for name, body in {"a.csv": "1,5\n2,5\n3,5\n", "b.csv": "2,1\n4,1\n3,0\n",
                       "c.csv": "1,2\n5,2\n6,2\n"}.items():
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_text(header + body)
    (tmp_path / "job.toml").write_text(UNIQUE_JOB)
    state = tmp_path / "state"
    assert invoke(["run", str(tmp_path / "job.toml"), "--state-dir", str(state),
                   "--no-progress"]) == EXIT_OK
    unique = next(f for f in committed_files(state) if f.kind == "unique")
    assert unique.size == Path(unique.path).stat().st_size
    flip_a_byte_in_the_middle(unique.path)
    capsys.readouterr()

    code, printed = verify(state, capsys)
    assert code == EXIT_PARTIAL and f"checksum mismatch: {unique.path}" in printed
    assert invoke(["resume", "--repair", "--state-dir", str(state), "--no-progress"]) == EXIT_OK
    assert verify(state, capsys)[0] == EXIT_OK
    # 6 distinct ids staged once; rejects: 3,0 (min) and the later 2, 1 (unique)
    assert_exactly_once(state, truth_rows=6, truth_rejects=3)
    assert invoke(["rejects", "--state-dir", str(state), "--json"]) == EXIT_OK
    found = parse_json(capsys.readouterr().out)
    assert sorted((Path(r["file"]).name, r["line"], r["rule"]) for r in found) == [
        ("b.csv", 2, "unique"), ("b.csv", 4, "min"), ("c.csv", 2, "unique")]


def query_and_rejects_errors(state: Path) -> list[str]:
    """The stderr of `query` and of `rejects` on a run with a damaged committed file: each
    exits 4 with one line and no traceback; returns the two lines."""
    lines = []
    for command in (["query", "SELECT count(*) FROM orders"], ["rejects"]):
        done = cli(*command, "--state-dir", state)
        assert done.returncode == EXIT_ENVIRONMENT, done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        shown = done.stderr.strip().splitlines()
        assert len(shown) == 1, done.stderr
        lines.append(shown[0])
    return lines


@pytest.mark.usefixtures("ray_session")
def test_query_and_rejects_on_a_missing_file_print_one_line_and_exit_4(
        tmp_path: Path, feed: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = feed
    state = run_feed(tmp_path, data, capsys)
    run_id = Catalog(state).latest_run_id()
    lost = next(f for f in committed_files(state) if f.kind == "output")
    Path(lost.path).unlink()
    for line in query_and_rejects_errors(state):
        assert line == (f"error: committed output missing: {lost.path} (run batchrun verify"
                        f" {run_id} / batchrun resume {run_id} --repair)")
    repair_then_check(state, truth, capsys)


@pytest.mark.usefixtures("ray_session")
def test_query_and_rejects_on_a_truncated_file_print_one_line_and_exit_4(
        tmp_path: Path, feed: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = feed
    state = run_feed(tmp_path, data, capsys)
    victim = next(f for f in committed_files(state) if f.kind == "rejects")
    assert victim.size
    with open(victim.path, "r+b") as handle:
        handle.truncate(victim.size // 2)
    for line in query_and_rejects_errors(state):
        assert (f"committed output size {victim.size // 2} != recorded {victim.size}:"
                f" {victim.path}") in line
    repair_then_check(state, truth, capsys)


@pytest.mark.usefixtures("ray_session")
def test_query_and_rejects_on_a_damaged_footer_name_the_file_in_one_line(
        tmp_path: Path, feed: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = feed
    state = run_feed(tmp_path, data, capsys)
    victim = next(f for f in committed_files(state) if f.kind == "output")
    damaged = bytearray(Path(victim.path).read_bytes())
    damaged[-20] ^= 0xFF  # inside the Parquet footer: same size, unreadable metadata
    Path(victim.path).write_bytes(damaged)
    for line in query_and_rejects_errors(state):
        assert "committed output unreadable" in line and victim.path in line
    repair_then_check(state, truth, capsys)


@pytest.mark.usefixtures("ray_session")
def test_a_query_that_hits_a_damaged_data_page_names_the_file_in_one_line(
        tmp_path: Path, feed: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = feed
    state = run_feed(tmp_path, data, capsys)
    victim = max((f for f in committed_files(state) if f.kind == "output"),
                 key=lambda f: f.size or 0)
    damaged = bytearray(Path(victim.path).read_bytes())
    middle = len(damaged) // 2
    damaged[middle:middle + 1024] = bytes(1024)  # inside a compressed page: size unchanged
    Path(victim.path).write_bytes(damaged)
    done = cli("query", "SELECT * FROM orders", "--format", "csv", "--state-dir", state)
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error: committed output ") and victim.path in done.stderr
    repair_then_check(state, truth, capsys)


def repair_then_check(state: Path, truth: DemoTruth, capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(["resume", "--repair", "--state-dir", str(state), "--no-progress"]) == EXIT_OK
    capsys.readouterr()
    assert_exactly_once(state, truth.total_valid_rows, truth.total_rejects)


def test_an_unfinished_run_with_a_lost_output_is_refused_by_resume_and_finished_by_repair(
        tmp_path: Path, feed: tuple[Path, DemoTruth]) -> None:
    data, truth = feed
    state = tmp_path / "state"
    job = write_job(tmp_path, data, batch="max_files = 1", execution="workers = 1")
    process = spawn_cli("run", job, "--state-dir", state, "--no-progress",
                        env={FAULTS_ENV: 'kill_driver = "after_commit", kill_driver_after = 2'})
    try:
        process.wait(timeout=240)
    finally:
        kill_group(process)
    catalog = Catalog(state)
    run_id = catalog.latest_run_id()
    counts = catalog.counts(run_id)
    assert 2 <= counts.batches.committed < counts.batches.total
    lost = catalog.committed_files(run_id)[0]
    Path(lost.path).unlink()

    refused = cli("resume", "--state-dir", state, "--no-progress")
    assert refused.returncode == EXIT_ENVIRONMENT
    assert "Traceback" not in refused.stdout + refused.stderr
    assert f"committed output missing: {lost.path}" in refused.stderr
    repaired = cli("resume", "--repair", "--state-dir", state, "--no-progress")
    assert repaired.returncode == EXIT_OK, repaired.stderr
    assert cli("verify", "--state-dir", state).returncode == EXIT_OK
    assert_exactly_once(state, truth.total_valid_rows, truth.total_rejects)
    assert staged_counts(state, run_id)["rows"] == truth.total_valid_rows
