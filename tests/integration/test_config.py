"""Job files: valid ones load with defaults; bad ones fail with file, key and expectation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from batchrun.cli import EXIT_USAGE, invoke
from batchrun.config import load_job, parse_duration, parse_size, set_dotted, validate_config
from batchrun.errors import ConfigError
from batchrun.execution.settings import resolve_settings
from tests.conftest import DEMO_JOB, table_rows

MINIMAL = '[job]\nname = "j"\ntable = "t"\n[source]\npaths = ["*.csv"]\n'


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(body)
    return path


def test_demo_job_loads_with_paths_resolved_against_its_folder() -> None:
    job = load_job(DEMO_JOB)
    assert job.name == "supplier_orders" and job.table == "orders"
    assert job.staging_dir == DEMO_JOB.parent / "staging"
    assert list(job.config.schema_.columns)[0] == "order_id"  # type: ignore[union-attr]


def test_defaults_fill_every_optional_section(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, MINIMAL))
    assert job.config.batch.max_files == 500
    assert job.config.batch.max_bytes == 256_000_000
    assert job.config.execution.workers == 2 and resolve_settings(job.config).max_in_flight == 4


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, MINIMAL), {"execution.workers": 5})
    assert job.config.execution.workers == 5


@pytest.mark.parametrize(("body", "key", "expected"), [
    ('[job]\nname = "j"\n[source]\npaths = ["*.csv"]\n', "job.table", "missing required key"),
    (MINIMAL + "[batch]\nmax_filez = 3\n", "batch.max_filez", "unknown key"),
    (MINIMAL + '[batch]\nmax_files = "many"\n', "batch.max_files", "valid integer"),
    (MINIMAL + '[batch]\nmax_bytes = "12XB"\n', "batch.max_bytes", "size"),
    (MINIMAL + '[schema.columns]\na = { type = "int" }\n', "schema.columns.a.type", "int64"),
    (MINIMAL + '[execution]\nworkers = 0\n', "execution.workers", "greater than or equal"),
    (MINIMAL.replace('"t"', '"bad-name"'), "job.table", "pattern"),
    (MINIMAL + '[source.csv]\nheader = "yes please"\n', "source.csv.header", "boolean"),
])
def test_bad_job_file_names_file_key_and_expectation(tmp_path: Path, body: str, key: str,
                                                     expected: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_job(path)
    message = str(caught.value)
    assert str(path) in message and key in message and expected in message
    assert "\n" not in message


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_job(write(tmp_path, "[job\nname="))


@pytest.mark.parametrize(("body", "needle"), [
    ('[job]\nname = "j"\n[source]\npaths = ["*.csv"]\n', "job.table: missing required key"),
    (MINIMAL + "surprise = 1\n", "source.surprise: unknown key"),
    (MINIMAL + "[execution]\nworkers = \"two\"\n", "execution.workers"),
    (MINIMAL, "source.paths: no files match"),
])
def test_cli_refuses_bad_job_files_with_exit_2(tmp_path: Path, body: str, needle: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, body)
    code = invoke(["run", str(path), "--state-dir", str(tmp_path / "state")])
    assert code == EXIT_USAGE
    error = capsys.readouterr().err
    assert needle in error and str(path) in error
    assert not (tmp_path / "state" / "catalog.sqlite").exists() or "no files" in needle


def test_cli_missing_job_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(["run", str(tmp_path / "nope.toml"), "--state-dir", str(tmp_path)]) == EXIT_USAGE
    assert "job file not found" in capsys.readouterr().err


def test_sizes_and_durations_parse() -> None:
    assert parse_size("256MB") == 256_000_000 and parse_size("1GiB") == 2**30
    assert parse_size(1024) == 1024
    assert parse_duration("200ms") == pytest.approx(0.2) and parse_duration("2m") == 120
    with pytest.raises(ValueError):
        parse_size("-3MB")


@pytest.mark.parametrize("name", ["demo.toml", "nightly.toml", "cluster.toml"])
def test_every_shipped_job_file_is_valid(name: str) -> None:
    job = load_job(DEMO_JOB.parent / name)
    assert job.config.schema_ is not None and "order_id" in job.config.schema_.columns


def test_contention_controls_parse_with_units_and_defaults(tmp_path: Path) -> None:
    execution = load_job(write(tmp_path, MINIMAL)).config.execution
    assert (execution.mode, execution.per_source_concurrency, execution.stagger) == ("parallel", 3, 0.0)
    assert execution.circuit_breaker.failures == 3 and execution.max_bytes_in_flight is None
    body = MINIMAL + ('[execution]\nper_source_concurrency = "unlimited"\nstagger = "200ms"\n'
                      'rate_limit = "90/m"\nmax_bytes_in_flight = "1GB"\n'
                      'circuit_breaker = { failures = 5, cooldown = "1m" }\n')
    execution = load_job(write(tmp_path, body)).config.execution
    assert execution.per_source_concurrency is None and execution.stagger == 0.2
    assert execution.rate_limit == 1.5 and execution.max_bytes_in_flight == 10**9
    assert execution.circuit_breaker.cooldown == 60.0


@pytest.mark.parametrize(("section", "key"), [
    ('[execution]\nper_source_concurrency = 0', "execution.per_source_concurrency"),
    ('[execution]\nrate_limit = "3 per second"', "execution.rate_limit"),
    ('[execution]\nstagger = "soon"', "execution.stagger"),
    ('[execution]\nmode = "hybrid"', "execution.mode"),
    ('[execution]\ncircuit_breaker = { failures = -1 }', "execution.circuit_breaker.failures"),
    ('[execution]\nmax_bytes_in_flight = "lots"', "execution.max_bytes_in_flight"),
])
def test_bad_contention_controls_name_their_key(tmp_path: Path, section: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_job(write(tmp_path, MINIMAL + section + "\n"))
    assert f": {key}:" in str(raised.value) or key in str(raised.value)


@pytest.mark.parametrize("group_by", ["(unclosed", "supplier_[0-9]+"])
def test_group_by_must_be_a_regex_with_a_named_group(tmp_path: Path, group_by: str) -> None:
    body = MINIMAL.replace('paths = ["*.csv"]', f'paths = ["*.csv"]\ngroup_by = {group_by!r}')
    with pytest.raises(ConfigError, match="source.group_by"):
        load_job(write(tmp_path, body))


def test_a_group_by_pattern_that_misses_a_file_names_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.csv").write_text("x\n1\n")
    job = write(tmp_path, MINIMAL.replace('paths = ["*.csv"]',
                                          'paths = ["*.csv"]\ngroup_by = "/(?P<s>zz)"'))
    assert invoke(["run", str(job), "--state-dir", str(tmp_path / "s")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "source.group_by" in err and "a.csv" in err


def test_set_needs_key_equals_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = write(tmp_path, MINIMAL)
    assert invoke(["run", str(job), "--set", "execution.workers"]) == EXIT_USAGE
    assert "KEY=VALUE" in capsys.readouterr().err
    assert invoke(["run", str(job), "--set", "execution.workers=0"]) == EXIT_USAGE
    assert "execution.workers" in capsys.readouterr().err


@pytest.mark.parametrize(("key", "text", "expected"), [
    ("stagger", "0.2", 0.2), ("stagger", "200ms", 0.2), ("rate_limit", "2.5", 2.5),
    ("rate_limit", "3/s", 3.0), ("circuit_breaker.cooldown", "1.5", 1.5),
])
def test_plain_numbers_from_the_command_line_are_seconds_or_per_second(
        key: str, text: str, expected: float) -> None:
    raw: dict[str, Any] = {"job": {"name": "j", "table": "t"}, "source": {"paths": ["*.csv"]}}
    set_dotted(raw, f"execution.{key}", text)
    execution = validate_config(raw, "--set").execution
    value = (execution.circuit_breaker.cooldown if key == "circuit_breaker.cooldown"
             else getattr(execution, key))
    assert value == pytest.approx(expected)


def _cli_process(*args: str | Path, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
    """One real `batchrun` command in a subprocess; stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", "batchrun", *map(str, args)],
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})},
                          capture_output=True, text=True, timeout=300, check=False)


