"""End to end on a real local Ray, real DuckDB and real Parquet: counts against the truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, EXIT_PARTIAL, invoke
from batchrun.staging import STAGING_DB
from batchrun.tools.demo import DemoTruth
from tests.conftest import assert_exactly_once, parse_json, write_job

pytestmark = pytest.mark.usefixtures("ray_session")


def run_json(job: Path, state: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict]:
    code = invoke(["run", str(job), "--state-dir", str(state), "--json", "--no-progress", *extra])
    return code, parse_json(capsys.readouterr().out)


def test_demo_shaped_job_stages_every_row_exactly_once(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = demo_data
    code, report = run_json(write_job(tmp_path, data), tmp_path / "state", capsys)
    assert code == EXIT_OK
    assert report["state"] == "succeeded"
    assert report["rows"] == {"staged": truth.total_rows, "rejected": 0}
    assert report["files"] == {"total": len(truth.files), "committed": len(truth.files), "failed": 0,
                               "skipped": 0}
    assert report["batches"]["committed"] == report["batches"]["total"] == 8
    assert report["started_at"] and report["finished_at"]
    assert_exactly_once(tmp_path / "state", truth.total_rows)


def test_query_and_staging_duckdb_show_the_staged_table(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = demo_data
    state = tmp_path / "state"
    assert run_json(write_job(tmp_path, data), state, capsys)[0] == EXIT_OK
    sql = "SELECT count(*) AS n, count(DISTINCT order_id) AS d FROM orders"
    assert invoke(["query", sql, "--state-dir", str(state), "--format", "json"]) == EXIT_OK
    assert parse_json(capsys.readouterr().out) == [{"n": truth.total_rows, "d": truth.total_rows}]
    # Any DuckDB client can open staging.duckdb (views over absolute paths).
    with duckdb.connect(str(tmp_path / "staging" / STAGING_DB), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == truth.total_rows
        types = dict(db.execute("SELECT column_name, column_type FROM (DESCRIBE orders)").fetchall())
    assert types["order_id"] == "BIGINT" and types["unit_price"] == "DECIMAL(12,2)"
    assert types["order_ts"] == "TIMESTAMP"


def test_output_is_identical_whatever_the_workers_and_batch_size(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = demo_data
    orders = []
    for shape, (batch, execution) in enumerate([("max_files = 1", "workers = 1"),
                                                ('max_files = 50\nmax_bytes = "200KB"', "workers = 2")]):
        directory = tmp_path / f"shape{shape}"
        directory.mkdir()
        job = write_job(directory, data, batch=batch, execution=execution)
        assert run_json(job, directory / "state", capsys)[0] == EXIT_OK
        with duckdb.connect(str(directory / "staging" / STAGING_DB), read_only=True) as db:
            orders.append(db.execute("SELECT order_id, unit_price, notes, _line FROM orders").fetchall())
    assert len(orders[0]) == truth.total_rows
    assert orders[0] == orders[1]


def test_status_and_runs_report_the_history(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = demo_data
    state = tmp_path / "state"
    job = write_job(tmp_path, data)
    first = run_json(job, state, capsys)[1]["run_id"]
    second = run_json(job, state, capsys, "--full-refresh")[1]["run_id"]  # stages all again
    assert invoke(["runs", "--state-dir", str(state), "--json"]) == EXIT_OK
    history = parse_json(capsys.readouterr().out)
    assert [r["run_id"] for r in history] == [second, first]
    assert all(r["rows"]["staged"] == truth.total_rows for r in history)
    assert invoke(["status", first, "--state-dir", str(state), "--json"]) == EXIT_OK
    assert parse_json(capsys.readouterr().out)["run_id"] == first
    assert invoke(["status", "--state-dir", str(state)]) == EXIT_OK
    assert second in capsys.readouterr().out


def test_resuming_a_finished_run_is_a_no_op_that_says_so(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = demo_data
    state = tmp_path / "state"
    run_id = run_json(write_job(tmp_path, data), state, capsys)[1]["run_id"]
    assert invoke(["resume", run_id, "--state-dir", str(state), "--no-progress"]) == EXIT_OK
    assert "already succeeded" in capsys.readouterr().err
    assert_exactly_once(state, truth.total_rows)
    assert Catalog(state).counts(run_id).attempts == 8


def test_unknown_run_id_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(["status", "nope", "--state-dir", str(tmp_path)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert invoke(["resume", "--state-dir", str(tmp_path)]) == 2


def test_a_corrupt_file_is_quarantined_and_the_rest_of_its_batch_commits(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = demo_data
    broken = tmp_path / "data"
    broken.mkdir()
    (broken / "supplier_00").symlink_to(data / "supplier_00")
    (broken / "supplier_xx").mkdir()
    (broken / "supplier_xx" / "orders_9999.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    job = write_job(tmp_path, broken, batch="max_files = 50")
    code, report = run_json(job, tmp_path / "state", capsys)
    expected = sum(n for f, n in truth.files.items() if f.startswith("supplier_00/"))
    assert code == EXIT_PARTIAL and report["state"] == "failed"
    assert report["rows"]["staged"] == expected and report["files"]["failed"] == 1
    assert report["failed_files"][0]["path"].endswith("orders_9999.csv.gz")
    assert "compression" in report["failed_files"][0]["error"]


WORKER_WITHOUT_PANDAS = """
import json, sys
from pathlib import Path
from batchrun.config import load_job
from batchrun.model import BatchTask
from batchrun.pipeline import BatchPipeline, PipelineSpec

job = load_job(Path(sys.argv[1]), {"staging.dir": sys.argv[2]})
config = job.config
spec = PipelineSpec(run_id="r", table=job.table, staging_dir=str(job.staging_dir),
                    fmt="csv", csv=config.source.csv, columns=dict(config.schema_.columns),
                    validation=config.validation)
result = BatchPipeline(0, spec).process(BatchTask(batch_id="b", files=tuple(sys.argv[3:])))
imported = "pandas" in sys.modules
import pyarrow.parquet as pq
frame = pq.read_table(result.output_path).to_pandas()
print(json.dumps({"imported_by_batch": imported, "staged": result.rows_staged,
                  "frame_rows": len(frame)}))
"""


def test_a_worker_leaves_pandas_unimported_and_pandas_still_works_after(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth]) -> None:
    pytest.importorskip("pandas")
    data, truth = demo_data
    job = write_job(tmp_path, data)
    names = sorted(name for name in truth.files if name.endswith(".csv"))[:3]
    done = subprocess.run([sys.executable, "-c", WORKER_WITHOUT_PANDAS, str(job),
                           str(tmp_path / "staging"), *(str(data / name) for name in names)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert not seen["imported_by_batch"]
    assert seen["staged"] == seen["frame_rows"] == sum(truth.details[n].valid_rows for n in names)
