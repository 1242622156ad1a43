"""`batchrun clean` refuses bad input with one line, and never creates a state dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrun.cli import EXIT_USAGE, invoke


def test_an_age_that_is_not_one_is_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(["clean", "--older-than", "soon", "--state-dir", str(tmp_path)]) == EXIT_USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--older-than" in lines[0] and "'soon'" in lines[0]


def test_clean_of_a_missing_state_dir_says_so_and_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    assert invoke(["clean", "--keep", "1", "--state-dir", str(missing)]) == EXIT_USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0]
    assert not missing.exists()
