"""A new path holding a served file's bytes (a rename, a re-sent copy) counts as
unchanged only while that version stays served: when the run stages the original path
again (changed), the copy's rows would otherwise be lost from the job's table."""

from __future__ import annotations

import os
from pathlib import Path

from batchrun.config import load_job
from batchrun.layout import file_checksum
from batchrun.manifest import CHANGED, NEW, UNCHANGED, History, select_files
from batchrun.model import Fingerprint, ServedFile

NOW = 2_000_000_000.0


def job_over(tmp_path: Path) -> Path:
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nname = "j"\ntable = "t"\n[source]\npaths = ["{tmp_path}/in/*.csv"]\n'
                   '[staging]\ndir = "staging"\n[schema.columns]\nid = { type = "int64" }\n')
    return job


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    os.utime(path, (NOW - 3600, NOW - 3600))
    return path


def served(path: Path, text: str) -> ServedFile:
    """`path` as a run staged it with `text` (its size, an older mtime, its checksum)."""
    scratch = write(path.parent.parent / "scratch", text)
    return ServedFile(str(path), "run-1", "b1", Fingerprint(len(text), 1), "/out.parquet",
                      1, 0, file_checksum(str(scratch)))


def kinds(tmp_path: Path, history: History) -> dict[str, str]:
    selection = select_files(load_job(job_over(tmp_path)), tmp_path / "state", history, NOW)
    return {Path(p).name: kind for kind, paths in selection.paths.items() for p in paths}


def test_a_copy_of_a_served_file_is_unchanged_while_the_original_stays_served(
        tmp_path: Path) -> None:
    original = write(tmp_path / "in" / "a.csv", "id\n1\n")
    write(tmp_path / "in" / "copy.csv", "id\n1\n")
    history = History({str(original): served(original, "id\n1\n")})
    assert kinds(tmp_path, history) == {"a.csv": UNCHANGED, "copy.csv": UNCHANGED}


def test_a_copy_of_a_served_version_its_original_replaces_tonight_is_new(tmp_path: Path) -> None:
    original = write(tmp_path / "in" / "a.csv", "id\n2\n")  # changed since it was staged
    write(tmp_path / "in" / "copy.csv", "id\n1\n")  # the bytes the table served as a.csv
    history = History({str(original): served(original, "id\n1\n")})
    assert kinds(tmp_path, history) == {"a.csv": CHANGED, "copy.csv": NEW}


def test_a_copy_stays_unchanged_while_another_served_path_holds_its_bytes(
        tmp_path: Path) -> None:
    changed, kept = write(tmp_path / "in" / "a.csv", "id\n2\n"), tmp_path / "in" / "b.csv"
    write(kept, "id\n1\n")
    write(tmp_path / "in" / "copy.csv", "id\n1\n")
    history = History({str(changed): served(changed, "id\n1\n"), str(kept): served(kept, "id\n1\n")})
    assert kinds(tmp_path, history) == {"a.csv": CHANGED, "b.csv": UNCHANGED,
                                        "copy.csv": UNCHANGED}
