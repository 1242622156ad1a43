"""Unique keys decided from the index built while batches run: the same rejects, row for
row, as the run-wide pass over every row, and across a kill and a resume."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, invoke
from batchrun.jobtable import job_table
from batchrun.keyfeed import Candidates
from batchrun.keyindex import key_codes
from batchrun.tools.faults import FAULTS_ENV
from batchrun.unique import _duplicates
from tests.conftest import assert_exactly_once, committed_batches, kill_group, spawn_cli, wait_for

JOB = """
[job]
name = "uniq"
table = "orders"
[source]
paths = ["in/*.csv"]
[batch]
max_files = 1
[execution]
workers = 2
[validation]
max_reject_ratio = 0.6
[schema.columns]
order_id = { type = "int64", required = true, unique = true }
sku      = { type = "string", unique = true }
"""


def write_files(folder: Path, files: dict[str, list[tuple[int, str]]]) -> Path:
    for name, rows in files.items():
        path = folder / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("order_id,sku\n" + "".join(f"{i},{s}\n" for i, s in rows))
    (folder / "job.toml").write_text(JOB)
    return folder / "job.toml"


def unique_rejects(state: Path) -> list[tuple[str, int, str, str]]:
    catalog = Catalog(state)
    unique = catalog.committed(catalog.latest_run_id()).unique
    if unique is None:
        return []
    table = pq.read_table(unique)
    return [(Path(r["file"]).name, r["line"], r["column"], r["value"]) for r in table.to_pylist()]


def full_pass(state: Path, candidates: Candidates | None = None) -> list[tuple[str, int, str]]:
    """The run-wide pass over every row (or over `candidates`), as unique.py runs it."""
    catalog = Catalog(state)
    record = catalog.run(catalog.latest_run_id())
    found = _duplicates(job_table(catalog, record), ["order_id", "sku"], record.run_id,
                        False, candidates)
    return [(Path(r["file"]).name, r["line"], r["column"]) for r in found.to_pylist()]


def every_key_a_candidate(state: Path) -> Candidates:
    """Candidates as if every key collided with another: the most the SQL may be given."""
    catalog = Catalog(state)
    outputs = catalog.committed(catalog.latest_run_id()).outputs
    table = pq.read_table(outputs)
    codes = {key: np.unique(key_codes(table[key])) for key in ("order_id", "sku")}
    return Candidates({key: table[key].type for key in codes}, codes, set(outputs), 0)


@pytest.mark.usefixtures("ray_session")
def test_unique_rejects_from_the_index_are_the_full_pass_row_for_row(
        tmp_path: Path) -> None:
    job = write_files(tmp_path, {
        "a.csv": [(1, "s1"), (2, "s2"), (1, "s3"), (3, "s2")],   # id and sku within a file
        "b.csv": [(4, "s4"), (2, "s5"), (5, "s1"), (2, "s1")],   # across files; both keys
        "c.csv": [(6, "s6"), (7, "s7")],                         # no repeat
        "d.csv": [(8, "s4"), (9, "s9"), (9, "s9")],
    })
    state = tmp_path / "s"
    assert invoke(["run", str(job), "--state-dir", str(state), "--no-progress"]) == EXIT_OK
    assert unique_rejects(state) == [
        ("a.csv", 4, "order_id", "1"), ("a.csv", 5, "sku", "s2"),
        ("b.csv", 3, "order_id", "2"), ("b.csv", 4, "sku", "s1"), ("b.csv", 5, "order_id", "2"),
        ("d.csv", 2, "sku", "s4"), ("d.csv", 4, "order_id", "9")]
    expected = [(f, line, column) for f, line, column, _ in unique_rejects(state)]
    assert full_pass(state) == expected
    assert full_pass(state, every_key_a_candidate(state)) == expected
    log = next((state / "logs").glob("*.log")).read_text()
    assert "(index: 26 keys, 7 candidate(s) in 3 file(s))" in log
    assert_exactly_once(state, truth_rows=6, truth_rejects=7)


@pytest.mark.slow
def test_a_killed_run_with_repeated_keys_resumes_with_each_reject_once(tmp_path: Path) -> None:
    """Ten one-file batches, each repeating a key of the file before and one of its own;
    killed once some have committed: the resume rebuilds the index from their files."""
    files = {f"f{n}.csv": [(n * 10 + i, f"s{n * 10 + i}") for i in range(5)]
             + [(max(n - 1, 0) * 10, f"x{n}"), (n * 10 + 4, f"y{n}")] for n in range(10)}
    job = write_files(tmp_path, files)
    state = tmp_path / "s"
    process = spawn_cli("run", job, "--state-dir", state, "--no-progress",
                        env={FAULTS_ENV: "batch_delay = 0.6"}, log=tmp_path / "run.log")
    try:
        wait_for(lambda: committed_batches(state) >= 3)
        kill_group(process, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        kill_group(process, signal.SIGKILL)
    catalog = Catalog(state)
    assert 3 <= catalog.counts(catalog.latest_run_id()).batches.committed < 10
    resumed = subprocess.run([sys.executable, "-m", "batchrun", "resume", "latest",
                              "--state-dir", str(state), "--no-progress"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert_exactly_once(state, truth_rows=50, truth_rejects=20)
    expected = [(f"f{n}.csv", line, "order_id") for n in range(10) for line in (7, 8)]
    assert [r[:3] for r in unique_rejects(state)] == expected == full_pass(state)


def test_a_key_the_index_cannot_code_falls_back_to_the_full_pass_and_the_run_succeeds(
        tmp_path: Path) -> None:
    """A decimal unique column (next to an integer one): the feed gives up, publishing
    checks every row. It crashed instead (UnsupportedKey raised again by `finish`)."""
    rows = {"a.csv": [(1, "1.50"), (2, "2.00"), (1, "3.00")],
            "b.csv": [(3, "1.5"), (4, "4.00"), (5, "2")]}
    for name, values in rows.items():
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("order_id,price\n" + "".join(f"{i},{p}\n" for i, p in values))
    job = tmp_path / "job.toml"
    job.write_text(JOB.split("[schema.columns]")[0].replace("workers = 2", 'pool = "inline"')
                   + "[schema.columns]\norder_id = { type = \"int64\", unique = true }\n"
                   + "price = { type = \"decimal(6,2)\", unique = true }\n")
    state = tmp_path / "s"
    assert invoke(["run", str(job), "--state-dir", str(state), "--no-progress"]) == EXIT_OK
    assert unique_rejects(state) == [("a.csv", 4, "order_id", "1"), ("b.csv", 2, "price", "1.50"),
                                     ("b.csv", 4, "price", "2.00")]
    assert_exactly_once(state, truth_rows=3, truth_rejects=3)
