"""Deterministic generator of a seed-shaped "supplier orders" demo data set.

Layout written under ``out_dir``::

    supplier_00/orders_0000.csv
    supplier_00/orders_0001.csv.gz      # every ``gzip_every``-th file (global index)
    ...
    supplier_19/orders_0004.csv
    supplier_07/noisy.csv               # only with bad_files=True (see "Messy mode")
    _truth.json                         # DemoTruth: rows per file, totals, id range, rejects

Every data file has a header row and these columns, in order:

============  ==========================================================
order_id      int64, globally unique, consecutive across files taken in
              sorted relative-path order, starting at 1
supplier_id   ``SUP-007`` (same number as the ``supplier_07`` folder)
sku           ``SKU-`` + 6 digits (leading zeros kept), from a fixed catalogue
quantity      int 1..500, skewed towards small orders
unit_price    decimal with exactly 2 decimals, 0.50..999.99
currency      USD, EUR, GBP or JPY
order_ts      ``YYYY-MM-DD HH:MM:SS`` within 2025, ascending inside a file
warehouse     ``WH-01`` .. ``WH-12``
status        new, shipped, cancelled or returned
notes         free text, often with commas and double quotes
              (``fragile, "handle with care"``), empty for about a third of
              rows; a ``quoted_newline_rate`` fraction of rows carry an
              embedded ``\\n`` inside the quoted field
============  ==========================================================

Files are written by ``pyarrow.csv.write_csv``: RFC-4180 output, ``\\n`` line ends.
Arrow quotes *every* string value and the header names (not only values that
contain commas, quotes or newlines); numbers, decimals and timestamps are
unquoted; inner quotes are doubled; empty notes are empty (null) fields.

``file_bytes`` is the target size of the *uncompressed* CSV text, so a
``.csv.gz`` file holds the same number of rows as a plain file of the same
spec and is much smaller on disk.

Generation is vectorised (numpy + pyarrow compute, one loop step per file,
files spread over a few threads) and deterministic: the same spec gives
byte-identical files.  Each file draws from its own
``SeedSequence(seed, spawn_key=(global_index + 1,))`` stream, so thread
scheduling cannot change the output, and a file's content does not depend on
how many files come before it (only its order ids and row count do).

Messy mode
----------

Two spec fields inject known faults; the clean data set (both off) is unchanged.

``bad_row_rate``
    In every ``orders_*`` file, exactly ``round(bad_row_rate * rows)`` rows (picked at
    random) each get ONE fault from :data:`FAULTS`, assigned in turn starting at a random
    offset.  Every fault breaks exactly one rule of ``configs/demo.toml``, so the reject
    batchrun records is known: the rule, its column, and the row's physical start line.
    A column that receives a text fault (``quantity`` ``"ten"``, ...) is written as quoted
    strings in that file (``"12"``); that is still a valid value.  The ``ragged_row``
    fault writes the row without its last three columns (7 fields instead of 10).
    Bad rows keep (consume) their order id, so valid rows still have unique ids.
    Keep the rate below :data:`DEMO_MAX_REJECT_RATIO`, or whole files are quarantined
    (the truth says so when that happens).

``bad_files``
    Adds one extra file of each kind in :data:`BAD_FILE_KINDS` (``empty.csv``,
    ``binary.csv``, ``truncated.csv.gz``, ``semicolon.csv``, ``latin1.csv``,
    ``noisy.csv``, ``header_only.csv``), each in a supplier folder chosen from the seed.
    Their rows take order ids after every ``orders_*`` file.  ``header_only.csv`` is not
    an error (it commits 0 rows); ``noisy.csv`` has ``NOISY_BAD_ROW_RATE`` bad rows and is
    quarantined for its reject ratio; the others cannot be read at all.

The truth (``_truth.json`` / :class:`DemoTruth`) describes what batchrun must do with
every file under the demo job's rules; see :class:`DemoTruth` and :class:`FileTruth`.
"""

