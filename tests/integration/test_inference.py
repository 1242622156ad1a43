"""Schema inference (a job without `[schema]`) never crashes a run's start.

Every bad-header kind of issue 12 is run through the CLI: the run ends with a documented
exit code, no traceback, and the staged rows and rejects equal the truth. Inference reads
a file the way the workers do, so the same file gets the same column names at both ends.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, invoke
from batchrun.config import CsvOptions
from batchrun.readers.infer import SAMPLE_BYTES, CannotInferSchema, infer_schema, infer_with_reader
from batchrun.staging import query_connection
from tests.conftest import parse_json

GOOD = b"id,name\n10,j\n11,k\n"
"""The second file of most cases: two good rows."""


def job_file(folder: Path, csv: str = "") -> Path:
    path = folder / "job.toml"
    path.write_text(f'[job]\nname = "inferred"\ntable = "t"\n[source]\npaths = ["in/*.csv"]\n'
                    f"{csv}\n[staging]\ndir = \"staging\"\n")
    return path


def files(folder: Path, *contents: bytes) -> list[str]:
    """Write in/a.csv, in/b.csv, ... (plan order is path order)."""
    (folder / "in").mkdir(exist_ok=True)
    paths = []
    for index, data in enumerate(contents):
        path = folder / "in" / f"{chr(97 + index)}.csv"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


def run_cli(folder: Path, capsys: pytest.CaptureFixture[str], csv: str = ""
            ) -> tuple[int, dict | None, str]:
    code = invoke(["run", str(job_file(folder, csv)), "--state-dir", str(folder / "s"),
                   "--json", "--no-progress"])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output
    report = parse_json(captured.out) if "{" in captured.out else None
    return code, report, output


def staged_table(folder: Path) -> tuple[list[str], int, int]:
    """Columns, rows and rejects of the latest run, through its staging views."""
    catalog = Catalog(folder / "s")
    record = catalog.run(catalog.latest_run_id())
    db = query_connection(record.table, record.schema or {}, catalog.committed(record.run_id))
    columns = [row[0] for row in db.execute("DESCRIBE t").fetchall()]
    rows = db.execute("SELECT count(*) FROM t").fetchone()[0]
    rejects = db.execute("SELECT count(*) FROM t__rejects").fetchone()[0]
    return columns, rows, rejects


LINEAGE = ["_file", "_line", "_batch_id"]
CASES = {
    # kind: (first file, its staged rows, its rejects, columns, exit code)
    "ragged row in the first block": (b"id,name\n1,a\n2\n3,c\n", 2, 1, ["id", "name"], EXIT_OK),
    "empty file": (b"", 0, 0, ["id", "name"], EXIT_PARTIAL),
    "header only, no trailing newline": (b"id,name", 0, 0, ["id", "name"], EXIT_OK),
    "non-UTF-8 header bytes": (b"id,n\xe9me\n1,a\n", 0, 0, ["id", "name"], EXIT_PARTIAL),
    "NUL byte in the header": (b"id,na\x00me\n1,a\n", 0, 0, ["id", "name"], EXIT_PARTIAL),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_bad_first_file_never_crashes_inference_and_the_run_is_truth_checked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], ray_session: None, kind: str) -> None:
    first, rows, rejects, columns, exit_code = CASES[kind]
    files(tmp_path, first, GOOD)
    code, report, _ = run_cli(tmp_path, capsys)
    assert code == exit_code
    assert report is not None
    assert staged_table(tmp_path) == ([*columns, *LINEAGE], rows + 2, rejects)


@pytest.mark.parametrize("header, columns", [
    (b"id,id,name", ["id", "id_2", "name"]),
    (b"id,,name", ["id", "column_2", "name"]),
    (b"_file,_line,_batch_id", ["file", "line", "batch_id"]),
    (b'id,"na\nme"', ["id", "name"]),
])
def test_odd_headers_are_named_the_same_by_inference_and_by_the_reader(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], ray_session: None,
        header: bytes, columns: list[str]) -> None:
    body = b"".join(b"%d,x,y\n" % i for i in range(3)) if header.count(b",") == 2 else \
        b"".join(b"%d,x\n" % i for i in range(3))
    paths = files(tmp_path, header + b"\n" + body, header + b"\n" + body)
    code, _, _ = run_cli(tmp_path, capsys)
    assert code == EXIT_OK
    assert staged_table(tmp_path) == ([*columns, *LINEAGE], 6, 0)
    catalog = Catalog(tmp_path / "s")
    db = query_connection("t", catalog.run(catalog.latest_run_id()).schema or {},
                          catalog.committed(catalog.latest_run_id()))
    assert sorted(db.execute("SELECT DISTINCT _file FROM t").fetchall()) == [(p,) for p in paths]


def test_utf16_with_a_bom_is_inferred_with_the_jobs_encoding(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], ray_session: None) -> None:
    files(tmp_path, "id,name\n1,é\n2,b\n".encode("utf-16"), GOOD.decode().encode("utf-16"))
    code, _, _ = run_cli(tmp_path, capsys, '[source.csv]\nencoding = "utf-16"')
    assert code == EXIT_OK
    assert staged_table(tmp_path) == (["id", "name", *LINEAGE], 4, 0)


def test_when_no_file_can_be_inferred_one_line_names_them_and_nothing_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files(tmp_path, b"", b"\x00\x01binary", b"id\n1\n\xff\n")
    code, report, output = run_cli(tmp_path, capsys)
    assert code == EXIT_USAGE and report is None
    line = output.strip()
    assert "\n" not in line and "cannot infer the columns" in line
    assert "a.csv: empty file" in line and "b.csv: binary content" in line
    assert "c.csv: not valid utf-8" in line
    state = tmp_path / "s"
    assert not (state / "catalog.sqlite").exists() or Catalog(state).run_ids() == []


def test_a_later_value_that_breaks_the_guessed_type_is_a_reject_not_a_crash(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], ray_session: None) -> None:
    ints = b"id,name\n1,a\n2,b\n"
    files(tmp_path, ints, ints, ints, b"id,name\n3,c\nx,d\n")  # the 4th file is not sampled
    code, _, _ = run_cli(tmp_path, capsys)
    assert code == EXIT_OK
    assert staged_table(tmp_path) == (["id", "name", *LINEAGE], 7, 1)


# ------------------------------------------------------------- inference alone, no Ray


def test_types_are_merged_over_the_sampled_files(tmp_path: Path) -> None:
    paths = files(tmp_path, b"a,b,c,d\n1,1,x,\n", b"a,b,c,d\n2,2.5,2024-01-05,\n",
                  b"a,b,c,d\n3,3,y,2024-01-05 10:00:00\n")
    assert infer_schema(paths, "csv", CsvOptions()) == {
        "a": "int64", "b": "float64", "c": "string", "d": "timestamp"}


def test_a_first_line_over_a_megabyte_is_inferred(tmp_path: Path) -> None:
    width = 150_000
    header = ",".join(f"c{i}" for i in range(width)).encode()
    (path,) = files(tmp_path, header + b"\n" + b",".join([b"1"] * width) + b"\n")
    inferred = infer_schema([path], "csv", CsvOptions())
    assert len(inferred) == width and set(inferred.values()) == {"int64"}


def test_a_first_line_past_the_sample_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    (path,) = files(tmp_path, b"x" * (SAMPLE_BYTES + 10) + b"\n1\n")
    with pytest.raises(CannotInferSchema, match="first line longer than 4 MiB"):
        infer_schema([path], "csv", CsvOptions())


def test_inference_reads_a_bounded_head_of_a_huge_gzip(tmp_path: Path) -> None:
    path = tmp_path / "big.csv.gz"
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(b"id,name\n")
        for _ in range(30):
            handle.write(b"123,abc\n" * 125_000)  # 30 MB decompressed
    assert infer_schema([str(path)], "csv", CsvOptions()) == {"id": "int64", "name": "string"}


def test_a_custom_reader_that_fails_on_the_first_file_moves_to_the_next(tmp_path: Path) -> None:
    def reader(path: str) -> pa.Table:
        if path.endswith("a.csv"):
            raise ValueError("cannot read this one")
        return pa.table({"id": [1], "_file": ["x"]})

    paths = files(tmp_path, b"", b"")
    assert infer_with_reader(paths, reader) == {"id": "int64", "file": "string"}
