"""The one type registry: the grammar a job file may write, and each type's Arrow and
DuckDB spelling. The job-file validation goes through it (no second table or regex)."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from batchrun import coltypes
from batchrun.config import ColumnSpec
from batchrun.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("written", "canonical"), [
    ("int64", "int64"), (" Timestamp ", "timestamp"), ("decimal(12,2)", "decimal(12,2)"),
    ("Decimal( 38 , 0 )", "decimal(38,0)"), ("decimal(1,1)", "decimal(1,1)"),
])
def test_a_written_type_normalizes_to_its_canonical_name(written: str, canonical: str) -> None:
    assert coltypes.normalize(written) == canonical
    assert ColumnSpec(type=written).type == canonical


@pytest.mark.parametrize(("written", "needle"), [
    ("decimal(39,2)", "1 <= p <= 38"), ("decimal(0,0)", "1 <= p <= 38"),
    ("decimal(4,5)", "s <= p"), ("decimal(12)", "decimal(p,s)"), ("varchar", "int32"),
])
def test_a_type_outside_the_grammar_is_refused_naming_what_is_allowed(
        written: str, needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        coltypes.normalize(written)


def test_a_job_file_with_a_bad_type_names_the_key(tmp_path: Path) -> None:
    from batchrun.config import load_job

    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "j"\ntable = "t"\n[source]\npaths = ["*.csv"]\n'
                   '[schema.columns]\nprice = { type = "decimal(40,2)" }\n')
    with pytest.raises(ConfigError, match="1 <= p <= 38"):
        load_job(job)


@pytest.mark.parametrize("name", [*coltypes.NAMES, "decimal(12,2)"])
def test_every_type_has_an_arrow_and_a_duckdb_spelling_that_agree(name: str) -> None:
    import duckdb

    arrow = coltypes.arrow_type(name)
    table = duckdb.sql(f"SELECT CAST(NULL AS {coltypes.duckdb_type(name)}) AS v").arrow()
    found = table.schema.field("v").type
    assert found == arrow or (name == "timestamp" and pa.types.is_timestamp(found))
    assert coltypes.name_of_arrow(arrow) == name


def test_decimal_parts_reads_precision_and_scale_and_nothing_else() -> None:
    assert coltypes.decimal_parts("decimal(12,2)") == (12, 2)
    assert coltypes.arrow_type("decimal(12,2)") == pa.decimal128(12, 2)
    assert coltypes.duckdb_type("decimal(12,2)") == "DECIMAL(12,2)"
    assert coltypes.decimal_parts("float64") is None


def test_no_other_module_of_the_package_keeps_its_own_type_table_or_decimal_regex() -> None:
    offenders = []
    for path in (ROOT / "batchrun").rglob("*.py"):
        if path.name == "coltypes.py":
            continue
        text = path.read_text()
        if re.search(r"_DECIMAL\b|decimal\\\(|\"BIGINT\"|\"float64\"\)?[:,] pa\.float64\(\)", text):
            offenders.append(path.relative_to(ROOT).as_posix())
    assert offenders == []