from __future__ import annotations

import gzip as gzip_lib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from batchrun.layout import write_text_atomically

__all__ = [
    "BAD_FILE_KINDS",
    "COLUMNS",
    "DEMO_MAX_REJECT_RATIO",
    "FAULTS",
    "NOISY_BAD_ROW_RATE",
    "TRUTH_FILE",
    "DemoSpec",
    "DemoTruth",
    "Fault",
    "FileTruth",
    "RejectTruth",
    "generate",
    "load_truth",
]

TRUTH_FILE = "_truth.json"
COLUMNS: tuple[str, ...] = (
    "order_id",
    "supplier_id",
    "sku",
    "quantity",
    "unit_price",
    "currency",
    "order_ts",
    "warehouse",
    "status",
    "notes",
)

DEMO_MAX_REJECT_RATIO = 0.05
"""``[validation] max_reject_ratio`` of configs/demo.toml: a file with a larger share of
rejected rows is quarantined whole (strictly larger, as batchrun's worker compares)."""
NOISY_BAD_ROW_RATE = 0.10
"""Share of bad rows in the ``noisy.csv`` bad file (above the demo job's ratio)."""


class Fault(NamedTuple):
    """One injectable row fault and the reject batchrun records for it."""

    column: str | None
    """The column whose cell is replaced; None for the ragged-row fault."""
    value: str | int | None
    """The replacement cell (None = empty cell)."""
    rule: str
    """The rule the row breaks (the only one, hence the first one)."""


RAGGED_FIELDS_MISSING = 3
FAULTS: tuple[Fault, ...] = (
    Fault("quantity", "ten", "type:int32"),
    Fault("unit_price", "N/A", "type:decimal(12,2)"),
    Fault("order_id", None, "required"),
    Fault("order_ts", "2025-02-31 10:00:00", "type:timestamp"),
    Fault("quantity", 0, "min"),
    Fault("currency", "XXX", "allowed"),
    Fault("sku", "BAD-1", "pattern"),
    Fault(None, None, "ragged_row"),  # the row lacks its last RAGGED_FIELDS_MISSING fields
    Fault("quantity", 100_001, "max"),
    Fault("unit_price", "-0.01", "min"),
    Fault("supplier_id", None, "required"),
    Fault("notes", "x" * 501, "max_length"),
)
"""Every fault breaks exactly one rule of the demo job, whatever the rest of the row."""
_RAGGED = next(i for i, f in enumerate(FAULTS) if f.column is None)

BAD_FILE_KINDS: dict[str, str] = {
    "empty": "empty.csv",
    "binary": "binary.csv",
    "truncated": "truncated.csv.gz",
    "semicolon": "semicolon.csv",
    "latin1": "latin1.csv",
    "noisy": "noisy.csv",
    "header_only": "header_only.csv",
}
"""Kind of broken file -> its file name inside the chosen supplier folder."""
_NO_ROW_KINDS = ("empty", "binary", "header_only")
_BINARY_BYTES = 4_096
_UTF8_BOM = b"\xef\xbb\xbf"
_LATIN1_NOTE = "delivered to the caf\u00e9, back door"
_LATIN1_RATE = 0.05

_CURRENCIES = pa.array(["USD", "EUR", "GBP", "JPY"])
_CURRENCY_P = np.array([0.50, 0.25, 0.15, 0.10])
_STATUSES = pa.array(["new", "shipped", "cancelled", "returned"])
_STATUS_P = np.array([0.30, 0.55, 0.08, 0.07])
_WAREHOUSES = pa.array([f"WH-{i:02d}" for i in range(1, 13)])
_NOTES = pa.array(
    [
        'fragile, "handle with care"',
        "leave at dock 3",
        'customer said "ASAP"',
        "split shipment, part 1 of 2",
        "split shipment, part 2 of 2",
        "gift wrap",
        'call before delivery, ask for "Sam"',
        "backorder; ETA 2 weeks",
        'damaged box, "repacked" at hub',
        "no signature required",
        'use side entrance, code "4410"',
        "price match applied, see ticket",
        "pallet, forklift needed",
        'label reads "THIS SIDE UP"',
        "reship of cancelled order",
        "duty paid by sender",
        'ref: PO 88-12, "urgent"',
        "partial refund, 10%",
    ]
)
_NEWLINE_TAILS = pa.array(
    [
        "\nsecond line: recount on arrival",
        '\nnote 2: "keep dry", store indoors',
        "\nupdated: address changed, see portal",
    ]
)
_NULL_NOTE = pa.scalar(None, pa.string())

