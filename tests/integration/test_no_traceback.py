"""No traceback ever reaches a user: a corpus of bad inputs and environments run through
the real CLI in subprocesses. Each ends with its documented exit code and one line on
stderr that names the thing (file, key, run, directory); no output holds "Traceback".

Most cases fail before Ray starts; the full-disk cases mount a tiny tmpfs (root only) and
run for real."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_ENVIRONMENT, EXIT_INTERNAL, EXIT_USAGE
from batchrun.model import RunRecord, RunState
from batchrun.tools.demo import DemoSpec, DemoTruth, generate


@dataclass(frozen=True)
class Case:
    args: list[str]
    code: int
    names: list[str]
    """Texts the one-line message must contain (the file, key, run or directory)."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoTruth]:
    out = tmp_path_factory.mktemp("corpus-data")
    return out, generate(DemoSpec(out_dir=out, suppliers=2, files_per_supplier=2,
                                  file_bytes=20_000, seed=3))


def job_file(directory: Path, data_dir: Path, *, table: str = "orders", paths: str = "",
             extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "job.toml"
    path.write_text(f"""
[job]
name = "corpus"
table = "{table}"
[source]
paths = [{paths or repr(str(data_dir) + "/*/*.csv")}]
[batch]
max_files = 1
[validation]
on_unknown_columns = "ignore"
{extra}
[schema.columns]
order_id = {{ type = "int64", required = true }}
supplier_id = {{ type = "string" }}
""")
    return path


def a_run_in(state: Path, run_id: str = "20250101-000000-abcd") -> str:
    """A recorded run (no Ray needed) for the commands that read one."""
    catalog = Catalog(state)
    catalog.create_run(RunRecord(
        run_id=run_id, job="corpus", table="orders", job_file="job.toml", staging_dir=str(state),
        config={}, schema={"order_id": "int64"}, state=RunState.FAILED, pid=None, host=None,
        created_at=1.0, started_at=None, finished_at=None, message=None), [])
    catalog.close()
    return run_id


def corrupt(catalog_file: Path) -> None:
    """Checkpoint the WAL into the file, then overwrite every page but the first."""
    db = sqlite3.connect(catalog_file)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    content = bytearray(catalog_file.read_bytes())
    content[4096:] = b"\xa5" * (len(content) - 4096)
    catalog_file.write_bytes(bytes(content))


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchrun", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def assert_one_honest_line(result: subprocess.CompletedProcess[str], case: Case) -> None:
    shown = f"{case.args}: exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr, shown
    assert result.returncode == case.code, shown
    message = result.stderr.strip()
    assert message and "\n" not in message, shown
    for name in case.names:
        assert name in message, shown


# -- cases that fail before Ray starts ------------------------------------------------------------


def quick_cases(tmp: Path, data_dir: Path) -> dict[str, Case]:
    good = job_file(tmp / "good", data_dir)
    state = tmp / "state"
    run_id = a_run_in(state)
    broken = tmp / "broken-state"
    a_run_in(broken)
    corrupt(broken / "catalog.sqlite")
    (tmp / "bad.toml").write_text("[job\nname = 1")
    (tmp / "badkey.toml").write_text(good.read_text().replace("[batch]", "[batch]\nmax_filez = 1"))
    (tmp / "a-file").write_text("not a directory")
    (tmp / "empty-state").mkdir()
    (tmp / "dir.toml").mkdir()
    huge = "t" * 10_000
    return {
        "missing job file": Case(["run", tmp / "nope.toml"], EXIT_USAGE,
                                 [str(tmp / "nope.toml"), "job file not found"]),
        "job file is a directory": Case(["run", tmp / "dir.toml"], EXIT_USAGE,
                                        [str(tmp / "dir.toml"), "directory"]),
        "bad TOML": Case(["run", tmp / "bad.toml"], EXIT_USAGE, ["bad.toml", "not valid TOML"]),
        "unknown key": Case(["run", tmp / "badkey.toml"], EXIT_USAGE,
                            ["badkey.toml", "batch.max_filez", "unknown key"]),
        "huge table name": Case(["run", good, "--set", f'job.table="{huge}"'], EXIT_USAGE,
                                ["job.table", "at most 64 characters"]),
        "huge job name": Case(["run", good, "--set", f'job.name="{huge}"'], EXIT_USAGE,
                              ["job.name", "at most 64 characters"]),
        "bad --set": Case(["run", good, "--set", "novalue"], EXIT_USAGE, ["--set", "novalue"]),
        "unknown run id": Case(["status", "no-such-run", "--state-dir", state], EXIT_USAGE,
                               ["no-such-run", str(state)]),
        "unknown run id to resume": Case(["resume", "no-such-run", "--state-dir", state],
                                         EXIT_USAGE, ["no-such-run"]),
        "unknown run id to query": Case(["query", "SELECT 1", "--run", "no-such-run",
                                         "--state-dir", state], EXIT_USAGE, ["no-such-run"]),
        "unknown batch to logs": Case(["logs", run_id, "--batch", "b99999-nope", "--state-dir",
                                       state], EXIT_USAGE, [run_id, "no batch 'b99999-nope'"]),
        "missing state dir": Case(["status", "--state-dir", tmp / "nowhere"], EXIT_USAGE,
                                  [str(tmp / "nowhere"), "no runs"]),
        "empty state dir": Case(["runs", "--state-dir", tmp / "empty-state"], EXIT_USAGE,
                                [str(tmp / "empty-state"), "no runs"]),
        "state dir is a file": Case(["run", good, "--state-dir", tmp / "a-file"],
                                    EXIT_USAGE, [str(tmp / "a-file"), "is a file"]),
        "state dir under a file": Case(["run", good, "--state-dir", tmp / "a-file" / "state"],
                                       EXIT_ENVIRONMENT, [str(tmp / "a-file" / "state"),
                                                          "cannot be created: Not a directory"]),
        "corrupt catalog, status": Case(["status", "--state-dir", broken], EXIT_ENVIRONMENT,
                                        [str(broken / "catalog.sqlite"), "damaged"]),
        "corrupt catalog, runs": Case(["runs", "--state-dir", broken], EXIT_ENVIRONMENT,
                                      [str(broken / "catalog.sqlite"), "damaged"]),
        "corrupt catalog, run": Case(["run", good, "--state-dir", broken], EXIT_ENVIRONMENT,
                                     [str(broken / "catalog.sqlite")]),
        "resume changing the schema": Case(
            ["resume", run_id, "--state-dir", state, "--set",
             'schema.columns.order_id.type="string"'], EXIT_USAGE,
            ["schema.columns.order_id.type", "cannot change on resume"]),
    }


def test_bad_inputs_and_environments_end_in_one_line_and_a_named_exit_code(
        tmp_path: Path, data: tuple[Path, DemoTruth]) -> None:
    for name, case in quick_cases(tmp_path, data[0]).items():
        assert_one_honest_line(cli(*case.args), case), name
    assert not (tmp_path / "nowhere").exists()  # a read-only command created nothing


# -- cases that start Ray ---------------------------------------------------------------------------


@contextmanager
def tiny_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs to fill a disk for real: "
                    f"{mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_globs_that_match_nothing_exit_2_naming_the_patterns(
        tmp_path: Path, data: tuple[Path, DemoTruth]) -> None:
    job = job_file(tmp_path, data[0], paths='"nothing/*.csv"')
    case = Case(["run", job, "--state-dir", tmp_path / "state"], EXIT_USAGE,
                ["nothing/*.csv", "no files match"])
    assert_one_honest_line(cli(*case.args), case)


