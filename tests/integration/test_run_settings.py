"""A run's settings and its catalog: resolved once, opened once, and a resume honours or
refuses every override it is given. Real Ray, real runs, rows checked against the truth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, invoke
from batchrun.execution import start
from batchrun.execution.settings import ExecutionSettings
from batchrun.model import RunState
from batchrun.tools.demo import DemoSpec, DemoTruth, generate
from batchrun.tools.faults import FAULTS_ENV
from tests.conftest import assert_exactly_once, parse_json, write_job

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoTruth]:
    """4 small supplier files (2 suppliers), every row valid."""
    out = tmp_path_factory.mktemp("settings-data")
    return out, generate(DemoSpec(out_dir=out, suppliers=2, files_per_supplier=2,
                                  file_bytes=20_000, seed=5))


class Opened:
    """Counts catalog opens and closes, and the settings each run resolves."""

    def __init__(self) -> None:
        self.opens = self.closes = 0
        self.settings: list[ExecutionSettings] = []

    def reset(self) -> None:
        self.opens = self.closes = 0
        self.settings.clear()


@pytest.fixture()
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[Opened]:
    seen = Opened()
    original_init, original_close = Catalog.__init__, Catalog.close
    original_resolve = start.resolve_settings

    def counting_init(self: Catalog, *args: Any, **kwargs: Any) -> None:
        seen.opens += 1
        original_init(self, *args, **kwargs)

    def counting_close(self: Catalog) -> None:
        seen.closes += 1
        original_close(self)

    def recording_resolve(*args: Any, **kwargs: Any) -> ExecutionSettings:
        seen.settings.append(original_resolve(*args, **kwargs))
        return seen.settings[-1]

    monkeypatch.setattr(Catalog, "__init__", counting_init)
    monkeypatch.setattr(Catalog, "close", counting_close)
    monkeypatch.setattr(start, "resolve_settings", recording_resolve)
    yield seen


def failed_run(tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A run whose supplier_01 batches fail (an injected endpoint outage), no retries."""
    job = write_job(tmp_path, data, execution="workers = 2\nmax_retries = 0")
    monkeypatch.setenv(FAULTS_ENV, 'fail_paths = ["supplier_01"]')
    code = invoke(["run", str(job), "--state-dir", str(tmp_path / "state"), "--json",
                   "--no-progress"])
    monkeypatch.delenv(FAULTS_ENV)
    assert code == EXIT_PARTIAL
    with Catalog(tmp_path / "state") as catalog:
        return catalog.latest_run_id()


def test_a_run_opens_the_catalog_once_closes_it_and_resolves_its_settings_once(
        tmp_path: Path, small_data: tuple[Path, DemoTruth], opened: Opened,
        capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = small_data
    job = write_job(tmp_path, data, execution="workers = 2\nmode = \"sequential\"")
    code = invoke(["run", str(job), "--state-dir", str(tmp_path / "state"), "--json",
                   "--no-progress"])
    assert code == EXIT_OK
    assert (opened.opens, opened.closes) == (1, 1)
    assert len(opened.settings) == 1
    assert opened.settings[0].sequential and opened.settings[0].workers == 1
    assert parse_json(capsys.readouterr().out)["rows"]["staged"] == truth.total_rows
    assert_exactly_once(tmp_path / "state", truth.total_rows)


@pytest.mark.parametrize("command", [["status"], ["runs"], ["report"], ["verify"],
                                     ["query", "SELECT count(*) FROM orders"], ["rejects"]])
def test_every_read_command_opens_the_catalog_once_and_closes_it(
        tmp_path_factory: pytest.TempPathFactory, small_data: tuple[Path, DemoTruth],
        command: list[str], opened: Opened, capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = small_data
    folder = tmp_path_factory.mktemp("read")
    state = folder / "state"
    job = write_job(folder, data)
    assert invoke(["run", str(job), "--state-dir", str(state), "--no-progress"]) == EXIT_OK
    opened.reset()
    assert invoke([*command, "--state-dir", str(state)]) == EXIT_OK
    assert (opened.opens, opened.closes) == (1, 1)
    if command[0] == "query":
        assert f"{truth.total_rows}" in capsys.readouterr().out


def test_a_resume_opens_the_catalog_once_and_runs_with_its_execution_overrides(
        tmp_path: Path, small_data: tuple[Path, DemoTruth], opened: Opened,
        monkeypatch: pytest.MonkeyPatch) -> None:
    data, truth = small_data
    run_id = failed_run(tmp_path, data, monkeypatch)
    opened.reset()
    code = invoke(["resume", run_id, "--state-dir", str(tmp_path / "state"), "--no-progress",
                   "--workers", "1", "--max-in-flight", "3",
                   "--set", "execution.max_retries=2", "--set", "execution.batch_timeout=90"])
    assert code == EXIT_OK
    assert (opened.opens, opened.closes) == (1, 1)
    [settings] = opened.settings
    assert (settings.workers, settings.max_in_flight) == (1, 3)
    assert (settings.max_retries, settings.batch_timeout) == (2, 90.0)
    assert assert_exactly_once(tmp_path / "state", truth.total_rows) == run_id


def test_resume_refuses_a_batch_size_override_and_keeps_the_planned_batches(
        tmp_path: Path, small_data: tuple[Path, DemoTruth], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = small_data
    run_id = failed_run(tmp_path, data, monkeypatch)
    state = tmp_path / "state"
    with Catalog(state) as catalog:
        planned = [b["batch_id"] for b in catalog.batches(run_id)]
    capsys.readouterr()
    for target in ([run_id], []):  # by id, and the latest unfinished run
        code = invoke(["resume", *target, "--state-dir", str(state), "--no-progress",
                       "--set", "batch.max_files=1"])
        assert code == EXIT_USAGE
        message = capsys.readouterr().err.strip()
        assert message.count("\n") == 0
        assert "batch.max_files" in message and "cannot change on resume" in message
    with Catalog(state) as catalog:
        assert catalog.run(run_id).state is RunState.FAILED  # nothing was started
    assert invoke(["resume", "--state-dir", str(state), "--no-progress"]) == EXIT_OK
    # with nothing left to resume, the key is still refused, not silently dropped
    assert invoke(["resume", "--state-dir", str(state), "--no-progress",
                   "--set", "batch.max_files=1"]) == EXIT_USAGE
    assert "batch.max_files: cannot change on resume" in capsys.readouterr().err
    with Catalog(state) as catalog:
        assert [b["batch_id"] for b in catalog.batches(run_id)] == planned
        assert len(planned) < len(truth.files)  # max_files = 1 would have cut one per file
    assert assert_exactly_once(state, truth.total_rows) == run_id
