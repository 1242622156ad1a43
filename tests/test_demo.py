"""Tests for the demo data generator (real files in tmp_path, small sizes)."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from batchrun.demo import COLUMNS, TRUTH_FILE, DemoSpec, DemoTruth, generate, load_truth

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET = 50_000


def small_spec(out_dir: Path, **overrides: object) -> DemoSpec:
    params: dict[str, object] = {
        "suppliers": 3,
        "files_per_supplier": 2,
        "file_bytes": TARGET,
        "seed": 7,
        "gzip_every": 4,
        "quoted_newline_rate": 0.05,
    }
    params.update(overrides)
    return DemoSpec(out_dir=out_dir, **params)  # type: ignore[arg-type]


def read_file(path: Path) -> pa.Table:
    """Read one generated file, every column as text so formats can be checked."""
    return pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in COLUMNS},
            strings_can_be_null=True,
        ),
    )


def data_files(out_dir: Path) -> list[str]:
    found = [p for p in out_dir.glob("supplier_*/*") if p.name.startswith("orders_")]
    return sorted(p.relative_to(out_dir).as_posix() for p in found)


def uncompressed_size(path: Path) -> int:
    if path.suffix == ".gz":
        return len(gzip.decompress(path.read_bytes()))
    return path.stat().st_size


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoTruth]:
    out_dir = tmp_path_factory.mktemp("demo")
    return out_dir, generate(small_spec(out_dir))


@pytest.fixture(scope="module")
def tables(dataset: tuple[Path, DemoTruth]) -> dict[str, pa.Table]:
    out_dir, truth = dataset
    return {rel: read_file(out_dir / rel) for rel in truth.files}


def test_layout_and_truth_file(dataset: tuple[Path, DemoTruth]) -> None:
    out_dir, truth = dataset
    expected = [
        "supplier_00/orders_0000.csv",
        "supplier_00/orders_0001.csv",
        "supplier_01/orders_0000.csv",
        "supplier_01/orders_0001.csv.gz",  # global index 3 -> 4th file, gzip_every=4
        "supplier_02/orders_0000.csv",
        "supplier_02/orders_0001.csv",
    ]
    assert data_files(out_dir) == expected
    assert sorted(truth.files) == expected
    assert load_truth(out_dir) == truth
    assert (out_dir / TRUTH_FILE).is_file()
    assert not list(out_dir.glob("supplier_*/*.csv*.tmp"))


def test_row_counts_match_truth(
    dataset: tuple[Path, DemoTruth], tables: dict[str, pa.Table]
) -> None:
    _, truth = dataset
    assert {rel: t.num_rows for rel, t in tables.items()} == truth.files
    assert sum(t.num_rows for t in tables.values()) == truth.total_rows


def test_order_ids_unique_and_consecutive(
    dataset: tuple[Path, DemoTruth], tables: dict[str, pa.Table]
) -> None:
    _, truth = dataset
    ids: list[int] = []
    for rel in sorted(tables):
        ids.extend(int(v) for v in tables[rel].column("order_id").to_pylist())
    assert ids == list(range(1, truth.total_rows + 1))
    assert (truth.first_order_id, truth.last_order_id) == (1, truth.total_rows)


def test_columns_and_value_formats(tables: dict[str, pa.Table]) -> None:
    table = pa.concat_tables(tables.values())
    assert table.column_names == list(COLUMNS)

    def all_match(column: str, pattern: str) -> bool:
        return bool(pc.all(pc.match_substring_regex(table.column(column), pattern)).as_py())

    assert all_match("supplier_id", r"^SUP-\d{3}$")
    assert all_match("sku", r"^SKU-\d{6}$")
    assert all_match("unit_price", r"^\d{1,3}\.\d{2}$")
    assert all_match("currency", r"^(USD|EUR|GBP|JPY)$")
    assert all_match("order_ts", r"^2025-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
    assert all_match("warehouse", r"^WH-\d{2}$")
    assert all_match("status", r"^(new|shipped|cancelled|returned)$")
    quantity = pc.cast(table.column("quantity"), pa.int64())
    assert pc.min(quantity).as_py() >= 1 and pc.max(quantity).as_py() <= 500
    price = pc.cast(table.column("unit_price"), pa.float64())
    assert pc.min(price).as_py() >= 0.5 and pc.max(price).as_py() <= 999.99


def test_notes_are_messy(tables: dict[str, pa.Table]) -> None:
    notes = pa.concat_tables(tables.values()).column("notes")
    assert notes.null_count > 0  # sometimes empty
    texts = pc.drop_null(notes)
    assert pc.any(pc.match_substring(texts, ",")).as_py()
    assert pc.any(pc.match_substring(texts, '"')).as_py()


def test_gzip_file_reads_back(dataset: tuple[Path, DemoTruth]) -> None:
    out_dir, truth = dataset
    gz_files = [rel for rel in truth.files if rel.endswith(".csv.gz")]
    assert gz_files
    for rel in gz_files:
        raw = gzip.decompress((out_dir / rel).read_bytes())
        assert raw.startswith(b'"order_id","supplier_id"')
        assert read_file(out_dir / rel).num_rows == truth.files[rel]


def test_file_sizes_near_target(dataset: tuple[Path, DemoTruth]) -> None:
    out_dir, truth = dataset
    for rel in truth.files:
        size = uncompressed_size(out_dir / rel)
        assert 0.85 * TARGET <= size <= 1.15 * TARGET, (rel, size)


def test_quoted_newlines_present_and_counts_hold(
    dataset: tuple[Path, DemoTruth], tables: dict[str, pa.Table]
) -> None:
    out_dir, truth = dataset
    notes = pc.drop_null(pa.concat_tables(tables.values()).column("notes"))
    with_newline = pc.sum(pc.match_substring(notes, "\n")).as_py()
    assert with_newline == pytest.approx(0.05 * truth.total_rows, abs=len(truth.files))
    plain = "supplier_00/orders_0000.csv"
    physical_lines = (out_dir / plain).read_bytes().count(b"\n")
    assert physical_lines > truth.files[plain] + 1  # header + rows + embedded newlines


def test_no_newlines_when_rate_is_zero(tmp_path: Path) -> None:
    truth = generate(small_spec(tmp_path, quoted_newline_rate=0.0, gzip_every=0))
    for rel, rows in truth.files.items():
        assert (tmp_path / rel).read_bytes().count(b"\n") == rows + 1


def test_deterministic_byte_identical(tmp_path: Path) -> None:
    first = generate(small_spec(tmp_path / "a"))
    second = generate(small_spec(tmp_path / "b"))
    assert first == second
    for rel in [*first.files, TRUTH_FILE]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_other_seed_changes_data(tmp_path: Path) -> None:
    generate(small_spec(tmp_path / "a", seed=1))
    generate(small_spec(tmp_path / "b", seed=2))
    rel = "supplier_00/orders_0000.csv"
    assert (tmp_path / "a" / rel).read_bytes() != (tmp_path / "b" / rel).read_bytes()


def test_rerun_with_other_spec_leaves_no_stale_files(tmp_path: Path) -> None:
    generate(small_spec(tmp_path, suppliers=3, gzip_every=0))
    truth = generate(small_spec(tmp_path, suppliers=2, gzip_every=1))
    assert data_files(tmp_path) == sorted(truth.files)
    assert all(rel.endswith(".csv.gz") for rel in truth.files)
    assert not (tmp_path / "supplier_02").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        {"suppliers": 0},
        {"files_per_supplier": 0},
        {"file_bytes": 0},
        {"gzip_every": -1},
        {"quoted_newline_rate": 1.5},
    ],
)
def test_invalid_spec_rejected(tmp_path: Path, overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        small_spec(tmp_path, **overrides)


def test_cli_writes_data_and_summary(tmp_path: Path) -> None:
    out_dir = tmp_path / "cli"
    args = ["--suppliers", "2", "--files-per-supplier", "1", "--file-mb", "0.02"]
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "make_demo_data.py"), str(out_dir), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert re.search(r"wrote 2 files, [\d,]+ rows, [\d.]+ MB in [\d.]+ s", result.stdout)
    assert load_truth(out_dir).files.keys() == set(data_files(out_dir))