_SKU_CATALOGUE = 5_000
_SKU_STRIDE = 7_919  # prime, coprime to 10**6: catalogue numbers spread over 000000..999999
_EMPTY_NOTE_RATE = 0.33
_YEAR_START = np.datetime64("2025-01-01T00:00:00", "s")
_YEAR_SECONDS = 365 * 86_400
_SAMPLE_ROWS = 4_000
_ROW_JITTER = 0.03  # rows per file vary by up to +-3 % around the size target
_MAX_WORKERS = 4  # files are independent; Arrow's CSV writer and gzip release the GIL


@dataclass(frozen=True)
class DemoSpec:
    """What to generate; ``file_bytes`` is the uncompressed CSV size target.

    ``bad_row_rate`` and ``bad_files`` switch on the messy mode (module docstring).
    """

    out_dir: Path
    suppliers: int = 20
    files_per_supplier: int = 5
    file_bytes: int = 2_000_000
    seed: int = 42
    gzip_every: int = 0
    quoted_newline_rate: float = 0.0
    bad_row_rate: float = 0.0
    bad_files: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.suppliers < 1 or self.files_per_supplier < 1:
            raise ValueError("suppliers and files_per_supplier must be >= 1")
        if self.file_bytes < 1:
            raise ValueError("file_bytes must be >= 1")
        if self.gzip_every < 0:
            raise ValueError("gzip_every must be >= 0")
        if not 0.0 <= self.quoted_newline_rate <= 1.0:
            raise ValueError("quoted_newline_rate must be within [0, 1]")
        if not 0.0 <= self.bad_row_rate <= 1.0:
            raise ValueError("bad_row_rate must be within [0, 1]")


class RejectTruth(NamedTuple):
    """One rejected row, as batchrun's rejects table records it."""

    line: int
    """1-based physical line where the row starts (header = line 1, quoted newlines count)."""
    rule: str
    """``required``, ``type:int32``, ..., or ``ragged_row``."""
    column: str | None
    """The column of the rule; None for ``ragged_row``."""


@dataclass(frozen=True)
class FileTruth:
    """What batchrun must do with one file under the demo job (configs/demo.toml).

    ``rows``
        Data records written to the file (header excluded).  For ``truncated.csv.gz``
        the records of the CSV before it was compressed and cut; 0 for the empty,
        binary and header-only files.
    ``valid_rows`` / ``rejects``
        Row-level outcome when the file can be read: the rows that pass every rule, and
        one :class:`RejectTruth` per failing row (sorted by line).  They always add up
        to ``rows`` for a readable file, *including* a file quarantined for its reject
        ratio (``noisy.csv``): they say what the rows are, not what gets staged.  For a
        file that cannot be read at all both are empty (0 and ``()``).
    ``quarantined_reason_prefix``
        None when the file commits (possibly with 0 rows, e.g. header only).  Otherwise
        the file is quarantined whole -- nothing staged, no rejects kept -- and
        batchrun's reason for it starts with this text.
    """

    rows: int
    valid_rows: int
    rejects: tuple[RejectTruth, ...] = ()
    quarantined_reason_prefix: str | None = None

    @property
    def quarantined(self) -> bool:
        return self.quarantined_reason_prefix is not None

    @property
    def staged_rows(self) -> int:
        """Rows batchrun stages from this file (0 when quarantined)."""
        return 0 if self.quarantined else self.valid_rows

    @property
    def kept_rejects(self) -> tuple[RejectTruth, ...]:
        """Rejects batchrun records for this file (none when quarantined)."""
        return () if self.quarantined else self.rejects

    def to_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "valid_rows": self.valid_rows,
            "rejects": [r._asdict() for r in self.rejects],
            "quarantined_reason_prefix": self.quarantined_reason_prefix,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FileTruth:
        prefix = raw.get("quarantined_reason_prefix")
        return cls(
            rows=int(raw["rows"]),
            valid_rows=int(raw["valid_rows"]),
            rejects=tuple(
                RejectTruth(int(r["line"]), str(r["rule"]), r.get("column"))
                for r in raw.get("rejects") or []
            ),
            quarantined_reason_prefix=None if prefix is None else str(prefix),
        )


