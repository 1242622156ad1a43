"""A `--full-refresh` rebuilds the job's table once it has succeeded: `staging.duckdb`
then shows what `query` shows, and a served file it held back as settling stays served
(rows checked against the files' content)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb
import pytest

from batchrun.cli import EXIT_OK, invoke
from batchrun.staging import STAGING_DB
from tests.conftest import parse_json

pytestmark = pytest.mark.usefixtures("ray_session")
ROWS = "SELECT id, v FROM t ORDER BY id"


def job(folder: Path, settle: str = "0s", unique: str = "") -> Path:
    path = folder / "job.toml"
    path.write_text(f'[job]\nname = "j"\ntable = "t"\n[source]\npaths = ["{folder}/in/*.csv"]\n'
                    f'settle = "{settle}"\n[execution]\nworkers = 1\n[staging]\ndir = "staging"\n'
                    f'[schema.columns]\nid = {{ type = "int64"{unique} }}\nv = {{ type = "string" }}\n')
    return path


def write(path: Path, text: str, age: float = 0.0) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    if age:
        os.utime(path, (time.time() - age, time.time() - age))


def run(folder: Path, *extra: str) -> int:
    return invoke(["run", str(folder / "job.toml"), "--state-dir", str(folder / "state"),
                   "--no-progress", *extra])


def rows(folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[list, list]:
    """(query's rows, staging.duckdb's rows) of the job's table."""
    capsys.readouterr()
    assert invoke(["query", ROWS, "--state-dir", str(folder / "state"),
                   "--format", "json"]) == EXIT_OK
    queried = [(r["id"], r["v"]) for r in parse_json(capsys.readouterr().out)]
    with duckdb.connect(str(folder / "staging" / STAGING_DB), read_only=True) as db:
        return queried, db.execute(ROWS).fetchall()


def test_a_full_refresh_that_drops_a_gone_file_publishes_the_table_query_shows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job(tmp_path)
    write(tmp_path / "in" / "a.csv", "id,v\n1,a\n")
    write(tmp_path / "in" / "gone.csv", "id,v\n2,b\n")
    assert run(tmp_path) == EXIT_OK
    (tmp_path / "in" / "gone.csv").unlink()
    assert run(tmp_path, "--full-refresh") == EXIT_OK
    assert rows(tmp_path, capsys) == ([(1, "a")], [(1, "a")])


def test_a_full_refresh_keeps_serving_a_file_it_left_settling(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job(tmp_path, settle="1h")
    write(tmp_path / "in" / "a.csv", "id,v\n1,a\n", age=7200)
    write(tmp_path / "in" / "b.csv", "id,v\n2,b\n", age=7200)
    assert run(tmp_path) == EXIT_OK
    write(tmp_path / "in" / "a.csv", "id,v\n1,a\n3,c\n")  # being rewritten: settling
    assert run(tmp_path, "--full-refresh") == EXIT_OK
    assert rows(tmp_path, capsys) == ([(1, "a"), (2, "b")], [(1, "a"), (2, "b")])


def test_a_full_refresh_takes_a_unique_key_from_a_file_gone_from_the_source(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """gone.csv held key 2; the refresh stages new.csv with key 2 and drops gone.csv: the
    key is not a duplicate of a row the rebuilt table no longer serves."""
    job(tmp_path, unique=", unique = true")
    write(tmp_path / "in" / "a.csv", "id,v\n1,a\n")
    write(tmp_path / "in" / "gone.csv", "id,v\n2,b\n")
    assert run(tmp_path) == EXIT_OK
    (tmp_path / "in" / "gone.csv").unlink()
    write(tmp_path / "in" / "new.csv", "id,v\n2,n\n")
    assert run(tmp_path, "--full-refresh") == EXIT_OK
    assert rows(tmp_path, capsys) == ([(1, "a"), (2, "n")], [(1, "a"), (2, "n")])
