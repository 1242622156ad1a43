"""The progress display's numbers, the hints' quoting and `batchrun logs`' records, without Ray
(the runs themselves: tests/integration/test_operator_output.py)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

from batchrun.cli.logs_command import _batch_of, _lines, _records
from batchrun.cli.options import hint, invocation, invoked_program
from batchrun.cli.progress import PlainView, Tally, duration_text, progress_view
from batchrun.promfile import RunSample, render


def test_the_tally_adds_up_events_and_rates_count_only_this_process_work() -> None:
    tally = Tally(files_total=10, bytes_total=10_000_000, files=4, bytes=4_000_000)
    tally.add({"committed": 2, "files": 2, "bytes": 2_000_000, "rows": 900, "rejected": 100,
               "quarantined": 1, "in_flight": [2, 1]})
    tally.began = tally.began - 2.0  # type: ignore[operator]  # two seconds in
    mb_per_s, rows_per_s = tally.rates()
    assert (tally.files, tally.bytes, tally.quarantined) == (6, 6_000_000, 1)
    assert mb_per_s == pytest.approx(1.0, rel=0.05) and rows_per_s == pytest.approx(500, rel=0.05)
    assert tally.eta() == pytest.approx(4.0, rel=0.05)
    assert "in flight 3 (2+1 per worker)" in tally.parts()


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (90, "1m30s"), (3700, "1h01m")])
def test_durations_read_like_a_clock(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_without_a_terminal_notes_wait_for_the_first_batch_and_stay_plain_text() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=False, soft_wrap=True)
    view = progress_view(console, "job: planning files and starting Ray...", show=None,
                         quiet=False, interval=3600)
    assert isinstance(view, PlainView)
    with view:
        view({"stage": "planned", "run_id": "r1", "files": 2, "bytes": 10, "batches": 1})
        assert stream.getvalue() == ""  # a run failing here prints only its error line
        view({"stage": "running", "committed": 1, "files": 2, "bytes": 10, "in_flight": [0]})
    assert stream.getvalue().splitlines() == [
        "job: planning files and starting Ray...", "planned 2 file(s), 0.0 MB, in 1 batch(es)"]


def test_a_hint_quotes_its_words_and_names_a_state_dir_that_is_not_the_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(invocation, "prog", "'/opt/my tools/batchrun'")
    monkeypatch.setitem(invocation, "state_dir", Path("night state"))
    assert hint("resume", "r1") == "'/opt/my tools/batchrun' resume r1 --state-dir 'night state'"
    monkeypatch.setitem(invocation, "state_dir", Path(".batchrun"))
    assert hint("resume", "r1") == "'/opt/my tools/batchrun' resume r1"


def test_python_dash_m_is_named_with_the_interpreter_as_typed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/x/batchrun/__main__.py", "run"])
    monkeypatch.setattr(sys, "orig_argv", ["./my env/bin/python", "-m", "batchrun", "run"])
    assert invoked_program() == "'./my env/bin/python' -m batchrun"


def test_logs_groups_a_traceback_with_its_line_and_finds_each_records_batch() -> None:
    text = ("2026-01-01 00:00:00.000 | ERROR   | run=r batch=b1 | failed\nTraceback (most"
            " recent call last):\n  File x\n2026-01-01 00:00:01.000 | INFO    | run=r batch=-"
            " file=/a b.csv | next\n{\"batch_id\": \"b2\", \"message\": \"m\"}\n")
    records = list(_records(_lines(io.StringIO(text), follow=False, active=lambda: False)))
    assert len(records) == 3 and records[0].count("\n") == 3
    assert [_batch_of(r) for r in records] == ["b1", "-", "b2"]


def test_a_textfile_escapes_its_labels() -> None:
    text = render(RunSample(job='a"b\\c', exit_code=1, run_id="r1", state="failed"))
    assert 'batchrun_exit_code{job="a\\"b\\\\c"} 1' in text
    assert "batchrun_last_success_timestamp_seconds" not in text  # never succeeded: absent
