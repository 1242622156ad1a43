"""The unique-key index, fed while batches run, so publishing only checks candidates.

A run with unique columns starts a `KeyFeed`: one background thread that reads the key
columns of committed Parquet outputs (never the catalog, which the driver's thread owns)
into a `KeyIndex` per column (keyindex.py):

- first, the outputs of every other run the job's table serves (an earlier run's keys are
  kept apart: a rebuilding full refresh takes none of them);
- then the run's own committed outputs: those committed before (a resume: the index lives
  in memory only, so it is rebuilt from the files, exactly), then each batch as the
  scheduler commits it (`committed`).

Each file's sorted codes are also spilled to `<state dir>/unique-keys/<run>/`, so that
publishing reads back only the files that hold a candidate. `finish` waits for the
thread and checks that every output the job's table serves was indexed (a missing output
of the run is indexed then; anything else unexpected makes the feed unusable, and
unique.py falls back to checking every row).
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from loguru import logger

from batchrun import objectstore
from batchrun.catalog import Catalog
from batchrun.config import ColumnSpec
from batchrun.jobtable import JobTable, job_table
from batchrun.keyindex import Codes, KeyIndex, holding, key_codes
from batchrun.model import BatchResult, RunRecord
from batchrun.private import private_dir, private_file


@dataclass(frozen=True)
class _Output:
    path: str
    storage: dict[str, Any] | None
    other: bool = False
    earlier: bool = False


@dataclass(frozen=True)
class Candidates:
    """Per unique column: its Arrow type and the codes its duplicates may have, and the
    outputs that hold one of them."""

    types: dict[str, pa.DataType]
    codes: dict[str, Codes]
    files: set[str]
    indexed: int

    @property
    def count(self) -> int:
        return sum(c.size for c in self.codes.values())


class KeyFeed:
    def __init__(self, record: RunRecord, keys: list[str], spill: Path) -> None:
        self.record, self.keys, self.spill = record, keys, spill
        self.indexes = {key: KeyIndex() for key in keys}
        self.spilled: dict[str, dict[str, Path]] = {key: {} for key in keys}
        self.types: dict[str, pa.DataType] = {}
        self.mine: set[str] = set()
        self.others: set[str] = set()
        self.problem: str | None = None
        self._closing = False
        self.cpu_s = 0.0
        self.keys_indexed = 0
        self._queue: queue.SimpleQueue[_Output | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, daemon=True,
                                        name=f"unique-keys-{record.run_id}")

    @classmethod
    def start(cls, catalog: Catalog, record: RunRecord,
              columns: dict[str, ColumnSpec]) -> KeyFeed | None:
        """A running feed for the run, or None when it has no unique column."""
        keys = [name for name, spec in columns.items() if spec.unique]
        if not keys:
            return None
        spill = catalog.path.parent / "unique-keys" / record.run_id
        shutil.rmtree(spill, ignore_errors=True)
        private_dir(private_dir(spill.parent) / spill.name)
        feed = cls(record, keys, spill)
        seq = {run: i for i, run in enumerate(reversed(catalog.run_ids(job=record.job)))}
        for part in job_table(catalog, record).slices:
            if part.run_id != record.run_id:
                earlier = seq.get(part.run_id, -1) < seq.get(record.run_id, len(seq))
                for path in part.whole + part.filtered:
                    feed._queue.put(_Output(path, part.committed.storage, True, earlier))
        feed._mine(catalog.committed(record.run_id).outputs)
        feed._thread.start()
        return feed

    def committed(self, results: list[BatchResult]) -> None:
        """Index the outputs of these newly committed batches (in the background)."""
        self._mine([r.output_path for r in results if r.output_path])

    def _mine(self, outputs: list[str]) -> None:
        for path in outputs:
            self._queue.put(_Output(path, self.record.config.get("storage")))

    def finish(self, table: JobTable, rebuilds: bool) -> Candidates | None:
        """Wait for the thread; the candidates, or None when the index cannot be trusted."""
        self._stop()
        wanted = {p for part in table.slices if part.run_id == self.record.run_id
                  for p in part.whole + part.filtered}
        served = {p for part in table.slices if part.run_id != self.record.run_id
                  for p in part.whole + part.filtered}
        if not served <= self.others:
            self.problem = self.problem or "another run's output was not indexed"
        for path in sorted(wanted - self.mine):
            if self.problem is None:  # after a problem the index is not used: nothing to add
                self._try_index(_Output(path, self.record.config.get("storage")))
        if self.problem:
            logger.bind(run_id=self.record.run_id).warning(
                "unique keys: index not usable ({}); checking every row", self.problem)
            return None
        codes = {key: index.candidates(rebuilds) for key, index in self.indexes.items()}
        files = set().union(*(holding(self._spilled(key), codes[key]) for key in self.keys))
        return Candidates(dict(self.types), codes, files, self.keys_indexed)

    def close(self) -> None:
        """Stop the thread (skipping what it has not indexed yet) and delete the spilled
        codes."""
        self._closing = True
        self._stop()
        shutil.rmtree(self.spill, ignore_errors=True)
        with contextlib.suppress(OSError):  # another run's codes are still there
            self.spill.parent.rmdir()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _spilled(self, key: str) -> dict[str, Codes]:
        return {path: np.load(spilled, mmap_mode="r")
                for path, spilled in self.spilled[key].items()}

    def _work(self) -> None:
        started = time.thread_time()
        while (output := self._queue.get()) is not None:
            if self.problem is None and not self._closing:
                self._try_index(output)
            self.cpu_s = time.thread_time() - started
        logger.bind(run_id=self.record.run_id).info(
            "unique keys {}: indexed {:,} keys of {} file(s) in the background, {:.2f}s CPU",
            self.keys, self.keys_indexed, len(self.mine) + len(self.others), self.cpu_s)

    def _try_index(self, output: _Output) -> None:
        """Index `output`; on any failure (a key type the index does not code, an unreadable
        file), note the problem: the exact pass over every row then decides."""
        try:
            self._index(output)
        except Exception as exc:  # noqa: BLE001 (any failure: the exact pass decides)
            self.problem = f"{output.path}: {type(exc).__name__}: {exc}"

    def _index(self, output: _Output) -> None:
        columns = _read_keys(output, self.keys)
        for key in self.keys:
            column = columns.get(key)
            if column is None:
                continue
            if self.types.setdefault(key, column.type) != column.type:
                raise TypeError(f"{key} is {column.type} here, {self.types[key]} elsewhere")
            self._add(key, output, key_codes(column))
        (self.others if output.other else self.mine).add(output.path)

    def _add(self, key: str, output: _Output, codes: Codes) -> None:
        index = self.indexes[key]
        codes = (index.add_other(codes, output.earlier) if output.other
                 else index.add_mine(codes))
        self.keys_indexed += codes.size
        spilled = self.spill / f"{len(self.spilled[key])}-{self.keys.index(key)}.npy"
        with open(private_file(spilled), "wb") as out:
            np.save(out, codes)
        self.spilled[key][output.path] = spilled


def _read_keys(output: _Output, keys: list[str]) -> dict[str, pa.ChunkedArray]:
    """The key columns a committed output holds (a file without one has no such keys)."""
    if objectstore.is_object(output.path):
        system = objectstore.filesystem(objectstore.Settings.of(output.storage))
        where = objectstore.Location.of(output.path).arrow_path
        parquet = pq.ParquetFile(where, filesystem=system)
    else:
        parquet = pq.ParquetFile(output.path)
    present = [key for key in keys if key in parquet.schema_arrow.names]
    table = parquet.read(columns=present) if present else pa.table({})
    return {key: _plain(table[key]) for key in present}


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Dictionary-encoded keys as their values."""
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column
