"""Bounded parallelism, for real: limits checked from the recorded dispatch and commit
times of every attempt, a circuit breaker tripped by a source that is down, and
sequential mode failing fast, each with staged rows checked against the truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, EXIT_PARTIAL, invoke
from batchrun.execution.admission import per_source_peaks
from batchrun.metrics import peak_bytes_in_flight, run_metrics, steady_throughput
from batchrun.tools.demo import DemoSpec, DemoTruth, generate
from tests.conftest import assert_exactly_once, parse_json, write_job

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def three_suppliers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoTruth]:
    """3 suppliers × 6 small files (one batch per file in these tests)."""
    out = tmp_path_factory.mktemp("three")
    return out, generate(DemoSpec(out_dir=out, suppliers=3, files_per_supplier=6,
                                  file_bytes=30_000, seed=5))


def run(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], execution: str,
        faults: str = "", *flags: str) -> tuple[int, dict]:
    extra = f"\n[faults]\n{faults}\n" if faults else ""
    job = write_job(tmp_path, data, batch="max_files = 1", execution=execution, extra=extra)
    code = invoke(["run", str(job), "--state-dir", str(tmp_path / "s"), "--json",
                   "--no-progress", *flags])
    return code, parse_json(capsys.readouterr().out)


def attempts(tmp_path: Path) -> list[dict]:
    catalog = Catalog(tmp_path / "s")
    return catalog.attempt_rows(catalog.latest_run_id())


def intervals(rows: list[dict]) -> list[tuple[str, float, float]]:
    return [(r["source"], r["queued_at"], r["ended_at"]) for r in rows]


def truth_of(truth: DemoTruth, excluding: str = "\0") -> int:
    return sum(n for rel, n in truth.files.items() if not rel.startswith(excluding))


def test_per_source_cap_global_cap_and_stagger_hold(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = demo_data
    code, _ = run(tmp_path, data, capsys,
                  "workers = 2\nmax_in_flight = 3\nper_source_concurrency = 2\nstagger = '300ms'",
                  "batch_delay = 0.15")
    assert code == EXIT_OK
    assert_exactly_once(tmp_path / "s", truth.total_rows)
    rows = attempts(tmp_path)
    assert len(rows) == 12 and all(r["outcome"] == "committed" for r in rows)
    peaks = per_source_peaks(intervals(rows))
    assert max(peaks.values()) == 2, peaks  # the cap binds, and is never exceeded
    overall = per_source_peaks([("all", s, e) for _, s, e in intervals(rows)])["all"]
    assert overall == 3
    firsts = sorted(min(r["queued_at"] for r in rows if r["source"] == s) for s in peaks)
    gaps = [b - a for a, b in zip(firsts, firsts[1:])]
    assert len(gaps) == 3 and min(gaps) >= 0.29, gaps
    started = sorted(rows, key=lambda r: r["queued_at"])
    assert [r["source"] for r in started[:2]] == ["supplier_00"] * 2  # plan order, then stagger


def test_bytes_in_flight_and_rate_limit_hold(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = demo_data
    sizes = sorted(p.stat().st_size for p in data.rglob("*.csv*"))
    limit = sizes[-1] + sizes[-2]  # room for two batches at most, never three
    code, _ = run(tmp_path, data, capsys,
                  f"workers = 2\nmax_in_flight = 4\nper_source_concurrency = 'unlimited'\n"
                  f"max_bytes_in_flight = {limit}\nrate_limit = '5/s'", "batch_delay = 0.1")
    assert code == EXIT_OK
    assert_exactly_once(tmp_path / "s", truth.total_rows)
    rows = attempts(tmp_path)
    assert peak_bytes_in_flight(rows) <= limit
    for source in {r["source"] for r in rows}:
        starts = sorted(r["queued_at"] for r in rows if r["source"] == source)
        assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.19


def test_a_source_that_is_down_trips_its_breaker_and_the_others_finish(
        tmp_path: Path, three_suppliers: tuple[Path, DemoTruth],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    data, truth = three_suppliers
    monkeypatch.setenv("BATCHRUN_FAULTS", "fail_paths = ['supplier_01/']")
    code, report = run(
        tmp_path, data, capsys,
        "workers = 2\nmax_retries = 0\nper_source_concurrency = 1\n"
        "circuit_breaker = { failures = 2, cooldown = '500ms' }")
    assert code == EXIT_PARTIAL
    assert report["batches"] == {"total": 18, "committed": 12, "failed": 3, "pending": 0,
                                 "running": 0, "skipped": 3}
    assert report["rows"]["staged"] == truth_of(truth, excluding="supplier_01/")
    skipped = report["skipped_files"]
    assert len(skipped) == 3 and all("supplier_01" in s["path"] for s in skipped)
    assert all("circuit breaker of source supplier_01 stayed open" in s["reason"] for s in skipped)
    rows = attempts(tmp_path)
    bad = sorted((r for r in rows if r["source"] == "supplier_01"), key=lambda r: r["queued_at"])
    assert [r["outcome"] for r in bad] == ["failed"] * 3
    assert bad[2]["queued_at"] - bad[1]["ended_at"] >= 0.49  # the probe waited out the cool-down
    invoke(["status", "--state-dir", str(tmp_path / "s")])
    assert "skipped" in capsys.readouterr().out
    monkeypatch.delenv("BATCHRUN_FAULTS")  # the endpoint is back
    code = invoke(["resume", "--state-dir", str(tmp_path / "s"), "--json", "--no-progress"])
    capsys.readouterr()
    assert code == EXIT_OK
    assert_exactly_once(tmp_path / "s", truth.total_rows)


def test_sequential_mode_stops_at_the_first_failed_batch_and_resumes(
        tmp_path: Path, three_suppliers: tuple[Path, DemoTruth],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    data, truth = three_suppliers
    monkeypatch.setenv("BATCHRUN_FAULTS", "fail_paths = ['supplier_01/orders_0002']")
    code, report = run(tmp_path, data, capsys, "workers = 2\nmode = 'sequential'\nmax_retries = 1")
    assert code == EXIT_PARTIAL
    assert report["batches"]["committed"] == 8 and report["batches"]["failed"] == 1
    assert report["batches"]["pending"] == 9  # nothing after the failure was touched
    assert "sequential mode stops" in report["message"]
    rows = attempts(tmp_path)
    assert per_source_peaks([("all", s, e) for _, s, e in intervals(rows)])["all"] == 1
    order = [r["batch_id"] for r in sorted(rows, key=lambda r: r["queued_at"])]
    assert order == sorted(order)  # plan order, the failed batch's retry right after it
    monkeypatch.delenv("BATCHRUN_FAULTS")
    code = invoke(["resume", "--state-dir", str(tmp_path / "s"), "--json", "--no-progress"])
    capsys.readouterr()
    assert code == EXIT_OK
    assert_exactly_once(tmp_path / "s", truth.total_rows)


def test_report_shows_throughput_latency_and_concurrency_per_source(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = demo_data
    code, _ = run(tmp_path, data, capsys, "workers = 2",
                  "crash_worker = 'before_write'\ncrash_batches = [1, 5]")
    assert code == EXIT_OK
    catalog = Catalog(tmp_path / "s")
    metrics = run_metrics(catalog, catalog.latest_run_id()).as_json()
    assert metrics["rows_staged"] == truth.total_rows
    assert metrics["retries"] == sum(r["outcome"] == "retried" for r in attempts(tmp_path)) >= 2
    assert metrics["attempts"] == 12 + metrics["retries"]
    assert 0 < metrics["latency_p50_s"] <= metrics["latency_p95_s"] <= metrics["latency_p99_s"]
    assert metrics["mb_per_s"] > 0 and metrics["rows_per_s"] > 0
    assert metrics["steady_mb_per_s"] is not None and metrics["steady_mb_per_s"] > 0
    assert {s["source"] for s in metrics["sources"]} == {f"supplier_0{i}" for i in range(4)}
    assert all(1 <= s["max_concurrency"] <= 3 for s in metrics["sources"])
    assert invoke(["report", "--state-dir", str(tmp_path / "s")]) == EXIT_OK
    text = capsys.readouterr().out
    for label in ("throughput", "steady", "batch latency", "errors", "max concurrency", "supplier_03"):
        assert label in text
    assert invoke(["report", "--state-dir", str(tmp_path / "s"), "--json"]) == EXIT_OK
    assert parse_json(capsys.readouterr().out)["retries"] == metrics["retries"]


def test_group_by_regex_names_the_sources(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = demo_data
    code, _ = run(tmp_path, data, capsys, "workers = 2", "",
                  "--group-by", r"/supplier_(?P<supplier>\d+)/", "--set", "execution.stagger='50ms'")
    assert code == EXIT_OK
    assert_exactly_once(tmp_path / "s", truth.total_rows)
    catalog = Catalog(tmp_path / "s")
    sources = {b["source"] for b in catalog.batches(catalog.latest_run_id())}
    assert sources == {"00", "01", "02", "03"}
    (tmp_path / "one").mkdir()
    code, _ = run(tmp_path / "one", data, capsys, "workers = 2", "", "--group-by", "none")
    assert code == EXIT_OK
    catalog = Catalog(tmp_path / "one" / "s")
    assert {b["source"] for b in catalog.batches(catalog.latest_run_id())} == {"all"}


def committed_at(queued: float, ended: float, megabytes: int) -> dict[str, float | int | str]:
    return {"queued_at": queued, "ended_at": ended, "bytes": megabytes * 10**6, "source": "a"}


def test_steady_throughput_counts_from_the_first_commit_to_the_last() -> None:
    # 2 workers start at 0 (actors start, first batches warm up), then a commit every second
    done = [committed_at(0, 3, 40), committed_at(0, 3.5, 40), committed_at(3, 4.5, 40),
            committed_at(3.5, 5.5, 40), committed_at(4.5, 6, 40)]
    intervals = [(str(a["source"]), float(a["queued_at"]), float(a["ended_at"])) for a in done]
    assert steady_throughput(done, intervals) == round(160 / 3.0, 2)
    # a retried attempt that ends after the last commit does not stretch the window
    assert steady_throughput(done, [*intervals, ("a", 5.0, 9.0)]) == round(160 / 3.0, 2)


def test_steady_throughput_leaves_out_the_gap_between_a_kill_and_its_resume() -> None:
    before = [committed_at(0, 2, 10), committed_at(1, 3, 10)]
    after = [committed_at(100, 101, 10), committed_at(101, 102, 10)]
    intervals = [("a", float(a["queued_at"]), float(a["ended_at"])) for a in before + after]
    assert steady_throughput(before + after, intervals) == round(30 / 3.0, 2)
    assert steady_throughput(before[:1], intervals[:1]) is None
