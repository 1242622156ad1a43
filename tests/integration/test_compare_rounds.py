"""`batchrun compare --rounds 2 --html`: every shape twice, interleaved, with its spread and a
verdict that follows from the medians; the page loads in a real headless chromium."""

from __future__ import annotations

from pathlib import Path
from statistics import median

import pytest

from batchrun.cli import EXIT_OK, invoke
from batchrun.tools.demo import DemoSpec, generate
from batchrun.tools.numbers import ratio
from tests.browser import loaded, svg_shapes
from tests.conftest import parse_json, write_job


def test_two_rounds_give_each_shape_its_spread_and_a_verdict_the_page_shows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = generate(DemoSpec(out_dir=tmp_path / "data", suppliers=2, files_per_supplier=1,
                              file_bytes=40_000, seed=5))
    job = write_job(tmp_path, tmp_path / "data", batch="max_files = 1")
    page_file = tmp_path / "compare.html"
    code = invoke(["compare", str(job), "--shapes", "sequential,parallel", "--rounds", "2",
                   "--json", "--html", str(page_file), "--scratch", str(tmp_path / "scratch")])
    found = parse_json(capsys.readouterr().out)
    assert code == EXIT_OK and found["rounds"] == 2 and found["all_identical"] is True
    checksums = set()
    for shape in found["shapes"]:
        rounds = shape["rounds"]
        assert len(rounds) == 2 and all(r["exit_code"] == 0 and r["identical"] for r in rounds)
        assert len({r["run_id"] for r in rounds}) == 2
        checksums |= {r["checksum"] for r in rounds}
        speeds = [r["mb_per_s"] for r in rounds]
        assert shape["spread"]["mb_per_s"] == {"median": round(median(speeds), 3),
                                               "min": min(speeds), "max": max(speeds)}
        assert shape["rows_staged"] == truth.total_rows
    assert len(checksums) == 1  # four runs, the same rows
    check_verdict(found)
    check_page(page_file, found["verdict"], tmp_path)


def check_verdict(found: dict) -> None:
    """The verdict names the faster median, and says "within noise" exactly when the two
    shapes' min–max ranges overlap."""
    verdict = found["verdict"]
    assert verdict.endswith("; all shapes identical")
    spread = {s["name"]: s["spread"]["mb_per_s"] for s in found["shapes"]}
    fast, slow = sorted(spread, key=lambda name: spread[name]["median"], reverse=True)
    a, b = spread[fast], spread[slow]
    if a["min"] <= b["max"] and b["min"] <= a["max"]:
        assert verdict.startswith(f"on this data, {fast} and {slow} are within noise")
    else:
        assert verdict.startswith(f"on this data, {fast} is {ratio(a['median'] / b['median'])}"
                                  f" {slow}'s throughput at ")


def check_page(page_file: Path, verdict: str, tmp_path: Path) -> None:
    with loaded(page_file, tmp_path / "profile", "compare.png") as seen:
        assert seen.console_errors == [] and seen.page_errors == []
        assert seen.requests == []
        page = seen.page
        assert page.inner_text("p.verdict") == verdict
        bars = svg_shapes(page, "svg.chart rect.bar")
        assert len(bars) == 4 and all(b["width"] > 0 and b["height"] > 0 for b in bars)
        assert len(svg_shapes(page, "svg.chart path.whisker")) == 4
        assert page.locator(".js-plotly-plot").count() == 2  # plotly drew its two charts
        assert "Batches in flight over time" in page.inner_text("body")
