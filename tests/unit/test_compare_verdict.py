"""The compare verdict, its numbers and its spread, and the text helpers of the report
pages: pure functions over hand-made results (no run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrun.cli import EXIT_USAGE, invoke
from batchrun.cli.render import tail
from batchrun.metrics import Percentiles, RunMetrics
from batchrun.model import BatchCounts, RowCounts, RunState
from batchrun.tools.compare import CompareResult, ShapeResult, Spread, verdict
from batchrun.tools.numbers import number, ratio, signed_mb


def metrics(mb_per_s: float) -> RunMetrics:
    return RunMetrics("r", "job", RunState.SUCCEEDED, 1.0, 1.0, 1, RowCounts(10), mb_per_s, 1.0,
                      None, BatchCounts(1, 1), 1, 0, 0.0, Percentiles(), Percentiles(), 1, 1, 1,
                      (), ())


def shape(name: str, speeds: list[float], memory: list[float], identical: bool = True) -> ShapeResult:
    rounds = tuple(ShapeResult(name, None, {}, 0, 1.0, mb, 0.0, 0.0, metrics(mb_s), "c", None,
                               identical) for mb_s, mb in zip(speeds, memory))
    return ShapeResult(name, None, {}, 0, 1.0, memory[0], 0.0, 0.0, metrics(speeds[0]), "c",
                       None, identical, rounds if len(rounds) > 1 else ())


def result(*shapes: ShapeResult) -> CompareResult:
    return CompareResult("job.toml", "scratch", list(shapes), rounds=len(shapes[0].rounds) or 1)


@pytest.mark.parametrize(("value", "text"), [
    (1234.5678, "1,235"), (56.0, "56"), (12.34, "12.3"), (1.8, "1.8"), (1.25, "1.25"),
    (1.0, "1"), (0.0423, "0.042"), (0.0, "0"), (3, "3"), (12_000, "12,000"), (None, "-")])
def test_numbers_show_the_digits_their_size_deserves(value: float | None, text: str) -> None:
    assert number(value) == text


def test_ratio_and_memory_differences_read_as_people_write_them() -> None:
    assert (ratio(1.86), ratio(12.4), signed_mb(270.4), signed_mb(-12.0), signed_mb(0.2)) == (
        "1.9×", "12×", "+270 MB", "−12 MB", "±0 MB")


def test_a_clear_lead_is_a_ratio_at_a_memory_cost_and_says_all_shapes_identical() -> None:
    found = verdict(result(shape("sequential", [10, 10.4], [400, 420]),
                           shape("hybrid", [18.2, 18.6], [680, 700])))
    assert found == ("on this data, hybrid is 1.8× sequential's throughput at +280 MB"
                     " (medians of 2 rounds); all shapes identical")


def test_overlapping_spreads_are_within_noise_not_a_ranking() -> None:
    found = verdict(result(shape("sequential", [10, 14], [400, 400]),
                           shape("parallel", [12, 16], [500, 500])))
    assert found.startswith("on this data, parallel and sequential are within noise of each other"
                            " (12–16 vs 10–14 MB/s over 2 rounds)")


def test_a_third_shape_inside_the_leaders_range_is_named_as_within_noise() -> None:
    found = verdict(result(shape("sequential", [10, 10], [400, 400]),
                           shape("parallel", [16, 21], [700, 760]),
                           shape("hybrid", [18.2, 18.6], [680, 700])))
    assert found.startswith("on this data, parallel is 1.9× sequential's throughput at +330 MB"
                            " (medians of 2 rounds, hybrid within noise of it)")


def test_sequential_fastest_is_compared_with_the_runner_up() -> None:
    found = verdict(result(shape("sequential", [20, 20], [400, 400]),
                           shape("parallel", [10, 10], [500, 500])))
    assert found.startswith("on this data, sequential is 2× parallel's throughput at −100 MB")


def test_a_shape_that_staged_other_rows_is_named_in_the_verdict() -> None:
    found = verdict(result(shape("sequential", [10, 10], [400, 400]),
                           shape("parallel", [20, 20], [500, 500], identical=False)))
    assert found.endswith("; NOT identical: parallel staged other rows than sequential")


def test_a_spread_is_the_median_and_the_range_of_the_rounds() -> None:
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0)
    assert Spread.of([1.0, 2.0]).as_json() == {"median": 1.5, "min": 1.0, "max": 2.0}


def test_a_long_path_shows_its_tail_never_a_cut_head() -> None:
    long = "/srv/feeds/incoming/2026/12/02/nightly/supplier_07/orders_0012.csv"
    assert tail(long, 40) == "…/02/nightly/supplier_07/orders_0012.csv"
    assert tail(long, 37) == "…/nightly/supplier_07/orders_0012.csv"
    assert tail("/a/b.csv", 40) == "/a/b.csv"
    assert tail("/x/" + "n" * 60 + ".csv", 20).endswith("nnn.csv") and len(tail("/x/" + "n" * 60, 20)) == 20


@pytest.mark.parametrize("args", [["--rounds", "0"], ["--html", "missing/dir/c.html"]])
def test_compare_refuses_zero_rounds_and_a_missing_html_folder_before_running(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    job = tmp_path / "job.toml"
    job.write_text("not even toml")  # never read: the command line is refused first
    assert invoke(["compare", str(job), *[a.replace("missing", str(tmp_path / "missing"))
                                          for a in args]]) == EXIT_USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and args[0] in lines[0]