@dataclass(frozen=True)
class DemoTruth:
    """Ground truth of a generated data set, as stored in ``_truth.json``.

    ``files``
        Relative path -> data records written, for EVERY file generated (bad files
        too; see ``FileTruth.rows``).  ``total_rows`` is their sum.
    ``first_order_id`` / ``last_order_id``
        The order ids handed out, ``first..last`` consecutively: ``orders_*`` files in
        sorted path order, then the bad files (in ``BAD_FILE_KINDS`` order).  Every id
        is used by exactly one row; bad rows consume theirs (an empty-order_id fault
        leaves its id unused), so the valid rows' ids are unique but not consecutive.
    ``details``
        Relative path -> :class:`FileTruth` (valid rows, exact rejects, quarantine).
        Filled with "all rows valid" when built without it (older truth files).
    ``total_valid_rows`` / ``total_rejects`` / ``quarantined_files``
        What a run of the demo job over all files must report: rows staged and rows
        rejected (files that are NOT quarantined only), and files quarantined.
    """

    files: dict[str, int]
    total_rows: int
    first_order_id: int
    last_order_id: int
    details: dict[str, FileTruth] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.details:
            clean = {rel: FileTruth(rows=n, valid_rows=n) for rel, n in self.files.items()}
            object.__setattr__(self, "details", clean)

    @property
    def total_valid_rows(self) -> int:
        return sum(d.staged_rows for d in self.details.values())

    @property
    def total_rejects(self) -> int:
        return sum(len(d.kept_rejects) for d in self.details.values())

    @property
    def quarantined_files(self) -> int:
        return sum(d.quarantined for d in self.details.values())

    @property
    def quarantined(self) -> dict[str, str]:
        """Relative path -> reason prefix, for the files batchrun must quarantine."""
        return {
            rel: d.quarantined_reason_prefix
            for rel, d in sorted(self.details.items())
            if d.quarantined_reason_prefix is not None
        }

    def to_json(self) -> str:
        payload = {
            "files": dict(sorted(self.files.items())),
            "total_rows": self.total_rows,
            "first_order_id": self.first_order_id,
            "last_order_id": self.last_order_id,
            "total_valid_rows": self.total_valid_rows,
            "total_rejects": self.total_rejects,
            "quarantined_files": self.quarantined_files,
            "details": {rel: d.to_dict() for rel, d in sorted(self.details.items())},
        }
        return json.dumps(payload, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DemoTruth:
        raw = json.loads(text)
        return cls(
            files={str(k): int(v) for k, v in raw["files"].items()},
            total_rows=int(raw["total_rows"]),
            first_order_id=int(raw["first_order_id"]),
            last_order_id=int(raw["last_order_id"]),
            details={str(k): FileTruth.from_dict(v) for k, v in raw.get("details", {}).items()},
        )


@dataclass(frozen=True)
class _FilePlan:
    rel_path: str
    supplier: int
    global_index: int
    gzip: bool
    rows: int
    first_id: int
    kind: str = "orders"
    """"orders" for a regular file, else a key of BAD_FILE_KINDS."""


@dataclass(frozen=True)
class _RowCost:
    header_bytes: int
    bytes_without_id: float  # mean bytes per row, order_id digits excluded


def generate(spec: DemoSpec) -> DemoTruth:
    """Write the data set described by ``spec`` and return its truth."""
    plans = _plan_files(spec, _estimate_row_cost(spec))
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_files(spec.out_dir, {p.rel_path for p in plans})
    workers = max(1, min(_MAX_WORKERS, os.cpu_count() or 1, len(plans)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        details = list(pool.map(lambda plan: _write_file(spec, plan), plans))  # re-raises
    truth = _truth_from_plans(plans, details)
    write_text_atomically(spec.out_dir / TRUTH_FILE, truth.to_json())
    return truth


def load_truth(out_dir: Path) -> DemoTruth:
    """Read ``out_dir/_truth.json`` written by :func:`generate`."""
    return DemoTruth.from_json((Path(out_dir) / TRUTH_FILE).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- planning


def _file_rng(seed: int, global_index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(global_index + 1,)))


def _sample_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))


def _digits(ids: np.ndarray) -> np.ndarray:
    """Decimal digit count of positive integers."""
    return np.floor(np.log10(ids.astype(np.float64))).astype(np.int64) + 1


def _estimate_row_cost(spec: DemoSpec) -> _RowCost:
    """Measure header size and mean row size on a sample written to memory."""
    sample_plan = _FilePlan("", 0, -1, False, _SAMPLE_ROWS, 1)
    table = _make_table(_sample_rng(spec.seed), sample_plan, spec)
    header_bytes = _csv_size(table.slice(0, 0))
    body_bytes = _csv_size(table) - header_bytes
    id_digits = int(_digits(np.arange(1, _SAMPLE_ROWS + 1)).sum())
    return _RowCost(header_bytes, (body_bytes - id_digits) / _SAMPLE_ROWS)


def _csv_size(table: pa.Table) -> int:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return int(sink.getvalue().size)


def _rows_for(target_body: float, cost: _RowCost, first_id: int) -> int:
    """Rows whose CSV body is ~target_body bytes, counting order_id digits exactly."""
    rows = max(1, round(target_body / (cost.bytes_without_id + len(str(first_id)))))
    for _ in range(3):  # refine: id width may grow inside the file
        ids = np.arange(first_id, first_id + rows)
        size = rows * cost.bytes_without_id + float(_digits(ids).sum())
        rows = max(1, round(rows * target_body / size))
    return rows


def _supplier_dir(spec: DemoSpec, supplier: int) -> str:
    return f"supplier_{supplier:0{max(2, len(str(spec.suppliers - 1)))}d}"


def _file_names(spec: DemoSpec) -> list[tuple[int, int, str]]:
    """(supplier, file index, stem) in sorted path order; widths keep sorting numeric."""
    f_width = max(4, len(str(spec.files_per_supplier - 1)))
    return [
        (s, f, f"{_supplier_dir(spec, s)}/orders_{f:0{f_width}d}.csv")
        for s in range(spec.suppliers)
        for f in range(spec.files_per_supplier)
    ]


def _bad_file_suppliers(spec: DemoSpec) -> np.ndarray:
    """The supplier folder of each bad file kind, drawn from the seed alone."""
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(0, 1)))
    return rng.integers(0, spec.suppliers, len(BAD_FILE_KINDS))


