"""Incremental planning without Ray: how a matched file is classified against the version
the job's table serves, the read-only catalog `batchrun plan` uses, and bad `settle`."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_USAGE, invoke
from batchrun.identity import ETAG
from batchrun.layout import file_checksum
from batchrun.manifest import CHANGED, NEW, SETTLING, UNCHANGED, History, classify
from batchrun.model import Fingerprint, PlannedFile, ServedFile
from tests.unit.history import write_history

NOW = 2_000_000_000.0


def on_disk(path: Path, text: str, mtime: float = NOW - 3600) -> PlannedFile:
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    stat = path.stat()
    return PlannedFile(str(path), stat.st_size, stat.st_mtime, "a", mtime_ns=stat.st_mtime_ns)


def served_as(planned: PlannedFile, checksum: str | None = None, **changes: int) -> History:
    was = Fingerprint(changes.get("size", planned.size), changes.get("mtime_ns", planned.mtime_ns))
    return History({planned.path: ServedFile(planned.path, "run-1", "b1", was, "/out.parquet",
                                             1, 0, checksum)})


def test_a_file_is_new_unchanged_or_changed_by_its_size_and_mtime(tmp_path: Path) -> None:
    planned = on_disk(tmp_path / "f.csv", "id\n1\n")
    assert classify(planned, History(), None) == (NEW, None)
    assert classify(planned, served_as(planned), None) == (UNCHANGED, None)
    assert classify(planned, served_as(planned, size=3), None) == (CHANGED, None)


def test_a_touched_file_is_compared_by_content_and_its_checksum_kept(tmp_path: Path) -> None:
    planned = on_disk(tmp_path / "f.csv", "id\n1\n")
    same = served_as(planned, file_checksum(planned.path), mtime_ns=1)
    kind, verified = classify(planned, same, None)
    assert kind == UNCHANGED
    assert verified == (planned.path, planned.size, planned.mtime_ns, file_checksum(planned.path))
    rewritten = served_as(planned, file_checksum(planned.path), mtime_ns=1)
    planned = on_disk(tmp_path / "f.csv", "id\n2\n")  # same size, other bytes
    assert classify(planned, rewritten, None)[0] == CHANGED
    assert classify(planned, served_as(planned, None, mtime_ns=1), None) == (CHANGED, None)


def test_a_kept_checksum_spares_reading_the_touched_file_again(tmp_path: Path) -> None:
    planned = on_disk(tmp_path / "f.csv", "id\n1\n")
    checksum = file_checksum(planned.path)
    history = served_as(planned, checksum, mtime_ns=1)
    os.unlink(planned.path)  # read now, it would count as changed
    assert classify(planned, history, None) == (CHANGED, None)
    kept = History(history.served, {planned.path: (planned.size, planned.mtime_ns or 0, checksum)})
    assert classify(planned, kept, None) == (UNCHANGED, None)


def test_an_object_is_unchanged_while_its_size_and_etag_are() -> None:
    planned = PlannedFile("s3://b/k.csv", 10, NOW, "a", sha256=f"{ETAG}abc")
    served = ServedFile(planned.path, "r", "b", Fingerprint(10, sha256=f"{ETAG}abc"), None, 1, 0)
    assert classify(planned, History({planned.path: served}), None)[0] == UNCHANGED
    moved = PlannedFile("s3://b/k.csv", 10, NOW, "a", sha256=f"{ETAG}def")
    assert classify(moved, History({planned.path: served}), None)[0] == CHANGED


def test_a_recent_file_settles_unless_it_is_the_served_version(tmp_path: Path) -> None:
    planned = on_disk(tmp_path / "f.csv", "id\n1\n", mtime=NOW - 2)
    assert classify(planned, History(), NOW - 5) == (SETTLING, None)
    assert classify(planned, History(), NOW - 1) == (NEW, None)
    assert classify(planned, served_as(planned), NOW - 5) == (UNCHANGED, None)
    assert classify(planned, served_as(planned, size=1), NOW - 5) == (SETTLING, None)


def test_the_read_only_catalog_migrates_an_old_catalog_in_memory_and_writes_nothing(
        tmp_path: Path) -> None:
    write_history(tmp_path).close()
    with sqlite3.connect(tmp_path / "catalog.sqlite") as db:  # as a batchrun before this one
        db.execute("ALTER TABLE files DROP COLUMN checksum")
        db.execute("DROP TABLE manifest")
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with Catalog(tmp_path, read_only=True) as catalog:
        served = catalog.served_files("orders_job")
        assert served and all(s.checksum is None for s in served)
        assert catalog.verified_checksums("orders_job") == {}
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_settle_that_is_not_a_duration_is_one_line_and_exit_2(
        command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "j"\ntable = "t"\n[source]\npaths = ["*.csv"]\n'
                   'settle = "soon"\n')
    assert invoke([command, str(job), "--state-dir", str(tmp_path / "state")]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "source.settle" in error and "'soon'" in error
    assert not (tmp_path / "state").exists()
