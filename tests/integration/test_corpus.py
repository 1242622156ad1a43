"""A public corpus of awkward CSV files (csv-spectrum, see tests/data/csv-spectrum/NOTICE.md)
staged through the real CLI, with an inferred schema and with an all-string one (the fast
path), and compared value by value with the corpus's own expected rows: every row staged
exactly once, nothing rejected, nothing invented."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, invoke
from batchrun.staging import query_connection

CORPUS = Path(__file__).parents[1] / "data" / "csv-spectrum"
CASES = sorted(p.stem for p in CORPUS.glob("*.csv"))
LINEAGE = ("_file", "_line", "_batch_id")


def expected_rows(case: str) -> list[dict[str, str]]:
    """The corpus's JSON; for location_coordinates (whose JSON disagrees with its CSV
    upstream), Python's csv module."""
    if case == "location_coordinates":
        with open(CORPUS / f"{case}.csv", newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    rows = json.loads((CORPUS / f"{case}.json").read_text(encoding="utf-8"))
    return rows if isinstance(rows, list) else [rows]


def write_job(folder: Path, case: str, all_strings: bool) -> Path:
    (folder / "in").mkdir(parents=True)
    shutil.copy(CORPUS / f"{case}.csv", folder / "in" / f"{case}.csv")
    schema = ""
    if all_strings:
        columns = expected_rows(case)[0]
        schema = "[schema.columns]\n" + "".join(
            f'{json.dumps(name)} = {{ type = "string" }}\n' for name in columns)
    job = folder / "job.toml"
    job.write_text(f'[job]\nname = "corpus"\ntable = "t"\n[source]\npaths = ["in/*.csv"]\n{schema}')
    return job


def staged_rows(state: Path) -> tuple[list[dict[str, str]], int]:
    """Staged rows with every value as its text (NULL: the empty string), and rejects."""
    catalog = Catalog(state)
    run_id = catalog.latest_run_id()
    record = catalog.run(run_id)
    db = query_connection(record.table, record.schema or {}, catalog.committed(run_id))
    cursor = db.execute("SELECT * FROM t")
    names = [column[0] for column in cursor.description]
    rows = [{n: "" if v is None else str(v) for n, v in zip(names, row) if n not in LINEAGE}
            for row in cursor.fetchall()]
    rejected = db.execute("SELECT count(*) FROM t__rejects").fetchone()[0]
    return rows, rejected


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("all_strings", [False, True], ids=["inferred", "all-strings"])
@pytest.mark.parametrize("case", CASES)
def test_every_corpus_file_is_staged_exactly_as_its_expected_rows(
        tmp_path: Path, case: str, all_strings: bool,
        capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(tmp_path, case, all_strings)
    code = invoke(["run", str(job), "--state-dir", str(tmp_path / "state"), "--no-progress"])
    output = capsys.readouterr()
    assert "Traceback" not in output.out + output.err
    assert code == EXIT_OK, output.err
    rows, rejected = staged_rows(tmp_path / "state")
    assert (rows, rejected) == (expected_rows(case), 0)
