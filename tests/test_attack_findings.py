"""Defects found by the adversarial pass after issue 12 was merged.

Each test reproduces one defect through the real CLI (a `python -m batchrun` subprocess
with its own state dir) or a real in-process `BatchWorker`, checks row counts against a
known truth, and is marked xfail(strict=True): it fails today, and the suite turns red
the day the defect is fixed, so the mark can be removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun.catalog import Catalog
from batchrun.staging import query_connection

ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One real `batchrun` command; stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", "batchrun", *map(str, args)],
                          env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=300, check=False)


def table_rows(state: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of `sql` over the latest run's staging views (the same views `query` builds)."""
    catalog = Catalog(state)
    try:
        run_id = catalog.latest_run_id()
        record = catalog.run(run_id)
        db = query_connection(record.table, record.schema or {}, catalog.committed(run_id))
        return [tuple(row) for row in db.execute(sql).fetchall()]
    finally:
        catalog.close()


def write_job(folder: Path, body: str) -> Path:
    job = folder / "job.toml"
    job.write_text(body)
    return job


ID_V_SCHEMA = """
[schema.columns]
id = { type = "int64" }
v = { type = "string" }
"""


@pytest.mark.xfail(strict=True, reason="resume --set refuses 'schema.*' but not the field "
                   "name 'schema_', which pydantic accepts (populate_by_name): the schema "
                   "of an inferred-schema run changes mid-run, one column gets two types")
def test_resume_refuses_a_schema_override_spelled_by_its_field_name(tmp_path: Path) -> None:
    for folder, rows in (("a", "1,a\n2,b\n"), ("b", "3,c\n4,d\n")):
        (tmp_path / "in" / folder).mkdir(parents=True)
        (tmp_path / "in" / folder / "x.csv").write_text("id,v\n" + rows)
    job = write_job(tmp_path, '[job]\nname = "j"\ntable = "t"\n[source]\npaths = ["in/*/*.csv"]\n'
                    '[batch]\nmax_files = 1\n[execution]\nmode = "sequential"\n')
    state = tmp_path / "state"
    killed = cli("run", job, "--state-dir", state, "--no-progress",
                 env={"BATCHRUN_FAULTS": 'kill_driver = "after_commit", kill_driver_after = 1'})
    assert killed.returncode != 0
    resumed = cli("resume", "--state-dir", state, "--no-progress", "--set",
                  'schema_={columns={id={type="string"},v={type="string"}}}')
    if resumed.returncode != 2:  # accepted: finish the run, then show the damage
        staged = sorted((tmp_path / "staging" / "t").glob("part-*/*.parquet"))
        types = {str(pq.read_schema(path).field("id").type) for path in staged}
        assert types == {"int64"}, f"one column, two types in one run: {types}"
    assert resumed.returncode == 2, resumed.stderr
    assert cli("resume", "--state-dir", state, "--no-progress").returncode == 0
    assert table_rows(state, "SELECT count(*), count(DISTINCT id) FROM t") == [(4, 4)]


@pytest.mark.xfail(strict=True, reason="a staging dir under the source glob is planned as "
                   "input by the next run: every run stages the earlier runs' output again")
def test_a_run_never_reads_its_own_staging_dir_as_input(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3], "v": ["a", "b", "c"]}), tmp_path / "data" / "x.parquet")
    job = write_job(tmp_path, '[job]\nname = "j"\ntable = "t"\n[source]\n'
                    'paths = ["data/**/*.parquet"]\nformat = "parquet"\n'
                    '[staging]\ndir = "data/staging"\n[validation]\n'
                    'on_unknown_columns = "ignore"\n' + ID_V_SCHEMA)
    state = tmp_path / "state"
    for _ in range(2):
        done = cli("run", job, "--state-dir", state, "--no-progress")
        assert done.returncode == 0, done.stderr
    assert table_rows(state, "SELECT count(*), count(DISTINCT id) FROM t") == [(3, 3)]


@pytest.mark.xfail(strict=True, reason="on resume, a file re-planned after 'changed since "
                   "planning' is not checked against the run's other files: a `latest` link "
                   "that flipped to another planned file stages that file twice, exit 0")
def test_a_flipped_latest_link_is_not_staged_twice_after_resume(tmp_path: Path) -> None:
    days = {"2024-11-30": "1,a\n2,b\n", "2024-12-01": "3,c\n4,d\n5,e\n"}
    for day, rows in days.items():
        (tmp_path / "in" / day).mkdir(parents=True)
        (tmp_path / "in" / day / "a.csv").write_text("id,v\n" + rows)
    (tmp_path / "in" / "latest").symlink_to("2024-11-30")
    job = write_job(tmp_path, '[job]\nname = "j"\ntable = "t"\n[source]\n'
                    'paths = ["in/latest/*.csv", "in/2024-*/*.csv"]\n'
                    '[execution]\nmode = "sequential"\n' + ID_V_SCHEMA)
    state = tmp_path / "state"
    cli("run", job, "--state-dir", state, "--no-progress",
        env={"BATCHRUN_FAULTS": 'kill_driver = "after_commit", kill_driver_after = 1'})
    (tmp_path / "in" / "latest").unlink()
    (tmp_path / "in" / "latest").symlink_to("2024-12-01")  # the nightly feed moves on
    for _ in range(2):  # the README: resume, restore or wait, resume once more
        cli("resume", "--state-dir", state, "--no-progress")
    count, distinct = table_rows(state, "SELECT count(*), count(DISTINCT id) FROM t")[0]
    assert count == distinct, f"{count} rows staged for {distinct} distinct ids"


@pytest.mark.xfail(strict=True, reason="credentials are not masked when the user name holds "
                   "an '@' or the password a '/': printed on stderr and stored in the catalog")
def test_a_password_with_an_at_sign_user_or_a_slash_is_never_printed_or_stored(
        tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,v\n1,a\n")
    job = write_job(tmp_path, '[job]\nname = "j"\ntable = "t"\n[source]\npaths = ["in/*.csv"]\n')
    state = tmp_path / "state"
    leaks = []
    for address, secret in (("ray://alice@corp.com:Secret1@127.0.0.1:1", "Secret1"),
                            ("ray://alice:Sec/ret2@127.0.0.1:1", "Sec/ret2")):
        done = cli("run", job, "--state-dir", state, "--no-progress", "--address", address)
        assert done.returncode == 4  # unreachable: nothing staged, 0 rows of 1 (truth)
        leaks += [secret for text in (done.stdout, done.stderr) if secret in text]
        leaks += [secret for path in state.rglob("*") if path.is_file()
                  if secret.encode() in path.read_bytes()]
    assert leaks == []


@pytest.mark.xfail(strict=True, reason="a NUL byte in source.paths ends in exit 70 (internal "
                   "error: ValueError: embedded null byte) instead of a job-file error, exit 2")
def test_a_nul_byte_in_a_source_path_is_a_job_file_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,v\n1,a\n")
    job = write_job(tmp_path, '[job]\nname = "j"\ntable = "t"\n[source]\n'
                    'paths = ["in/a.csv\\u0000x"]\n' + ID_V_SCHEMA)
    done = cli("run", job, "--state-dir", tmp_path / "state", "--no-progress")
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode == 2, done.stderr
    assert "source.paths" in done.stderr
