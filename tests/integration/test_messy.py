"""Messy supplier feeds end to end: every good row staged once, every bad row rejected once,
every broken file quarantined with its reason — also across a kill and a resume."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_PARTIAL, invoke
from batchrun.tools.demo import DemoSpec, DemoTruth, generate
from batchrun.tools.faults import FAULTS_ENV
from tests.conftest import (
    ON_RAY,
    assert_exactly_once,
    committed_batches,
    kill_group,
    parse_json,
    spawn_cli,
    wait_for,
    write_job,
)


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoTruth]:
    out = tmp_path_factory.mktemp("messy")
    truth = generate(DemoSpec(out_dir=out, suppliers=3, files_per_supplier=3, file_bytes=120_000,
                              gzip_every=3, quoted_newline_rate=0.01, bad_row_rate=0.01,
                              bad_files=True, seed=11))
    return out, truth


def check_against_truth(state: Path, truth: DemoTruth) -> None:
    assert_exactly_once(state, truth.total_valid_rows, truth.total_rejects)
    catalog = Catalog(state)
    run_id = catalog.latest_run_id()
    reasons = {f.path: f.error for f in catalog.failed_files(run_id)}
    expected = {path: prefix for path, prefix in truth.quarantined.items()}
    assert len(reasons) == len(expected) == truth.quarantined_files
    for relative, prefix in expected.items():
        reason = next(r for p, r in reasons.items() if p.endswith(relative))
        assert prefix in reason, (relative, reason)


@pytest.mark.usefixtures("ray_session")
def test_messy_feed_keeps_every_good_row_and_every_bad_row_with_its_line(
        tmp_path: Path, messy: tuple[Path, DemoTruth], capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = messy
    job = write_job(tmp_path, data, batch="max_files = 3")
    code = invoke(["run", str(job), "--state-dir", str(tmp_path / "s"), "--json", "--no-progress"])
    report = parse_json(capsys.readouterr().out)
    assert code == EXIT_PARTIAL
    assert report["rows"] == {"staged": truth.total_valid_rows, "rejected": truth.total_rejects}
    assert report["files"]["failed"] == truth.quarantined_files
    check_against_truth(tmp_path / "s", truth)
    assert invoke(["rejects", "--state-dir", str(tmp_path / "s"), "--json"]) == 0
    staged = {(Path(r["file"]).name, r["line"], r["rule"]) for r in parse_json(capsys.readouterr().out)}
    wanted = {(Path(p).name, r.line, r.rule) for p, f in truth.details.items() for r in f.kept_rejects}
    assert staged == wanted


@pytest.mark.slow
def test_messy_feed_killed_and_resumed_rejects_each_bad_row_exactly_once(
        tmp_path: Path, messy: tuple[Path, DemoTruth]) -> None:
    data, truth = messy
    job = write_job(tmp_path, data, batch="max_files = 1", execution=ON_RAY)
    state = tmp_path / "s"
    process = spawn_cli("run", job, "--state-dir", state, "--no-progress",
                        env={FAULTS_ENV: "batch_delay = 0.5"})
    try:
        wait_for(lambda: committed_batches(state) >= 3)
        kill_group(process, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        kill_group(process)
    resumed = subprocess.run([sys.executable, "-m", "batchrun", "resume", "--state-dir", str(state),
                              "--no-progress"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == EXIT_PARTIAL, resumed.stderr
    check_against_truth(state, truth)
