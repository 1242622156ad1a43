"""What the CLI prints for status details: user text is text, never rich markup."""

from __future__ import annotations

import pytest

from batchrun.cli.render import _render_detail
from batchrun.model import BatchNote, BatchState, ErrorKind, FailedFile
from batchrun.report import StatusDetail


def test_brackets_in_paths_and_errors_and_the_error_kind_are_printed_as_written(
        capsys: pytest.CaptureFixture[str]) -> None:
    detail = StatusDetail(
        failed_files=(FailedFile(path="in/data[1].csv", batch_id="b1", error="bad [bold]x"),),
        retried_batches=(BatchNote("b2", BatchState.COMMITTED, 2, "worker died", ErrorKind.TRANSIENT),))
    _render_detail(detail)
    printed = capsys.readouterr().out
    assert "in/data[1].csv: bad [bold]x" in printed
    assert "worker died [transient]" in printed
