"""The job's table across runs: `query` (no --run) and `staging.duckdb` show, for every
source file, the rows of its latest committed version; `--run` shows one run's rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, EXIT_PARTIAL, invoke
from batchrun.hooks import FAULTS_ENV
from batchrun.jobtable import job_table
from batchrun.staging import STAGING_DB
from batchrun.tools.demo import DemoTruth
from tests.conftest import parse_json, staged_counts, write_job

pytestmark = pytest.mark.usefixtures("ray_session")
COUNT = "SELECT count(*) AS n, count(DISTINCT order_id) AS d FROM orders"


def run(job: Path, state: Path, *extra: str) -> int:
    return invoke(["run", str(job), "--state-dir", str(state), "--no-progress", *extra])


def re_exported(path: Path) -> None:
    """The same rows in other bytes (CRLF line ends), as a supplier's re-export: the file
    is changed, so the next (incremental) run stages it again."""
    path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def query(state: Path, capsys: pytest.CaptureFixture[str], sql: str = COUNT, *extra: str
          ) -> list[dict[str, object]]:
    capsys.readouterr()
    assert invoke(["query", sql, "--state-dir", str(state), "--format", "json", *extra]) == EXIT_OK
    return list(parse_json(capsys.readouterr().out))


def published(folder: Path, sql: str = COUNT) -> tuple[object, ...]:
    """`sql` over `folder`/staging/staging.duckdb, opened by DuckDB as any client would."""
    with duckdb.connect(str(folder / "staging" / STAGING_DB), read_only=True) as db:
        return tuple(db.execute(sql).fetchone() or ())


def run_ids(state: Path) -> list[str]:
    with Catalog(state) as catalog:
        return list(reversed(catalog.run_ids()))


def test_two_runs_of_a_job_show_every_row_once_from_the_newer_run(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = demo_data
    job, state = write_job(tmp_path, data), tmp_path / "state"
    assert run(job, state) == EXIT_OK and run(job, state, "--full-refresh") == EXIT_OK
    first, second = run_ids(state)
    once = [{"n": truth.total_rows, "d": truth.total_rows}]
    assert query(state, capsys) == once
    assert published(tmp_path) == (truth.total_rows, truth.total_rows)
    assert query(state, capsys, COUNT, "--run", first) == once  # one run's own rows
    with Catalog(state) as catalog:
        table = job_table(catalog, catalog.run(second))
    assert [part.run_id for part in table.slices] == [second]


def test_a_later_run_replaces_only_the_files_it_ingested_again(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    """The second run ingests again two of the 12 files, re-exported: supplier_00's first
    (its batch holds the second too: read without the first's rows) and third (alone in its
    batch: not read). The table takes their rows from it, every other row from the first
    run, once."""
    source, truth = tmp_path / "in", demo_data[1]
    shutil.copytree(demo_data[0], source)
    state, job = tmp_path / "state", write_job(tmp_path, source)
    assert run(job, state) == EXIT_OK
    some = sorted(source.glob("*/*.csv"))[:3:2]
    for path in some:
        re_exported(path)
    assert run(job, state) == EXIT_OK
    assert query(state, capsys) == [{"n": truth.total_rows, "d": truth.total_rows}]
    assert published(tmp_path) == (truth.total_rows, truth.total_rows)
    first, second = run_ids(state)
    assert staged_counts(state, second)["rows"] == sum(truth.files[str(p.relative_to(source))]
                                                       for p in some)
    with Catalog(state) as catalog:
        table = job_table(catalog, catalog.run(second))
    assert [part.run_id for part in table.slices] == [first, second]
    assert len(table.slices[0].filtered) == 1 and not table.slices[1].filtered


def test_resuming_an_older_run_keeps_staging_duckdb_and_query_in_agreement(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Run 1 fails (one source's endpoint is down) before a late file arrives, run 2 stages
    all 12 files, run 1 is resumed: staging.duckdb (published by that resume) and query
    both hold every row once, the late file's too."""
    source, truth = tmp_path / "in", demo_data[1]
    shutil.copytree(demo_data[0], source)
    late = source / "supplier_00" / "orders_0000.csv"
    late.rename(tmp_path / "late.csv")
    job, state = write_job(tmp_path, source, execution="workers = 2\nmax_retries = 0"), tmp_path / "state"
    monkeypatch.setenv(FAULTS_ENV, 'fail_paths = ["supplier_03"]')
    assert run(job, state) == EXIT_PARTIAL
    monkeypatch.delenv(FAULTS_ENV)
    (tmp_path / "late.csv").rename(late)
    assert run(job, state) == EXIT_OK
    first, _ = run_ids(state)
    assert invoke(["resume", first, "--state-dir", str(state), "--no-progress"]) == EXIT_OK
    assert query(state, capsys) == [{"n": truth.total_rows, "d": truth.total_rows}]
    assert published(tmp_path) == (truth.total_rows, truth.total_rows)


def test_a_key_the_table_already_serves_is_a_unique_reject_of_the_next_night(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Night 2's file sorts before night 1's, yet night 1's served row keeps its key: the
    table never rejects a row it served. Within night 2, the first of two 4s wins. Night 2
    run again supersedes its first version: its rejects are shown once, not twice."""
    for folder, body in (("b-night1", "id,v\n1,a\n2,b\n3,c\n"),
                         ("a-night2", "id,v\n2,x\n4,y\n4,z\n5,w\nnope,q\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "orders.csv").write_text(body)
    job, state = tmp_path / "job.toml", tmp_path / "state"
    text = ('[job]\nname = "j"\ntable = "t"\n[source]\npaths = ["b-night1/*.csv"]\n'
            '[staging]\ndir = "staging"\n[schema.columns]\n'
            'id = { type = "int64", unique = true }\nv = { type = "string" }\n')
    job.write_text(text)
    assert run(job, state) == EXIT_OK
    job.write_text(text.replace("b-night1", "a-night2"))
    ids = "SELECT list(id ORDER BY id) AS ids, count(*) AS n FROM t"
    rejected = "SELECT rule, line FROM t__rejects ORDER BY line"
    for night in range(2):
        if night:
            re_exported(tmp_path / "a-night2" / "orders.csv")
        assert run(job, state) == EXIT_OK
        assert query(state, capsys, ids) == [{"ids": [1, 2, 3, 4, 5], "n": 5}]
        assert query(state, capsys, rejected) == [{"rule": "unique", "line": 2},
                                                  {"rule": "unique", "line": 4},
                                                  {"rule": "type:int64", "line": 6}]
        assert published(tmp_path, "SELECT count(*), count(DISTINCT id) FROM t") == (5, 5)
        assert query(state, capsys, ids, "--run", run_ids(state)[-1]) == [{"ids": [4, 5], "n": 2}]