def _plan_files(spec: DemoSpec, cost: _RowCost) -> list[_FilePlan]:
    names = _file_names(spec)
    jitter = np.random.default_rng(spec.seed).uniform(1 - _ROW_JITTER, 1 + _ROW_JITTER, len(names))
    target_body = max(1.0, float(spec.file_bytes - cost.header_bytes))
    plans: list[_FilePlan] = []
    next_id = 1
    for g, (supplier, _, stem) in enumerate(names):
        gz = spec.gzip_every > 0 and (g + 1) % spec.gzip_every == 0
        rows = _rows_for(target_body * float(jitter[g]), cost, next_id)
        rel = stem + ".gz" if gz else stem
        plans.append(_FilePlan(rel, supplier, g, gz, rows, next_id))
        next_id += rows
    if spec.bad_files:
        suppliers = _bad_file_suppliers(spec)
        for j, (kind, name) in enumerate(BAD_FILE_KINDS.items()):
            supplier = int(suppliers[j])
            rows = 0 if kind in _NO_ROW_KINDS else _rows_for(target_body, cost, next_id)
            rel = f"{_supplier_dir(spec, supplier)}/{name}"
            gz = name.endswith(".gz")
            plans.append(_FilePlan(rel, supplier, len(names) + j, gz, rows, next_id, kind))
            next_id += rows
    return plans


