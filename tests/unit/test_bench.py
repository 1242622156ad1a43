"""scripts/bench.py and its helpers, without running a benchmark: the shapes' cache folders,
the contender choice (--peers, --baseline), the stages read from a real run log
(tests/data/bench_run.log, a few-big `--quick` run's), the Markdown and the target checks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench  # noqa: E402
import bench_markdown  # noqa: E402
import bench_stages  # noqa: E402

LOG = Path(__file__).resolve().parents[1] / "data" / "bench_run.log"


def names(contenders: list[bench.Contender]) -> list[str]:
    return [c.name for c in contenders]


def test_the_4gb_shape_reuses_the_folder_of_the_generated_data() -> None:
    assert bench.SCALES["4gb"]["4gb"].folder(42) == "4gb-2000x2000000-s42"
    assert bench.SCALES["seed"]["seed"].folder(42) == "seed-10000x2000000-s42"


def test_scale_all_puts_the_scale_shapes_before_the_default_ones() -> None:
    assert list(bench.SCALES["all"]) == ["4gb", "seed", "few-big", "many-small"]


def test_peers_keep_batchrun_and_only_the_peers_named() -> None:
    chosen = bench.choose_contenders(None, "duckdb,polars,pyarrow_2proc", baseline=False)
    assert names(chosen) == ["batchrun", "duckdb_copy", "polars", "pyarrow_2proc"]


def test_a_baseline_adds_batchrun_before_beside_batchrun() -> None:
    chosen = bench.choose_contenders(None, "duckdb", baseline=True)
    assert names(chosen) == ["batchrun", "batchrun_before", "duckdb_copy"]
    assert "batchrun_before" in names(bench.choose_contenders(None, None, baseline=True))


def test_contenders_still_choose_everything_and_peers_filter_their_peers() -> None:
    assert names(bench.choose_contenders("dask,batchrun_1worker", None, False)) == [
        "dask", "batchrun_1worker"]
    assert names(bench.choose_contenders("dask,batchrun_1worker", "polars", False)) == [
        "batchrun_1worker", "polars"]


def test_an_unknown_peer_is_refused_with_the_known_ones() -> None:
    with pytest.raises(SystemExit, match="unknown peer.*duckdb_copy"):
        bench.choose_contenders(None, "sqlite", False)


def test_batchrun_before_runs_with_the_baseline_checkouts_interpreter(tmp_path: Path) -> None:
    jobs = {True: tmp_path / "job.toml"}
    command = bench.contender_command(bench.BEFORE, tmp_path, tmp_path / "out", jobs, Path("/b"))
    assert command[:4] == ["/b/.venv/bin/python", "-m", "batchrun", "run"]
    mine = bench.contender_command(bench.BY_NAME["batchrun"], tmp_path, tmp_path, jobs, Path("/b"))
    assert mine[0] == sys.executable


def test_the_full_job_has_a_unique_order_id_and_types_only_has_no_rule(tmp_path: Path) -> None:
    full = bench.job_document(tmp_path, rules=True)
    types_only = bench.job_document(tmp_path, rules=False)
    assert full["schema"]["columns"]["order_id"]["unique"] is True
    assert full["batch"] == bench.demo_job()["batch"]
    assert all(set(spec) <= {"type", "format"} for spec in
               types_only["schema"]["columns"].values())


def times_of(text: str, lead: float = 1.5, tail: float = 0.9) -> dict[str, Any]:
    """stage_times of a log, the command spawned `lead` s before Ray's start began and
    exiting `tail` s after the last line."""
    lines = bench_stages.parse_log(text)
    began = lines[1].at - 10.46
    return bench_stages.stage_times(lines, began - lead, began, lines[-1].at + tail)


def test_the_stages_of_a_real_run_log_cover_its_wall_time() -> None:
    times = times_of(LOG.read_text())
    assert times["imports"] == pytest.approx(1.5, abs=0.002)
    assert times["ray_start"] == 10.46
    assert times["planning"] is None
    assert times["batches"] == pytest.approx(18.199 - 16.163, abs=0.002)
    assert times["unique"] == pytest.approx(18.657 - 18.199, abs=0.002)
    assert times["publish"] == pytest.approx(18.735 - 18.657, abs=0.002)
    assert times["exit"] == pytest.approx(0.9, abs=0.002)
    covered = sum(times[s] for s in bench_stages.STAGES if s != "planning")
    assert covered == pytest.approx(times["wall"], abs=0.01)
    assert times["derived"] == ["publish", "unique"]
    assert times["first_batch"] == pytest.approx(1.5 + 10.46 + 16.163 - 16.087, abs=0.002)


def test_stages_that_log_their_seconds_are_read_from_the_line() -> None:
    text = LOG.read_text().replace(
        "0 later duplicate(s) rejected", "0 later duplicate(s) rejected in 0.12s").replace(
        "| starting job", "| planned 20 files, 4 batches in 0.31s\n"
        "2026-12-02 03:42:16.078 | INFO    | run=r batch=- | starting job")
    times = times_of(text)
    assert times["unique"] == 0.12
    assert times["planning"] == 0.31
    assert times["derived"] == ["publish"]


def test_the_unique_stage_is_read_from_its_timed_line_not_the_background_line_after_it() -> None:
    text = LOG.read_text().replace(
        "0 later duplicate(s) rejected",
        "0 later duplicate(s) rejected in 0.12s (index: 7 keys)\n2026-12-02 03:42:18.660 | INFO"
        "    | run=r batch=- | unique keys ['order_id']: indexed 7 keys of 2 file(s) in the"
        " background, 0.50s CPU")
    times = times_of(text)
    assert times["unique"] == 0.12
    assert "unique" not in times["derived"]


def test_a_log_without_commits_or_an_end_leaves_those_stages_out() -> None:
    text = "\n".join(LOG.read_text().splitlines()[:3]) + "\n  Traceback line, not a log line\n"
    times = times_of(text)
    assert times["batches"] is None and times["unique"] is None and times["exit"] is None
    assert times["rest"] > 0


def test_overlapping_stages_are_not_counted_twice() -> None:
    lines = [bench_stages.LogLine(10.0, "INFO", "connected to Ray at x (2 CPUs) in 4.00s"),
             bench_stages.LogLine(8.0, "DEBUG", "dispatched to worker 0"),
             bench_stages.LogLine(9.0, "INFO", "planned 2 files, 1 batch in 1.00s"),
             bench_stages.LogLine(12.0, "INFO", "committed: 1 rows staged, 0.1s")]
    times = bench_stages.stage_times(lines, 5.0, 6.0, 13.0)
    assert times["imports"] + times["ray_start"] + times["batches"] == 9.0 > times["wall"]
    assert times["planning"] == 1.0
    assert times["rest"] == 1.0  # 12-13: no end line, so no exit stage


def test_a_moment_is_placed_in_the_stage_that_began_last_around_it(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "r1.log").write_text(LOG.read_text())
    lines = bench_stages.parse_log(LOG.read_text())
    began = lines[1].at - 10.46
    marks = {"ray": lines[1].at - 1, "batch": lines[-3].at - 0.1, "unique": lines[-2].at - 0.1,
             "after": lines[-1].at + 5}
    times = bench_stages.run_stage_times(tmp_path, "r1", began - 1.5, began, lines[-1].at + 1,
                                         marks)
    assert times is not None
    assert times["in_stage"] == {"ray": "ray_start", "batch": "batches", "unique": "unique",
                                 "after": "rest"}
    assert bench_stages.run_stage_times(tmp_path, "r2", 0.0, None, 1.0) is None


def shape_result(name: str, ratio_duckdb: float | None, steady_pct: float | None) -> dict[str, Any]:
    stages = {**dict.fromkeys(bench_stages.STAGES, 1.0), "unique": 0.4, "planning": None,
              "wall": 10.0, "derived": ["unique"]}
    batchrun = {"status": "ok", "median_wall_s": 10.0, "min_wall_s": 9.0, "max_wall_s": 11.0,
                "mb_per_s": 400.0, "peak_rss_mb": 1500.0, "rows_match_truth": True,
                "verified": True, "ratio_to_duckdb_copy": ratio_duckdb, "ratio_to_polars": 0.5,
                "peak_rss_by_kind_mb": {"driver": 300.0, "workers": 600.0},
                "median_stages": stages, "median_cpu_s": {"driver": 2.0, "workers": 15.0},
                "peak_rss_in_stage": {"driver": ["batches", "unique", "unique"]}}
    duckdb = {"status": "ok", "median_wall_s": 12.0, "min_wall_s": 12.0, "max_wall_s": 12.0,
              "mb_per_s": 333.0, "peak_rss_mb": 200.0, "rows_match_truth": True,
              "ratio_to_duckdb_copy": 1.0, "ratio_to_polars": None}
    return {"files": 400, "bytes": 4_000_000_000, "truth_rows": 39_059_990, "rounds_run": 2,
            "contenders": {"batchrun": batchrun, "duckdb_copy": duckdb,
                           "polars": {"status": "skipped (not installed)"}},
            "derived": {"batchrun_steady_pct_of_measured": steady_pct,
                        "unique_share_of_wall": 0.04}}


def results_of(shapes: dict[str, Any]) -> dict[str, Any]:
    return {"shapes": shapes, "config": {"command": ".venv/bin/python scripts/bench.py --scale all"},
            "machine": {"cpu_count": 2, "cpu_model": "Xeon", "ram_gib": 23.6, "python": "3.11.7",
                        "git_rev": "abc1234", "versions": {"ray": "2.60.0"}}}


def test_the_markdown_puts_scale_rows_first_then_stages_machine_and_command() -> None:
    text = bench_markdown.markdown(results_of({"few-big": shape_result("few-big", 1.4, 95.0),
                                               "4gb": shape_result("4gb", 0.8, 85.0)}))
    assert text.index("**4gb**") < text.index("**few-big**")
    assert ("| batchrun | 10.0 s (9.0–11.0) | 400 | 0.80× | 0.50× |"
            " 1,500 (driver 300 in unique, largest worker 600) |") in text
    assert "| 4gb | batchrun | 10.00 | – | 1.00 (10%) | – | 1.00 (10%) | 1.00 (10%) | 0.40 (4%) |" in text
    assert "| polars | skipped (not installed) |" in text
    assert "Before and after" not in text
    assert "2 cores (Xeon), 23.6 GiB RAM" in text and "batchrun abc1234" in text
    assert "polars not installed" in text
    assert "```bash\n.venv/bin/python scripts/bench.py --scale all\n```" in text


def test_with_a_baseline_the_markdown_has_a_before_after_table() -> None:
    shape = shape_result("4gb", 0.8, 85.0)
    shape["contenders"]["batchrun_before"] = {**shape["contenders"]["batchrun"],
                                              "median_wall_s": 40.0}
    text = bench_markdown.markdown(results_of({"4gb": shape}))
    assert "| 4gb | 40.0 s | 10.0 s | 0.25× |" in text


def test_the_target_checks_say_met_not_met_or_n_a() -> None:
    checks = bench_markdown.target_checks(results_of({"few-big": shape_result("few-big", 1.4, None),
                                                      "4gb": shape_result("4gb", 0.8, 85.0)}))
    verdicts = {(c["shape"], c["check"].split()[-2]): bench_markdown.met_text(c["met"])
                for c in checks}
    assert verdicts == {("4gb", "duckdb_copy"): "met", ("4gb", "polars"): "met",
                        ("4gb", "pyarrow_2proc"): "not met", ("4gb", "batchrun"): "met",
                        ("few-big", "duckdb_copy"): "not met",
                        ("few-big", "pyarrow_2proc"): "n/a", ("few-big", "batchrun"): "met"}


def test_a_baseline_without_its_own_venv_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--baseline", str(tmp_path)])
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    args = bench.parse_args(["--scale", "4gb", "--baseline", str(tmp_path), "--planning", "5"])
    assert (args.scale, args.baseline, args.planning) == ("4gb", tmp_path, 5)
