"""Which unique keys may repeat: a sorted index of 64-bit key codes, fed batch by batch.

Every key maps to a uint64 code: an integer key is its own code (exact), any other key
its DuckDB `hash()` (two equal keys always share a code; two different keys rarely do).
The index only proposes *candidates*: a code seen twice within the run, or seen in what
the job's table serves from other runs. A collision makes a key a candidate it need not
be, never the other way round, so the exact SQL of unique.py, run over the candidates
only, decides exactly what the run-wide pass decided over every row.

`SortedLevels` is a log-structured set: each batch's sorted codes become a level, and
levels of like size merge like a binary counter, so a batch costs O(b log n) to check
and the merges O(n log(n/b)) over a run. numpy's sorts and searches release the GIL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Codes = np.ndarray
"""A 1-d uint64 array of key codes."""
NO_CODES = np.empty(0, np.uint64)


class UnsupportedKey(Exception):
    """A key type the index does not code: the run-wide pass decides for that run."""


def is_hashed(arrow: pa.DataType) -> bool:
    """Whether keys of this type are coded by hash (strings) rather than by value."""
    return pa.types.is_string(arrow) or pa.types.is_large_string(arrow)


def key_codes(column: pa.ChunkedArray | pa.Array) -> Codes:
    """The codes of a column's non-null keys, in any order."""
    values = column.drop_null()
    if pa.types.is_integer(values.type):
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks() if values.num_chunks else pa.array([], values.type)
        signed = pc.cast(values, pa.int64() if pa.types.is_signed_integer(values.type)
                         else pa.uint64())
        return np.asarray(signed.to_numpy(zero_copy_only=False)).view(np.uint64)
    if is_hashed(values.type):
        return _duckdb_hashes(values)
    raise UnsupportedKey(str(values.type))


def _duckdb_hashes(values: pa.ChunkedArray | pa.Array) -> Codes:
    """DuckDB's `hash()` of each value: the same function unique.py's SQL filters with."""
    with duckdb.connect() as db:
        db.register("__batchrun_keys", pa.table({"v": values}))
        found = db.sql("SELECT hash(v) AS h FROM __batchrun_keys").to_arrow_table()["h"]
    return np.asarray(found.to_numpy()).astype(np.uint64, copy=False)


def sorted_codes(codes: Codes) -> Codes:
    return np.sort(codes, kind="quicksort")


def repeated_within(codes: Codes) -> Codes:
    """The codes a sorted array holds more than once."""
    if codes.size < 2:
        return NO_CODES
    return np.unique(codes[1:][codes[1:] == codes[:-1]])


class SortedLevels:
    """A set of codes as sorted arrays, largest first, no two of like size."""

    def __init__(self) -> None:
        self.levels: list[Codes] = []

    def __len__(self) -> int:
        return sum(level.size for level in self.levels)

    def contains(self, codes: Codes) -> np.ndarray:
        """For each of the (sorted) codes, whether the set holds it."""
        found = np.zeros(codes.size, dtype=bool)
        if not codes.size:
            return found
        for level in self.levels:
            start, end = np.searchsorted(level, [codes[0], codes[-1]], side="left")
            near = level[start:end + 1]  # the only codes that can match: keys cluster
            if near.size:
                at = np.minimum(np.searchsorted(near, codes), near.size - 1)
                found |= near[at] == codes
        return found

    def add(self, codes: Codes) -> None:
        """Add sorted codes as a level; merge the smallest levels while the last is no
        smaller than half the one before it."""
        if not codes.size:
            return
        self.levels.append(codes)
        while len(self.levels) > 1 and 2 * self.levels[-1].size >= self.levels[-2].size:
            last, before = self.levels.pop(), self.levels.pop()
            self.levels.append(np.sort(np.concatenate([before, last]), kind="stable"))


class PartitionedLevels:
    """`SortedLevels` per range of the code space (its top bits): evenly spread codes
    (hashes) are searched and merged in cache-sized arrays; clustered ones (integer ids)
    mostly share one range, where `SortedLevels` narrows each search to their range."""

    BITS = 6

    def __init__(self) -> None:
        self.parts = [SortedLevels() for _ in range(1 << self.BITS)]
        self.bounds = np.arange(1, 1 << self.BITS, dtype=np.uint64) << np.uint64(64 - self.BITS)

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def _slices(self, codes: Codes) -> list[tuple[SortedLevels, slice]]:
        cuts = [0, *np.searchsorted(codes, self.bounds).tolist(), codes.size]
        return [(part, slice(cuts[i], cuts[i + 1])) for i, part in enumerate(self.parts)
                if cuts[i + 1] > cuts[i]]

    def contains(self, codes: Codes) -> np.ndarray:
        """For each of the (sorted) codes, whether the set holds it."""
        found = np.zeros(codes.size, dtype=bool)
        for part, where in self._slices(codes):
            found[where] = part.contains(codes[where])
        return found

    def add(self, codes: Codes) -> None:
        """Add sorted codes."""
        for part, where in self._slices(codes):
            part.add(codes[where])


@dataclass
class KeyIndex:
    """One unique column's codes: the run's own, and those other runs serve (`earlier`
    runs apart, since a rebuilding full refresh takes no key from them), with the codes
    that hit each."""

    mine: PartitionedLevels = field(default_factory=PartitionedLevels)
    earlier: PartitionedLevels = field(default_factory=PartitionedLevels)
    later: PartitionedLevels = field(default_factory=PartitionedLevels)
    hits: list[Codes] = field(default_factory=list)
    """Codes seen twice in the run, or served by a later run."""
    earlier_hits: list[Codes] = field(default_factory=list)
    """Codes of the run that an earlier run serves."""

    def add_other(self, codes: Codes, earlier: bool) -> Codes:
        """Add another run's codes; return them sorted."""
        codes = sorted_codes(codes)
        (self.earlier if earlier else self.later).add(codes)
        return codes

    def add_mine(self, codes: Codes) -> Codes:
        """Check a batch's codes against the index, then add them; return them sorted."""
        codes = sorted_codes(codes)
        for found in (repeated_within(codes), codes[self.mine.contains(codes)],
                      codes[self.later.contains(codes)]):
            if found.size:
                self.hits.append(found)
        taken = codes[self.earlier.contains(codes)]
        if taken.size:
            self.earlier_hits.append(taken)
        self.mine.add(codes)
        return codes

    def candidates(self, rebuilds: bool) -> Codes:
        """Every code a duplicate of the run may have (a superset)."""
        found = self.hits + ([] if rebuilds else self.earlier_hits)
        return np.unique(np.concatenate(found)) if found else NO_CODES


def holding(files: dict[str, Codes], candidates: Codes) -> set[str]:
    """The files whose (sorted) codes hold at least one candidate."""
    chosen = set()
    for path, codes in files.items():
        if codes.size and candidates.size:
            at = np.minimum(np.searchsorted(codes, candidates), codes.size - 1)
            if np.any(codes[at] == candidates):
                chosen.add(path)
    return chosen


CodeFunction = Callable[[pa.ChunkedArray], Codes]