def _truth_from_plans(plans: list[_FilePlan], details: list[FileTruth]) -> DemoTruth:
    total = sum(p.rows for p in plans)
    return DemoTruth(
        files={p.rel_path: p.rows for p in plans},
        total_rows=total,
        first_order_id=plans[0].first_id,
        last_order_id=plans[0].first_id + total - 1,
        details={p.rel_path: d for p, d in zip(plans, details)},
    )


# --------------------------------------------------------------------------- columns


def _make_table(rng: np.random.Generator, plan: _FilePlan, spec: DemoSpec) -> pa.Table:
    """One file's rows; draws from ``rng`` in a fixed order (determinism)."""
    n = plan.rows
    columns: list[pa.Array] = [
        pa.array(np.arange(plan.first_id, plan.first_id + n, dtype=np.int64)),
        pa.array([f"SUP-{plan.supplier:03d}"]).take(pa.array(np.zeros(n, dtype=np.int64))),
        _sku_column(rng, n),
        pa.array(np.minimum(rng.geometric(1 / 25, n), 500).astype(np.int64)),
        _price_column(rng, n),
        _choice_column(rng, _CURRENCIES, n, _CURRENCY_P),
        _timestamp_column(rng, n),
        _choice_column(rng, _WAREHOUSES, n),
        _choice_column(rng, _STATUSES, n, _STATUS_P),
        _notes_column(rng, n, spec.quoted_newline_rate),
    ]
    return pa.table(columns, names=list(COLUMNS))


def _choice_column(
    rng: np.random.Generator, values: pa.Array, n: int, p: np.ndarray | None = None
) -> pa.Array:
    return values.take(pa.array(rng.choice(len(values), size=n, p=p)))


def _sku_column(rng: np.random.Generator, n: int) -> pa.Array:
    numbers = (rng.integers(0, _SKU_CATALOGUE, n) * _SKU_STRIDE + 4_217) % 1_000_000
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width=6, padding="0")
    return pc.binary_join_element_wise("SKU-", digits, "")


def _price_column(rng: np.random.Generator, n: int) -> pa.Array:
    """decimal128(7, 2) built straight from integer cents (no float rounding)."""
    cents = np.clip(np.rint(np.exp(rng.normal(3.2, 1.1, n)) * 100), 50, 99_999)
    words = np.zeros((n, 2), dtype=np.int64)  # little-endian 128-bit: low word, high word 0
    words[:, 0] = cents.astype(np.int64)
    buffers = [None, pa.py_buffer(words.tobytes())]
    return pa.Array.from_buffers(pa.decimal128(7, 2), n, buffers)


def _timestamp_column(rng: np.random.Generator, n: int) -> pa.Array:
    seconds = np.sort(rng.integers(0, _YEAR_SECONDS, n))
    return pa.array(_YEAR_START + seconds, pa.timestamp("s"))


