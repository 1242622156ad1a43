"""Loading a job file is pure; what needs the world is checked when a run starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from batchrun.config import load_job
from batchrun.errors import ConfigError
from batchrun.execution.prepare import check_job
from batchrun.tools.faults import FAULTS_ENV

MINIMAL = '[job]\nname = "j"\ntable = "t"\n[source]\npaths = ["*.csv"]\n'
LOUD_STEP = """
from pathlib import Path
Path(__file__).with_name("imported.txt").write_text("imported")

def transform(table):
    return table
"""


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(body)
    return path


def test_loading_a_job_never_imports_its_custom_steps_and_the_run_start_check_does(
        tmp_path: Path) -> None:
    (tmp_path / "loud_step_module.py").write_text(LOUD_STEP)
    job = load_job(write(tmp_path, MINIMAL + '[transform]\nfunction = "loud_step_module:transform"\n'))
    assert "loud_step_module" not in sys.modules
    assert not (tmp_path / "imported.txt").exists()
    check_job(job)
    assert (tmp_path / "imported.txt").read_text() == "imported"
    sys.modules.pop("loud_step_module", None)


def test_a_custom_reader_that_cannot_import_loads_and_fails_the_run_start_check(
        tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('paths = ["*.csv"]',
                                           'paths = ["*.csv"]\nreader = "no_such_module:read"'))
    job = load_job(path)
    with pytest.raises(ConfigError) as raised:
        check_job(job)
    message = str(raised.value)
    assert str(path) in message and "source.reader: cannot import no_such_module:read" in message
    assert "\n" not in message


def test_loading_a_job_ignores_the_fault_environment_and_the_run_start_check_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "read_error_rate = 7")
    job = load_job(write(tmp_path, MINIMAL))
    with pytest.raises(ConfigError, match=r"job\.toml: faults: "):
        check_job(job)
    monkeypatch.delenv(FAULTS_ENV)
    check_job(job)


def test_a_pattern_duckdb_refuses_loads_and_fails_the_run_start_check(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, MINIMAL + "[schema.columns]\ns = { type = \"string\","
                                             " pattern = '(a)\\1' }\n"))
    with pytest.raises(ConfigError, match="schema.columns.s.pattern: not a regular expression RE2"):
        check_job(job)


def test_the_job_model_imports_neither_duckdb_nor_validation_nor_fault_injection() -> None:
    probe = ("import json, sys; import batchrun.config; print(json.dumps(sorted(m for m in "
             "sys.modules if m == 'duckdb' or m.startswith('batchrun'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = set(json.loads(done.stdout))
    assert not loaded & {"duckdb", "batchrun.validate", "batchrun.tools.faults",
                         "batchrun.execution.prepare"}


def test_a_run_start_error_names_the_job_file_as_it_was_given_like_a_load_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, MINIMAL + '[transform]\nfunction = "no_such_module:f"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        check_job(load_job("job.toml"))
    assert str(raised.value).startswith("job.toml: transform.function: cannot import")
