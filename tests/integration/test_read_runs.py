"""Reader behaviour seen through a whole `batchrun run` (real Ray, real subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from batchrun.catalog import Catalog
from batchrun.staging import query_connection


def test_a_blank_line_before_the_header_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("\nid,v\n1,a\n")
    (tmp_path / "in" / "b.csv").write_text("id,v\n2,b\n")
    job = job_file(tmp_path, '[schema.columns]\nid = { type = "int64" }\n'
                   'v = { type = "string" }\n')
    state = tmp_path / "state"
    done = cli("run", job, "--state-dir", state, "--no-progress")
    assert "ArrowNotImplementedError" not in cli("status", "--state-dir", state).stdout
    assert done.returncode == 0, done.stdout + done.stderr
    assert table_rows(state, "SELECT id, _line FROM t ORDER BY id") == [(1, 3), (2, 2)]


def test_a_source_column_named_file_keeps_its_name_beside_underscore_file(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,_file,file\n1,X,real1\n2,Y,real2\n")
    job = job_file(tmp_path, '[validation]\non_unknown_columns = "ignore"\n[schema.columns]\n'
                   'id = { type = "int64" }\nfile = { type = "string" }\n')
    state = tmp_path / "state"
    assert cli("run", job, "--state-dir", state, "--no-progress").returncode == 0
    assert table_rows(state, "SELECT id, file FROM t ORDER BY id") == [(1, "real1"), (2, "real2")]


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """One real `batchrun` command in a subprocess; stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", "batchrun", *map(str, args)],
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
                          capture_output=True, text=True, timeout=300, check=False)


def table_rows(state: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of `sql` over the latest run's staging views (the same views `query` builds)."""
    catalog = Catalog(state)
    try:
        record = catalog.run(catalog.latest_run_id())
        db = query_connection(record.table, record.schema or {},
                              catalog.committed(record.run_id))
        return [tuple(row) for row in db.execute(sql).fetchall()]
    finally:
        catalog.close()


def job_file(folder: Path, body: str) -> Path:
    job = folder / "job.toml"
    job.write_text('[job]\nname = "j"\ntable = "t"\n[source]\npaths = ["in/*.csv"]\n' + body)
    return job
