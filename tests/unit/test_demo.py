"""Tests for the demo data generator (real files in tmp_path, small sizes)."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from batchrun.config import load_job
from batchrun.model import BatchResult, BatchTask
from batchrun.pipeline import BatchPipeline, PipelineSpec
from batchrun.tools.demo import (
    BAD_FILE_KINDS,
    COLUMNS,
    DEMO_MAX_REJECT_RATIO,
    FAULTS,
    TRUTH_FILE,
    DemoSpec,
    DemoTruth,
    FileTruth,
    RejectTruth,
    generate,
    load_truth,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_JOB = REPO_ROOT / "configs" / "demo.toml"
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
        {"bad_row_rate": -0.01},
        {"bad_row_rate": 1.5},
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


# --------------------------------------------------------------------------- messy mode

BAD_ROW_RATE = 0.01
BAD_NAMES = set(BAD_FILE_KINDS.values())


def messy_spec(out_dir: Path, **overrides: object) -> DemoSpec:
    params: dict[str, object] = {"bad_row_rate": BAD_ROW_RATE, "bad_files": True}
    params.update(overrides)
    return small_spec(out_dir, **params)


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoTruth]:
    """A messy data set laid out like configs/ (data/suppliers next to the job file)."""
    root = tmp_path_factory.mktemp("messy")
    return root, generate(messy_spec(root / "data" / "suppliers"))


def write_demo_job(root: Path, max_reject_ratio: float | None = None) -> Path:
    """configs/demo.toml verbatim (same relative data/ and staging/ paths) under root."""
    text = DEMO_JOB.read_text(encoding="utf-8")
    if max_reject_ratio is not None:
        old = f"max_reject_ratio = {DEMO_MAX_REJECT_RATIO}"
        assert old in text
        text = text.replace(old, f"max_reject_ratio = {max_reject_ratio}")
    path = root / f"job_{max_reject_ratio}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def demo_worker(job_path: Path, staging: Path) -> BatchPipeline:
    """An in-process worker (no Ray), its spec built like execute._worker_spec builds it."""
    job = load_job(job_path, {"staging.dir": str(staging)})
    config = job.config
    assert config.schema_ is not None
    spec = PipelineSpec(
        run_id="demo-truth", table=job.table, staging_dir=str(job.staging_dir),
        fmt=config.source.format, csv=config.source.csv, columns=dict(config.schema_.columns),
        validation=config.validation, threads=1,
    )
    return BatchPipeline(0, spec)


def source_files(job_path: Path) -> list[str]:
    """The files the job's globs pick up, relative to the data root, sorted."""
    job = load_job(job_path)
    data = job.base_dir / "data" / "suppliers"
    found = {p for pattern in job.config.source.paths for p in job.base_dir.glob(pattern)}
    return sorted(p.relative_to(data).as_posix() for p in found)


def rejects_of(result: BatchResult) -> list[RejectTruth]:
    if result.rejects_path is None:
        return []
    table = pq.read_table(result.rejects_path, columns=["line", "rule", "column"])
    rows = zip(table["line"].to_pylist(), table["rule"].to_pylist(), table["column"].to_pylist())
    return sorted(RejectTruth(*row) for row in rows)


def staged_ids(result: BatchResult) -> list[int]:
    if result.output_path is None:
        return []
    return pq.read_table(result.output_path, columns=["order_id"])["order_id"].to_pylist()


def assert_file_matches(rel: str, truth: FileTruth, result: BatchResult) -> None:
    (outcome,) = result.files
    if truth.quarantined:
        assert outcome.error is not None, (rel, "expected quarantine")
        assert outcome.error.startswith(truth.quarantined_reason_prefix or ""), (rel, outcome)
    else:
        assert outcome.error is None, (rel, outcome.error)
    assert (result.rows_staged, result.rows_rejected) == (
        truth.staged_rows, len(truth.kept_rejects)), rel
    assert (outcome.rows_staged, outcome.rows_rejected) == (
        truth.staged_rows, len(truth.kept_rejects)), rel
    assert rejects_of(result) == sorted(truth.kept_rejects), rel