def _notes_column(rng: np.random.Generator, n: int, newline_rate: float) -> pa.Array:
    base = _NOTES.take(pa.array(rng.integers(0, len(_NOTES), n)))
    tails = _NEWLINE_TAILS.take(pa.array(rng.integers(0, len(_NEWLINE_TAILS), n)))
    empty = rng.random(n) < _EMPTY_NOTE_RATE
    newline = np.zeros(n, dtype=bool)
    newline[rng.permutation(n)[: round(newline_rate * n)]] = True
    notes = pc.if_else(pa.array(newline), pc.binary_join_element_wise(base, tails, ""), base)
    return pc.if_else(pa.array(empty & ~newline), _NULL_NOTE, notes)


# --------------------------------------------------------------------------- faults


def _inject_faults(
    rng: np.random.Generator, table: pa.Table, rate: float
) -> tuple[pa.Table, np.ndarray]:
    """Give ``round(rate * rows)`` random rows one fault each (``FAULTS`` in turn).

    Returns the new table and, per row, the index of its fault in ``FAULTS`` (-1 = none).
    Draws nothing from ``rng`` when no row is faulty, so a clean file stays unchanged.
    """
    n = table.num_rows
    fault = np.full(n, -1, dtype=np.int64)
    bad = round(rate * n)
    if bad == 0:
        return table, fault
    rows = rng.permutation(n)[:bad]
    fault[rows] = (np.arange(bad) + rng.integers(len(FAULTS))) % len(FAULTS)
    columns = dict(zip(table.column_names, table.columns))
    for index, spec in enumerate(FAULTS):
        mask = fault == index
        if spec.column is None or not mask.any():
            continue
        column = columns[spec.column]
        if isinstance(spec.value, str) and not pa.types.is_string(column.type):
            column = pc.cast(column, pa.string())  # this file writes the column quoted
        if spec.value is None:
            value = pa.scalar(None, column.type)
        elif pa.types.is_string(column.type):
            value = pa.scalar(str(spec.value), pa.string())
        else:
            value = pa.scalar(spec.value, column.type)
        columns[spec.column] = pc.if_else(pa.array(mask), value, column)
    return pa.table(list(columns.values()), names=list(columns)), fault


def _row_lines(table: pa.Table, fault: np.ndarray) -> np.ndarray:
    """Physical start line of every row: header is line 1, quoted newlines shift the rest."""
    newlines = pc.fill_null(pc.count_substring(table.column("notes"), "\n"), 0)
    extra = np.array(newlines.to_numpy(zero_copy_only=False), dtype=np.int64)  # writable copy
    extra[fault == _RAGGED] = 0  # a ragged row is written without its notes
    return 2 + np.arange(table.num_rows, dtype=np.int64) + np.cumsum(extra) - extra


def _rejects(table: pa.Table, fault: np.ndarray) -> tuple[RejectTruth, ...]:
    bad = np.flatnonzero(fault >= 0)
    lines = _row_lines(table, fault)[bad]
    return tuple(
        RejectTruth(int(line), FAULTS[f].rule, FAULTS[f].column)
        for line, f in zip(lines, fault[bad])
    )


def _ratio_reason(rejects: int, rows: int) -> str | None:
    """The quarantine reason prefix batchrun gives a file with too many rejects."""
    if rows and rejects / rows > DEMO_MAX_REJECT_RATIO:
        return f"{rejects} of {rows} rows rejected, more than max_reject_ratio"
    return None


# --------------------------------------------------------------------------- output


