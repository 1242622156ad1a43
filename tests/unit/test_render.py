"""What the CLI prints for status details: user text is text, never rich markup."""

from __future__ import annotations

import pytest

from batchrun.cli.render import _render_detail, _render_status
from batchrun.model import BatchNote, BatchState, ErrorKind, FailedFile, RunCounts, RunState
from batchrun.report import RunStatus, StatusDetail


def test_brackets_in_paths_and_errors_and_the_error_kind_are_printed_as_written(
        capsys: pytest.CaptureFixture[str]) -> None:
    detail = StatusDetail(
        failed_files=(FailedFile(path="in/data[1].csv", batch_id="b1", error="bad [bold]x"),),
        retried_batches=(BatchNote("b2", BatchState.COMMITTED, 2, "worker died", ErrorKind.TRANSIENT),))
    _render_detail(detail)
    printed = capsys.readouterr().out
    assert "in/data[1].csv: bad [bold]x" in printed
    assert "worker died [transient]" in printed


def _status(state: RunState, staging_dir: str) -> RunStatus:
    return RunStatus(run_id="r1", job="j", table="t", state=state, counts=RunCounts(),
                     started_at=None, finished_at=None, duration_s=None, pid=None, host=None,
                     job_file="j.toml", staging_dir=staging_dir, message=None)


def test_status_text_prints_the_state_as_a_word_and_brackets_in_paths_as_written(
        capsys: pytest.CaptureFixture[str]) -> None:
    _render_status(_status(RunState.SUCCEEDED, "out/[bold]stg"))
    printed = capsys.readouterr().out
    assert "[green]" not in printed
    assert "succeeded" in printed
    assert "out/[bold]stg" in printed
