"""`batchrun compare`: real runs of each shape in subprocesses, one table, same rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, EXIT_USAGE, invoke
from batchrun.tools.charts import COLUMNS
from batchrun.tools.compare import checksum
from batchrun.tools.demo import DemoTruth
from tests.conftest import parse_json, write_job

REQUIRED = {"name", "wall_s", "mb_per_s", "rows_per_s", "latency_p50_s", "latency_p99_s",
            "peak_rss_mb", "retries", "failed_batches", "identical"}


def test_default_shapes_stage_identical_rows_and_report_every_figure(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = demo_data
    job = write_job(tmp_path, data, batch="max_files = 1")
    html = tmp_path / "compare.html"
    code = invoke(["compare", str(job), "--json", "--html", str(html), "--rounds", "1",
                   "--scratch", str(tmp_path / "scratch")])
    report = parse_json(capsys.readouterr().out)
    assert code == EXIT_OK and report["all_identical"]
    assert [s["name"] for s in report["shapes"]] == ["sequential", "parallel", "hybrid"]
    for shape in report["shapes"]:
        assert REQUIRED <= set(shape)
        assert shape["exit_code"] == 0 and shape["identical"] is True
        assert shape["rows_staged"] == truth.total_rows and shape["rows_rejected"] == 0
        assert shape["peak_rss_mb"] > 0 and shape["mb_per_s"] > 0
        assert shape["latency_p50_s"] <= shape["latency_p99_s"]
    assert len({s["checksum"] for s in report["shapes"]}) == 1
    assert report["shapes"][0]["max_in_flight"] == 1  # sequential
    assert report["shapes"][1]["max_in_flight"] > 1
    page = html.read_text()
    assert "plotly" in page and "Batches in flight over time" in page and "hybrid" in page
    assert list((tmp_path / "scratch").iterdir()) == []  # its run folder removed unless --keep


def test_custom_shapes_with_faults_print_the_table(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = demo_data
    job = write_job(tmp_path, data, batch="max_files = 1")
    code = invoke(["compare", str(job), "--shapes", "per_source_concurrency=1", "--rounds", "1",
                   "--inject-faults", "seed = 2, read_error_rate = 0.25"])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    table = captured.out
    for heading, _ in COLUMNS:
        assert heading in table
    for name in ("sequential", "per_source_concurrency=1", "sequential +faults",
                 "per_source_concurrency=1 +faults"):
        assert name in table
    assert "NO" not in table


def test_the_checksum_sees_a_missing_file(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str],
        ray_session: None) -> None:
    data, _ = demo_data
    sums = []
    for name, dropped in (("all", None), ("fewer", "supplier_01")):
        folder = tmp_path / name
        folder.mkdir()
        job = write_job(folder, data, batch="max_files = 2")
        if dropped:  # the same job without one supplier's files
            job.write_text(job.read_text().replace('/*/*.csv', '/supplier_0[023]/*.csv'))
        assert invoke(["run", str(job), "--state-dir", str(folder / "s"), "--no-progress"]) == 0
        catalog = Catalog(folder / "s")
        sums.append(checksum(catalog, catalog.latest_run_id()))
    capsys.readouterr()
    assert sums[0] != sums[1]
    assert sums[0].split("/")[0].split(":")[0] != sums[1].split("/")[0].split(":")[0]


@pytest.mark.parametrize(("args", "needle"), [
    (["--shapes", "fastest"], "fastest"),
    (["--shapes", "workers=0"], "workers=0"),
    (["--inject-faults", "explode = true"], "BATCHRUN_FAULTS"),
])
def test_bad_shapes_and_faults_are_refused_before_anything_runs(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str],
        args: list[str], needle: str) -> None:
    job = write_job(tmp_path, demo_data[0])
    assert invoke(["compare", str(job), *args]) == EXIT_USAGE
    assert needle in capsys.readouterr().err
