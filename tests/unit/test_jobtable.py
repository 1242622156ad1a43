"""The job's table over real Parquet files and a real catalog, no Ray: a later run that
ingests one file of an earlier batch again supersedes that file's rows, rejects and
unique-key rejects, and only those."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.catalog import Catalog
from batchrun.jobtable import job_query_connection, job_table
from batchrun.layout import REJECT_SCHEMA
from batchrun.model import (
    AttemptEnd,
    AttemptOutcome,
    BatchResult,
    FileOutcome,
    PlannedBatch,
    PlannedFile,
    RoundRecord,
    RunState,
    WrittenFile,
)
from tests.unit.history import T0, run_record


def rejects(path: Path, run_id: str, rule: str, *where: tuple[str, int]) -> str:
    pq.write_table(pa.Table.from_pylist(
        [{"run_id": run_id, "batch_id": "b1", "file": f, "line": n, "column": "id", "rule": rule,
          "value": "", "raw_line": ""} for f, n in where], schema=REJECT_SCHEMA), path)
    return str(path)


def commit_run(catalog: Catalog, folder: Path, run_id: str, rows: list[tuple[str, int]],
               rejected: list[tuple[str, int]]) -> None:
    """One run with one batch `b1` (the same id in every run) of the files of `rows`."""
    files = sorted({f for f, _ in rows})
    catalog.create_run(dataclasses.replace(run_record(RunState.SUCCEEDED), run_id=run_id),
                       [PlannedBatch("b1", 0, "a", tuple(PlannedFile(f, 1, T0, "a") for f in files))])
    output = folder / f"{run_id}-out.parquet"
    pq.write_table(pa.table({"id": [n for _, n in rows], "_file": [f for f, _ in rows],
                             "_line": [n for _, n in rows], "_batch_id": ["b1"] * len(rows)}), output)
    result = BatchResult("b1", 0, str(output), rejects(folder / f"{run_id}-rej.parquet", run_id,
                                                       "required", *rejected),
                         len(rows), len(rejected), 0, T0, T0,
                         tuple(FileOutcome(f, sum(r[0] == f for r in rows)) for f in files))
    catalog.record_progress(run_id, RoundRecord(ended=[
        AttemptEnd("b1", 1, AttemptOutcome.COMMITTED, T0, result=result)]))


def test_a_file_ingested_again_supersedes_its_rows_and_rejects_and_only_those(
        tmp_path: Path) -> None:
    with Catalog(tmp_path / "state") as catalog:
        commit_run(catalog, tmp_path, "run-a", [("f1", 1), ("f1", 2), ("f2", 1), ("f2", 2)],
                   [("f1", 3), ("f2", 3)])
        unique = rejects(tmp_path / "run-a-unique.parquet", "run-a", "unique", ("f1", 2), ("f2", 2))
        catalog.record_unique("run-a", WrittenFile(unique, Path(unique).stat().st_size, "x"),
                              {"f1": 1, "f2": 1})
        commit_run(catalog, tmp_path, "run-b", [("f1", n) for n in range(1, 5)], [])
        db = job_query_connection(job_table(catalog, catalog.run("run-b")))
    assert db.execute("SELECT _file, _line FROM orders").fetchall() == [
        ("f1", 1), ("f1", 2), ("f1", 3), ("f1", 4), ("f2", 1)]
    assert db.execute("SELECT file, line, rule FROM orders__rejects").fetchall() == [
        ("f2", 2, "unique"), ("f2", 3, "required")]
