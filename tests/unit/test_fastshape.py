"""The byte-shape checks answer exactly what the reference's SQL answers, or nothing.

Differential: hypothesis draws columns of text near each grammar's edges, and each
check's verdict is compared with the reference expression of validate.py run in DuckDB
over the same values. A check may decline (None), never disagree.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from batchrun.config import ColumnSpec
from batchrun.fastshape import all_fixed_width, fixed_width, plain_decimal, shaped_datetime
from batchrun.validate import _typed

DB = duckdb.connect()
DB.execute("SET TimeZone = 'UTC'")


def reference(values: list[str], spec: ColumnSpec) -> pa.ChunkedArray:
    cells = pa.table({"v": pa.array(values, pa.string())})  # noqa: F841 - read by DuckDB
    return DB.sql(f"SELECT {_typed('v', spec)} AS t FROM cells").to_arrow_table()["t"]


NUMBERS = st.lists(st.text("0123456789.+-e ", min_size=1, max_size=7), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(values=NUMBERS, scale=st.sampled_from([0, 2]))
@example(values=["1.", "+.5", "-0", "12.34"], scale=2)
@example(values=["5."], scale=0)
@example(values=["1.230"], scale=2)
def test_a_plain_decimal_is_read_as_the_reference_reads_it(values: list[str], scale: int) -> None:
    spec = ColumnSpec(type=f"decimal(6,{scale})")
    typed = plain_decimal(pa.chunked_array([values], pa.string()), 6, scale)
    expected = reference(values, spec).to_pylist()
    if typed is not None:
        assert typed.to_pylist() == expected
    elif all(value is not None for value in expected) and not any(set(v) & set("+-") for v in values):
        pytest.fail(f"every value is valid, yet the check declined: {values}")


STAMPS = st.lists(st.builds(
    "{}-{}-{} {}:{}:{}".format, st.sampled_from(["2024", "2023", "0000", "1900", "2000", "202a"]),
    st.sampled_from(["01", "02", "12", "13", "00", "1"]), st.sampled_from(["01", "28", "29", "30", "31"]),
    st.sampled_from(["00", "23", "24"]), st.sampled_from(["00", "59", "60"]),
    st.sampled_from(["00", "59", "60", "5"])), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(values=STAMPS)
def test_a_shaped_timestamp_is_read_as_strptime_reads_it(values: list[str]) -> None:
    fmt = "%Y-%m-%d %H:%M:%S"
    typed = shaped_datetime(pa.chunked_array([values], pa.string()), fmt, pa.timestamp("us"))
    expected = reference(values, ColumnSpec(type="timestamp", format=fmt))
    if typed is not None:
        assert typed.equals(expected.cast(pa.timestamp("us")))
    elif expected.null_count == 0 and all(len(v) == 19 and v[:4] != "0000" for v in values):
        pytest.fail(f"every value is valid, yet the check declined: {values}")


def test_a_date_shape_and_an_unknown_format_are_told_apart() -> None:
    dates = pa.chunked_array([["2024-02-29", "2024-12-31"]], pa.string())
    assert shaped_datetime(dates, "%Y-%m-%d", pa.date32()).equals(reference(
        dates.to_pylist(), ColumnSpec(type="date", format="%Y-%m-%d")))
    assert shaped_datetime(dates, "%d/%m/%Y", pa.date32()) is None
    assert shaped_datetime(pa.chunked_array([["2023-02-29"]]), "%Y-%m-%d", pa.date32()) is None


PATTERNS = ["^SKU-[0-9]{6}$", "[A-Z]{2}-\\d{3}", "^AB_[a-z]{2}[A-Za-z0-9]$", "x\\.y"]
CELLS = st.lists(st.text("SKU-0123456789ABabxy._\n é", min_size=0, max_size=11), min_size=1,
                 max_size=6)


@settings(max_examples=150, deadline=None)
@given(values=CELLS, pattern=st.sampled_from(PATTERNS))
@example(values=["SKU-123456", "SKU-000000"], pattern=PATTERNS[0])
def test_a_fixed_width_pattern_matches_as_the_regular_expression_does(values: list[str],
                                                                     pattern: str) -> None:
    classes = fixed_width(pattern)
    assert classes is not None
    matched = DB.execute("SELECT bool_and(regexp_full_match(v, ?)) FROM unnest(?) AS t(v)",
                         [pattern, values]).fetchone()[0]
    assert all_fixed_width(pa.chunked_array([values], pa.string()), classes) == matched


@pytest.mark.parametrize("pattern", ["^SKU-[0-9]+$", "a|b", "[0-9]{2,3}", "a.c", "(ab){2}",
                                     "[^0-9]", "(?i)abc", "\\w{3}", "a?", "abc\\$"])
def test_other_patterns_are_left_to_the_regular_expression_engine(pattern: str) -> None:
    assert fixed_width(pattern) is None


def test_a_column_with_nulls_is_left_to_the_general_route() -> None:
    text = pa.chunked_array([["1.5", None]], pa.string())
    assert plain_decimal(text, 6, 2) is None
    assert all_fixed_width(text, [b"1"]) is None