def test_messy_generation_is_deterministic(tmp_path: Path) -> None:
    first = generate(messy_spec(tmp_path / "a"))
    second = generate(messy_spec(tmp_path / "b"))
    assert first == second
    for rel in [*first.files, TRUTH_FILE]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    other = generate(messy_spec(tmp_path / "c", seed=8))
    assert other.details != first.details


def test_clean_mode_unchanged_by_messy_fields(tmp_path: Path) -> None:
    clean = generate(small_spec(tmp_path / "clean"))
    messy_rows = generate(small_spec(tmp_path / "zero", bad_row_rate=0.0, bad_files=False))
    assert clean == messy_rows
    assert clean.total_valid_rows == clean.total_rows
    assert (clean.total_rejects, clean.quarantined_files) == (0, 0)
    assert all(d == FileTruth(n, n) for d, n in zip(clean.details.values(), clean.files.values()))


def test_messy_layout_and_bad_files(messy: tuple[Path, DemoTruth]) -> None:
    root, truth = messy
    data = root / "data" / "suppliers"
    assert sorted(truth.files) == sorted(
        p.relative_to(data).as_posix() for p in data.glob("supplier_*/*") if p.is_file())
    by_name = {rel.split("/")[1]: rel for rel in truth.files if rel.split("/")[1] in BAD_NAMES}
    assert set(by_name) == BAD_NAMES
    raw = {name: (data / rel).read_bytes() for name, rel in by_name.items()}
    assert raw["empty.csv"] == b""
    assert b"\0" in raw["binary.csv"][:100]
    with pytest.raises((EOFError, OSError)):
        gzip.decompress(raw["truncated.csv.gz"])
    assert raw["semicolon.csv"].startswith(b'\xef\xbb\xbf"order_id";"supplier_id";')
    assert b"\xe9" in raw["latin1.csv"]
    with pytest.raises(UnicodeDecodeError):
        raw["latin1.csv"].decode("utf-8")
    assert raw["header_only.csv"].count(b"\n") == 1
    assert truth.details[by_name["header_only.csv"]] == FileTruth(0, 0)
    assert truth.quarantined_files == len(BAD_NAMES) - 1  # all but header_only.csv
    for name in BAD_NAMES - {"header_only.csv"}:
        assert truth.details[by_name[name]].quarantined, name


def test_messy_truth_is_self_consistent(messy: tuple[Path, DemoTruth]) -> None:
    root, truth = messy
    assert load_truth(root / "data" / "suppliers") == truth
    assert set(truth.details) == set(truth.files)
    assert truth.total_rows == sum(truth.files.values())
    assert truth.last_order_id - truth.first_order_id + 1 == truth.total_rows
    for rel, d in truth.details.items():
        assert d.rows == truth.files[rel], rel
        lines = [r.line for r in d.rejects]
        assert lines == sorted(set(lines)) and all(line >= 2 for line in lines), rel
        if not d.quarantined or d.rejects:  # readable: rows are valid or rejected
            assert d.valid_rows + len(d.rejects) == d.rows, rel
        if rel.split("/")[1].startswith("orders_"):
            assert not d.quarantined, rel
            assert len(d.rejects) == round(BAD_ROW_RATE * d.rows), rel
    committed = [d for d in truth.details.values() if not d.quarantined]
    assert truth.total_valid_rows == sum(d.valid_rows for d in committed)
    assert truth.total_rejects == sum(len(d.rejects) for d in committed)
    assert truth.total_rejects > 0
    raw = json.loads((root / "data" / "suppliers" / TRUTH_FILE).read_text())
    assert raw["total_valid_rows"] == truth.total_valid_rows
    assert raw["total_rejects"] == truth.total_rejects
    assert raw["quarantined_files"] == truth.quarantined_files
    # every fault kind occurs (noisy.csv alone has more bad rows than there are kinds),
    # and the kept rejects of ordinary files include a ragged row
    seen = {(r.rule, r.column) for d in truth.details.values() for r in d.rejects}
    assert seen == {(f.rule, f.column) for f in FAULTS}
    assert any(r.rule == "ragged_row" for d in committed for r in d.rejects)