def test_resume_refuses_a_schema_override_spelled_by_its_field_name(tmp_path: Path) -> None:
    for folder, rows in (("a", "1,a\n2,b\n"), ("b", "3,c\n4,d\n")):
        (tmp_path / "in" / folder).mkdir(parents=True)
        (tmp_path / "in" / folder / "x.csv").write_text("id,v\n" + rows)
    job = write(tmp_path, '[job]\nname = "j"\ntable = "t"\n[source]\npaths = ["in/*/*.csv"]\n'
                '[batch]\nmax_files = 1\n[execution]\nmode = "sequential"\n')
    state = tmp_path / "state"
    killed = _cli_process("run", job, "--state-dir", state, "--no-progress",
                          env={"BATCHRUN_FAULTS": 'kill_driver = "after_commit", kill_driver_after = 1'})
    assert killed.returncode != 0
    resumed = _cli_process("resume", "--state-dir", state, "--no-progress", "--set",
                           'schema_={columns={id={type="string"},v={type="string"}}}')
    if resumed.returncode != 2:  # accepted: finish the run, then show the damage
        staged = sorted((tmp_path / "staging" / "t").glob("part-*/*.parquet"))
        types = {str(pq.read_schema(path).field("id").type) for path in staged}
        assert types == {"int64"}, f"one column, two types in one run: {types}"
    assert resumed.returncode == 2, resumed.stderr
    assert _cli_process("resume", "--state-dir", state, "--no-progress").returncode == 0
    assert table_rows(state, "SELECT count(*), count(DISTINCT id) FROM t") == [(4, 4)]


def test_a_set_of_schema_spelled_by_its_field_name_sets_the_schema(tmp_path: Path) -> None:
    job = write(tmp_path, MINIMAL + '[schema.columns]\nid = { type = "int64" }\n')
    loaded = load_job(job, {"schema_.columns.id.type": "string"})
    assert loaded.config.schema_ is not None
    assert loaded.config.schema_.columns["id"].type == "string"


def test_a_schema_given_under_both_spellings_names_both(tmp_path: Path) -> None:
    job = write(tmp_path, MINIMAL + '[schema.columns]\nid = { type = "int64" }\n'
                '[schema_.columns]\nid = { type = "string" }\n')
    with pytest.raises(ConfigError, match="schema_: the same section as schema: give it once"):
        load_job(job)


def test_resume_compares_what_is_staged_not_how_the_key_is_spelled() -> None:
    from batchrun.execution.start import refuse_staged_difference

    stored = validate_config({"job": {"name": "j", "table": "t"},
                              "source": {"paths": ["*.csv"]}}, "stored")
    same = validate_config({**stored.model_dump(by_alias=True), "execution": {"workers": 8}}, "x")
    refuse_staged_difference("r1", stored, same)  # execution may change
    changed = validate_config({**stored.model_dump(by_alias=True),
                               "schema": {"columns": {"id": {"type": "int64"}}}}, "x")
    with pytest.raises(ConfigError, match="schema: cannot change on resume"):
        refuse_staged_difference("r1", stored, changed)
