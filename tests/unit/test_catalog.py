"""The catalog opened by several processes at once: the first open of a new (or older)
catalog creates its tables and adds missing columns while others may be opening it too."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from pathlib import Path

from batchrun.catalog import _MIGRATIONS, Catalog

OPEN_AT = """
import sys, time
from batchrun.catalog import Catalog
start = float(sys.argv[2])
while time.time() < start:
    pass
Catalog(sys.argv[1]).close()
"""


def test_many_processes_opening_a_new_catalog_at_once_all_succeed(tmp_path: Path) -> None:
    import time

    state = tmp_path / "state"
    start = str(time.time() + 3.0)  # every process is imported and spinning by then
    opened = [subprocess.Popen([sys.executable, "-c", OPEN_AT, str(state), start],
                               stderr=subprocess.PIPE, text=True) for _ in range(8)]
    failures = [p.communicate(timeout=120)[1] for p in opened if p.wait(timeout=120) != 0]
    assert failures == []
    catalog = Catalog(state)
    columns = {row["name"] for row in catalog.rows("PRAGMA table_info(files)")}
    assert {column for table, column, _ in _MIGRATIONS if table == "files"} <= columns


def test_a_transaction_begun_by_a_second_thread_waits_for_the_first_instead_of_joining_it(
        tmp_path: Path) -> None:
    """The planning thread and the main thread share one connection: a write of one
    thread must never ride in (and roll back with) the other thread's transaction."""
    with Catalog(tmp_path) as catalog:
        with catalog.transaction() as db:
            db.execute("CREATE TABLE probe (who TEXT)")
        second_done = threading.Event()

        def second() -> None:
            with catalog.transaction() as db:
                db.execute("INSERT INTO probe VALUES ('second')")
            second_done.set()

        thread = threading.Thread(target=second)
        with contextlib.suppress(RuntimeError), catalog.transaction() as db:
            db.execute("INSERT INTO probe VALUES ('first')")
            thread.start()
            second_done.wait(0.5)
            raise RuntimeError("the first transaction fails and rolls back")
        thread.join()
        assert catalog.rows("SELECT who FROM probe") == [{"who": "second"}]
