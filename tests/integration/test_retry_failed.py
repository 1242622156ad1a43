"""`batchrun retry-failed`: a supplier re-sends a quarantined file; only it is staged again."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from batchrun import logs
from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from batchrun.tools.demo import DemoTruth
from tests.conftest import assert_exactly_once, write_job

HEADER = ('"order_id","supplier_id","sku","quantity","unit_price","currency","order_ts",'
          '"warehouse","status","notes"\n')
RESENT_ROWS = 40


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchrun", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def resent_file() -> bytes:
    """A good gzipped supplier file of RESENT_ROWS rows, order ids beyond the demo's."""
    rows = "".join(f'{9_000_000 + i},"SUP-099","SKU-{i:06d}",1,1.00,"USD",2025-03-26 19:39:13,'
                   f'"WH-01","shipped",\n' for i in range(RESENT_ROWS))
    return gzip.compress((HEADER + rows).encode())


@pytest.fixture
def quarantined_run(tmp_path: Path, demo_data: tuple[Path, DemoTruth]
                    ) -> tuple[Path, Path, DemoTruth]:
    """A run of the demo data plus one truncated gzip (quarantined for its content)."""
    data, truth = demo_data
    feed = tmp_path / "feed"
    shutil.copytree(data, feed)
    (feed / "supplier_99").mkdir()
    (feed / "supplier_99" / "orders_0000.csv.gz").write_bytes(resent_file()[:60])
    state = tmp_path / "state"
    first = cli("run", write_job(tmp_path, feed, batch="max_files = 4"), "--state-dir", state,
                "--no-progress")
    assert first.returncode == EXIT_PARTIAL, first.stderr
    return feed, state, truth


def test_retry_failed_stages_a_resent_file_once_and_the_run_succeeds(
        quarantined_run: tuple[Path, Path, DemoTruth]) -> None:
    feed, state, truth = quarantined_run
    run_id = Catalog(state).latest_run_id()
    resumed = cli("resume", "--state-dir", state, "--no-progress")
    assert resumed.returncode == EXIT_PARTIAL
    assert f"retry-failed {run_id} --state-dir {state}" in resumed.stderr
    log = logs.run_log_path(state, run_id).read_text()
    assert "no batch to dispatch: Ray not started" in log
    (feed / "supplier_99" / "orders_0000.csv.gz").write_bytes(resent_file())
    retried = cli("retry-failed", "--state-dir", state, "--no-progress")
    assert retried.returncode == EXIT_OK, retried.stderr
    catalog = Catalog(state)
    assert catalog.run(run_id).state.value == "succeeded" and catalog.run_ids() == [run_id]
    assert not catalog.quarantined_files(run_id)
    assert_exactly_once(state, truth.total_rows + RESENT_ROWS)
    again = cli("retry-failed", run_id, "--state-dir", state)
    assert again.returncode == EXIT_OK and "nothing to retry" in again.stderr


def test_retry_failed_of_an_unknown_run_is_one_line_and_exit_2(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "catalog.sqlite").touch()
    unknown = cli("retry-failed", "nope", "--state-dir", state)
    assert unknown.returncode == EXIT_USAGE
    assert unknown.stderr.strip().startswith("error: no run 'nope'")
    assert len(unknown.stderr.strip().splitlines()) == 1