def test_a_custom_reader_failing_on_every_sampled_file_is_a_config_error_naming_them(
        tmp_path: Path, data: tuple[Path, DemoTruth]) -> None:
    (tmp_path / "broken_reader.py").write_text("def read(path):\n    return 1 / 0\n")
    job = job_file(tmp_path, data[0], extra="")
    job.write_text(job.read_text().replace("[batch]", 'reader = "broken_reader:read"\n[batch]')
                   .split("[schema.columns]")[0])
    case = Case(["run", job, "--state-dir", tmp_path / "state"], EXIT_USAGE,
                ["cannot infer the columns", "orders_0000.csv", "ZeroDivisionError"])
    assert_one_honest_line(cli(*case.args), case)


def test_an_unexpected_exception_is_one_line_exit_70_with_its_traceback_in_a_log(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The last resort in `cli.invoke`: a command that fails in a way nobody foresaw."""
    import click

    from batchrun import cli as cli_module

    state = tmp_path / "state"
    state.mkdir()

    @click.command(name="explode")
    @cli_module.state_dir_option
    def explode(state_dir: Path) -> None:
        raise ZeroDivisionError("division by zero")

    cli_module.cli.add_command(explode)
    try:
        code = cli_module.invoke(["explode", "--state-dir", str(state)])
    finally:
        cli_module.cli.commands.pop("explode")
    log = state / "logs" / "batchrun-internal.log"
    message = capsys.readouterr().err.strip()
    assert code == EXIT_INTERNAL
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("internal error: ZeroDivisionError: division by zero")
    assert f"(log: {log})" in message
    assert "Traceback" in log.read_text() and "explode" in log.read_text()
    assert (log.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize(("where", "size"), [("staging", "24k"), ("staging", "4k"),
                                             ("state", "100k"), ("state", "8k")])
def test_a_full_disk_is_exit_4_naming_the_full_directory(
        tmp_path: Path, data: tuple[Path, DemoTruth], where: str, size: str) -> None:
    """24k: the Parquet files fit, staging.duckdb does not; 4k: no Parquet file fits.
    100k: the catalog opens, the plan does not fit; 8k: the catalog cannot even open."""
    job = job_file(tmp_path / "job", data[0])
    with tiny_tmpfs(tmp_path / where, size) as full:
        case = Case(["run", job, "--state-dir", tmp_path / "state", "--staging-dir",
                     tmp_path / "staging", "--no-progress"], EXIT_ENVIRONMENT,
                    [f"{where} dir {full} is full: No space left on device"])
        assert_one_honest_line(cli(*case.args), case)
        assert list(full.glob(".staging.duckdb*")) == []  # no temporary file left
