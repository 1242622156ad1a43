"""The state dir a job's hints carry must work when pasted in another directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrun.cli.options import hint, invocation, job_state_dir, resolve_state_dir


def test_a_job_below_the_current_directory_has_its_state_dir_hinted_absolute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As cron runs `batchrun run jobs/nightly.toml` in $HOME: the morning's paste of the
    mail's hint happens elsewhere."""
    (tmp_path / "jobs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(invocation, "prog", "batchrun")
    monkeypatch.setitem(invocation, "state_dir", None)
    state = resolve_state_dir(None, "jobs/nightly.toml")
    assert state == tmp_path.resolve() / "jobs" / ".batchrun"
    assert hint("resume", "r1") == f"batchrun resume r1 --state-dir {state}"


def test_a_job_in_the_current_directory_keeps_the_default_state_dir_and_short_hints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(invocation, "prog", "batchrun")
    monkeypatch.setitem(invocation, "state_dir", None)
    assert job_state_dir("nightly.toml") == Path(".batchrun")
    assert resolve_state_dir(None, tmp_path / "nightly.toml") == Path(".batchrun")
    assert hint("resume", "r1") == "batchrun resume r1"