def _write_file(spec: DemoSpec, plan: _FilePlan) -> FileTruth:
    """Write one file and return its truth."""
    path = spec.out_dir / plan.rel_path
    rng = _file_rng(spec.seed, plan.global_index)
    if plan.kind == "empty":
        _write_bytes(path, b"")
        return FileTruth(0, 0, (), "empty file")
    if plan.kind == "binary":
        noise = rng.integers(0, 256, _BINARY_BYTES, dtype=np.uint8)
        noise[::61] = 0  # NUL bytes throughout, from the very first byte
        _write_bytes(path, noise.tobytes())
        return FileTruth(0, 0, (), "binary content")

    table = _make_table(rng, plan, spec)
    rate = {"orders": spec.bad_row_rate, "noisy": NOISY_BAD_ROW_RATE}.get(plan.kind, 0.0)
    table, fault = _inject_faults(rng, table, rate)
    rejects = _rejects(table, fault)
    readable = FileTruth(plan.rows, plan.rows - len(rejects), rejects,
                         _ratio_reason(len(rejects), plan.rows))

    if plan.kind in ("orders", "noisy", "header_only"):
        data = _csv_bytes(table, fault == _RAGGED)
        _write_bytes(path, data, gzip=plan.gzip)
        return readable
    if plan.kind == "truncated":
        packed = gzip_lib.compress(_csv_bytes(table, fault == _RAGGED), mtime=0)
        _write_bytes(path, packed[: len(packed) // 2])
        return FileTruth(plan.rows, 0, (), "corrupt or truncated compression")
    if plan.kind == "semicolon":
        _write_bytes(path, _UTF8_BOM + _csv_bytes(table, fault == _RAGGED, delimiter=";"))
        return FileTruth(plan.rows, 0, (), "unknown columns")
    if plan.kind == "latin1":
        accented = np.zeros(plan.rows, dtype=bool)
        accented[rng.permutation(plan.rows)[: max(1, round(_LATIN1_RATE * plan.rows))]] = True
        notes = pc.if_else(pa.array(accented), _LATIN1_NOTE, table.column("notes"))
        table = table.set_column(COLUMNS.index("notes"), "notes", notes)
        data = _csv_bytes(table, fault == _RAGGED).decode("utf-8").encode("latin-1")
        first = data.index(b"\xe9")
        line = data.count(b"\n", 0, first) + 1
        _write_bytes(path, data)
        return FileTruth(plan.rows, 0, (), f"not valid utf-8 text at line {line} (byte {first})")
    raise AssertionError(f"unknown file kind {plan.kind!r}")


def _csv_bytes(table: pa.Table, ragged: np.ndarray, delimiter: str = ",") -> bytes:
    """The CSV text of ``table``; ``ragged`` rows lose their last RAGGED_FIELDS_MISSING fields.

    Pieces are written by Arrow one after the other (header, runs of whole rows, each
    short row on its own), so the text is exactly what one ``write_csv`` call would give
    apart from the short rows.
    """
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table.slice(0, 0), sink, pacsv.WriteOptions(delimiter=delimiter))
    rows = pacsv.WriteOptions(include_header=False, delimiter=delimiter)
    short = table.select(list(COLUMNS[: len(COLUMNS) - RAGGED_FIELDS_MISSING]))
    start = 0
    for row in np.flatnonzero(ragged).tolist():
        if row > start:
            pacsv.write_csv(table.slice(start, row - start), sink, rows)
        pacsv.write_csv(short.slice(row, 1), sink, rows)
        start = row + 1
    if start < table.num_rows:
        pacsv.write_csv(table.slice(start), sink, rows)
    return sink.getvalue().to_pybytes()


def _write_bytes(path: Path, data: bytes, gzip: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gzip:
        with pa.CompressedOutputStream(str(path), "gzip") as sink:
            sink.write(data)
    else:
        path.write_bytes(data)


_OWN_FILE = re.compile(
    r"^supplier_\d+/(orders_\d+\.csv(\.gz)?|"
    + "|".join(re.escape(name) for name in BAD_FILE_KINDS.values())
    + r")$"
)


def _remove_stale_files(out_dir: Path, keep: set[str]) -> None:
    """Delete data files of an earlier run (our naming only) that this run won't write."""
    for path in sorted(out_dir.glob("supplier_*/*.csv*")):
        rel = path.relative_to(out_dir).as_posix()
        if _OWN_FILE.match(rel) and rel not in keep:
            path.unlink()
    for folder in sorted(out_dir.glob("supplier_*")):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

