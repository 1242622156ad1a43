"""Custom readers and transforms run inside the workers; their failures quarantine a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrun.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, invoke
from tests.conftest import assert_exactly_once, parse_json

pytestmark = pytest.mark.usefixtures("ray_session")

PLUGIN = '''
import pyarrow as pa
import pyarrow.compute as pc


def read_pipes(path):
    """A home-made format: 'id|amount' lines, '#' comments."""
    rows = [line.split("|") for line in open(path).read().splitlines() if not line.startswith("#")]
    if any(len(r) != 2 for r in rows):
        raise ValueError(f"not a pipe file: {path}")
    return pa.table({"id": [r[0] for r in rows], "amount": [r[1] for r in rows]})


def add_cents(table):
    if "explode" in table["_file"][0].as_py():
        raise RuntimeError("cannot transform this one")
    cents = pc.cast(pc.multiply(table["amount"], 100), pa.int64())
    return table.append_column("cents", cents)
'''


def setup(tmp_path: Path, *, reader: str = "steps:read_pipes",
          transform: str = "steps:add_cents") -> Path:
    (tmp_path / "steps.py").write_text(PLUGIN)
    data = tmp_path / "in" / "s1"
    data.mkdir(parents=True)
    (data / "a.pipe").write_text("# comment\n1|2.50\n2|x\n3|4\n")
    (data / "b.pipe").write_text("4|1\n5|2\n")
    (data / "explode.pipe").write_text("6|1\n")
    (data / "broken.pipe").write_text("7|1|extra\n")
    job = tmp_path / "job.toml"
    job.write_text(f'''
[job]
name = "pipes"
table = "amounts"
[source]
paths = ["in/*/*.pipe"]
reader = "{reader}"
[transform]
function = "{transform}"
[schema.columns]
id = {{ type = "int64", unique = true }}
amount = {{ type = "decimal(10,2)" }}
''')
    return job


def test_custom_reader_and_transform_run_in_the_workers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = setup(tmp_path)
    code = invoke(["run", str(job), "--state-dir", str(tmp_path / "s"), "--json", "--no-progress"])
    report = parse_json(capsys.readouterr().out)
    assert code == EXIT_PARTIAL
    assert report["rows"] == {"staged": 4, "rejected": 1}
    reasons = {Path(f["path"]).name: f["error"] for f in report["failed_files"]}
    assert reasons["explode.pipe"].endswith("RuntimeError: cannot transform this one")
    assert "ValueError: not a pipe file" in reasons["broken.pipe"]
    assert invoke(["query", "SELECT id, cents FROM amounts", "--state-dir", str(tmp_path / "s"),
                   "--format", "json"]) == EXIT_OK
    rows = parse_json(capsys.readouterr().out)
    assert rows == [{"id": 1, "cents": 250}, {"id": 3, "cents": 400},
                    {"id": 4, "cents": 100}, {"id": 5, "cents": 200}]
    assert_exactly_once(tmp_path / "s", truth_rows=4, truth_rejects=1, key="id")


def test_a_custom_step_that_cannot_be_imported_is_a_job_file_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = setup(tmp_path, transform="steps:no_such_function")
    assert invoke(["run", str(job), "--state-dir", str(tmp_path / "s")]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert "transform.function: cannot import steps:no_such_function" in error