def test_demo_job_ratio_matches_generator() -> None:
    assert load_job(DEMO_JOB).config.validation.max_reject_ratio == DEMO_MAX_REJECT_RATIO


def test_truth_matches_batchrun_worker(messy: tuple[Path, DemoTruth], tmp_path: Path) -> None:
    """The real check: batchrun's own reader + validator, one file per batch, no Ray."""
    root, truth = messy
    job_path = write_demo_job(root)
    assert source_files(job_path) == sorted(truth.files)
    worker = demo_worker(job_path, tmp_path / "staging")
    ids: list[int] = []
    for n, (rel, expected) in enumerate(sorted(truth.details.items())):
        path = str(root / "data" / "suppliers" / rel)
        result = worker.process(BatchTask(batch_id=f"b{n}", files=(path,)))
        assert_file_matches(rel, expected, result)
        ids.extend(staged_ids(result))
    assert len(ids) == len(set(ids)) == truth.total_valid_rows
    assert truth.first_order_id <= min(ids) and max(ids) <= truth.last_order_id


def test_truth_matches_one_batch_of_all_files(
    messy: tuple[Path, DemoTruth], tmp_path: Path
) -> None:
    root, truth = messy
    worker = demo_worker(write_demo_job(root), tmp_path / "staging")
    paths = {str(root / "data" / "suppliers" / rel): rel for rel in sorted(truth.files)}
    result = worker.process(BatchTask(batch_id="all", files=tuple(paths)))
    assert (result.rows_staged, result.rows_rejected) == (
        truth.total_valid_rows, truth.total_rejects)
    errors = {paths[o.path]: o.error for o in result.files if o.error}
    assert set(errors) == set(truth.quarantined)
    assert all(errors[rel].startswith(prefix) for rel, prefix in truth.quarantined.items())


def test_noisy_file_rejects_match_when_not_quarantined(
    messy: tuple[Path, DemoTruth], tmp_path: Path
) -> None:
    """noisy.csv has every fault kind; with the ratio lifted each reject must match."""
    root, truth = messy
    worker = demo_worker(write_demo_job(root, max_reject_ratio=1.0), tmp_path / "staging")
    (rel,) = [rel for rel in truth.files if rel.endswith("/noisy.csv")]
    noisy = truth.details[rel]
    lifted = FileTruth(noisy.rows, noisy.valid_rows, noisy.rejects)  # not quarantined
    result = worker.process(BatchTask(batch_id="noisy", files=(str(root / "data" / "suppliers" / rel),)))
    assert_file_matches(rel, lifted, result)
    assert {r.rule for r in noisy.rejects} == {f.rule for f in FAULTS}


def test_high_bad_row_rate_quarantines_in_truth(tmp_path: Path) -> None:
    truth = generate(messy_spec(tmp_path, bad_row_rate=0.2, bad_files=False,
                                suppliers=1, files_per_supplier=1))
    (d,) = truth.details.values()
    assert d.quarantined_reason_prefix == (
        f"{len(d.rejects)} of {d.rows} rows rejected, more than max_reject_ratio")
    assert (truth.total_valid_rows, truth.total_rejects, truth.quarantined_files) == (0, 0, 1)


def test_rerun_without_bad_files_removes_them(tmp_path: Path) -> None:
    generate(messy_spec(tmp_path))
    truth = generate(small_spec(tmp_path))
    assert data_files(tmp_path) == sorted(truth.files)
    assert not [p for p in tmp_path.glob("supplier_*/*") if p.name in BAD_NAMES]


def test_cli_messy_flags(tmp_path: Path) -> None:
    out_dir = tmp_path / "cli"
    args = ["--suppliers", "2", "--files-per-supplier", "1", "--file-mb", "0.02",
            "--bad-row-rate", "0.01", "--bad-files"]
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "make_demo_data.py"), str(out_dir), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    truth = load_truth(out_dir)
    assert re.search(r"wrote 9 files, [\d,]+ rows, [\d.]+ MB in [\d.]+ s", result.stdout)
    assert f"{truth.total_rejects:,} rejects, 6 quarantined files" in result.stdout
    assert {rel.split("/")[1] for rel in truth.files} >= BAD_NAMES
