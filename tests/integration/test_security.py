"""Security: SQL built from job files is quoted, credentials never reach the catalog, logs
or output, the state dir is private, and `query` is confined to the run's staged files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_ENVIRONMENT, EXIT_OK, EXIT_USAGE, invoke
from batchrun.redact import MASK, redact
from batchrun.staging import query_connection, quote_identifier, staged_files
from tests.conftest import parse_json

QUOTED_NAMES = ["a'b", "k' || version() || '"]
"""Unique-column names that broke (a'b) or injected SQL into (version()) the unique pass."""


def unique_job(tmp_path: Path, key: str) -> Path:
    """Two files, two batches; the key column repeats across and within files."""
    key_toml = json.dumps(key)  # a TOML basic string is a JSON string
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "1.csv").write_text(f"{key},note\n1,a\n2,b\n1,dup in file\n")
    (tmp_path / "in" / "2.csv").write_text(f"{key},note\n3,c\n2,dup across files\n4,d\n")
    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
name = "quoted"
table = "orders"
[source]
paths = ["in/*.csv"]
[batch]
max_files = 1
[execution]
workers = 2
[schema.columns]
{key_toml} = {{ type = "int64", required = true, unique = true }}
note = {{ type = "string" }}
""")
    return job


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("key", QUOTED_NAMES)
def test_a_unique_column_named_with_quotes_is_checked_and_never_executed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str) -> None:
    job = unique_job(tmp_path, key)
    state = tmp_path / "s"
    code = invoke(["run", str(job), "--state-dir", str(state), "--json", "--no-progress"])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert parse_json(captured.out)["rows"] == {"staged": 4, "rejected": 2}
    assert invoke(["rejects", "--state-dir", str(state), "--json", "--rule", "unique"]) == EXIT_OK
    found = parse_json(capsys.readouterr().out)
    assert [(Path(r["file"]).name, r["line"], r["column"], r["value"]) for r in found] == [
        ("1.csv", 4, key, "1"), ("2.csv", 3, key, "2")]
    column = quote_identifier(key)
    catalog = Catalog(state)
    record = catalog.run(catalog.latest_run_id())
    db = query_connection(record.table, record.schema or {}, catalog.committed(record.run_id))
    counted = db.execute(f"SELECT count(*), count(DISTINCT {column}) FROM orders").fetchone()
    assert counted == (4, 4)
    on_disk = {str(p) for p in staged_files(Path(record.staging_dir), record.table, record.run_id)}
    assert on_disk == catalog.committed(record.run_id).paths


# -- credentials ------------------------------------------------------------------------------

SECRET_ADDRESS = "ray://user:s3cr3t@127.0.0.1:1?token=abc"


@pytest.mark.parametrize(("text", "expected"), [
    ("ray://user:s3cr3t@host:10001", f"ray://user:{MASK}@host:10001"),
    ("cannot reach Ray at ray://u:p@ss@10.0.0.1:1: refused",
     f"cannot reach Ray at ray://u:{MASK}@10.0.0.1:1: refused"),
    ("s3://bucket/k?X-Amz-Signature=abc&X-Amz-Credential=AK%2F1&part=2",
     f"s3://bucket/k?X-Amz-Signature={MASK}&X-Amz-Credential={MASK}&part=2"),
    ("https://h/x?api_key=1;sig=2#f", f"https://h/x?api_key={MASK};sig={MASK}#f"),
    ('{"address": "ray://a:b@h:1?password=c"}', f'{{"address": "ray://a:{MASK}@h:1?password={MASK}"}}'),
    ("ray://user@host:1 and 127.0.0.1:6379, auto", "ray://user@host:1 and 127.0.0.1:6379, auto"),
    ("ray://alice@corp.com:Secret1@127.0.0.1:1", f"ray://alice@corp.com:{MASK}@127.0.0.1:1"),
    ("ray://alice:Sec/r#e?t2@127.0.0.1:1", f"ray://alice:{MASK}@127.0.0.1:1"),
    ("s3://AKIA:wJalr/XUt@bucket/key", f"s3://AKIA:{MASK}@bucket/key"),
    ("x?token='abc'&a=1", f"x?token='{MASK}'&a=1"),
])
def test_credentials_in_uris_are_masked_and_the_rest_is_kept(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "batchrun", *map(str, args)],
                          capture_output=True, timeout=180)


def every_byte_under(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def test_a_cluster_password_and_token_never_reach_the_catalog_logs_or_output(
        tmp_path: Path) -> None:
    job = unique_job(tmp_path, "order_id")
    state = tmp_path / "s"
    failed = run_cli("run", job, "--address", SECRET_ADDRESS, "--state-dir", state,
                     "--no-progress")
    assert failed.returncode == EXIT_ENVIRONMENT, failed.stderr
    assert b"cannot reach Ray at ray://user:" in failed.stderr
    shown = run_cli("status", "--state-dir", state, "--json")
    listed = run_cli("runs", "--state-dir", state, "--json")
    again = run_cli("resume", "--state-dir", state, "--address", SECRET_ADDRESS)
    assert again.returncode == EXIT_ENVIRONMENT and b"Connection refused" in again.stderr
    assert json.loads(shown.stdout)["message"].startswith("cannot reach Ray at ray://user:***@")
    assert (state / "logs").is_dir() or (state / "catalog.sqlite").is_file()
    written = every_byte_under(state)
    printed = b"".join(p.stdout + p.stderr for p in (failed, shown, listed, again))
    for secret in (b"s3cr3t", b"token=abc"):
        assert secret not in written, f"{secret!r} stored in the state dir"
        assert secret not in printed, f"{secret!r} printed"


def test_a_password_after_an_at_sign_user_or_with_a_slash_is_never_printed_or_stored(
        tmp_path: Path) -> None:
    """Found by the adversarial pass: the user-info runs to the last '@'."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,v\n1,a\n")
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "j"\ntable = "t"\n[source]\npaths = ["in/*.csv"]\n')
    state = tmp_path / "state"
    for address, secret in (("ray://alice@corp.com:Secret1@127.0.0.1:1", b"Secret1"),
                            ("ray://alice:Sec/ret2@127.0.0.1:1", b"Sec/ret2")):
        done = run_cli("run", job, "--state-dir", state, "--no-progress", "--address", address)
        assert done.returncode == EXIT_ENVIRONMENT  # unreachable: nothing staged
        assert secret not in done.stdout + done.stderr + every_byte_under(state)


def test_a_run_whose_address_was_masked_asks_for_the_address_on_resume(tmp_path: Path) -> None:
    job = unique_job(tmp_path, "order_id")
    state = tmp_path / "s"
    assert run_cli("run", job, "--address", SECRET_ADDRESS, "--state-dir", state,
                   "--no-progress").returncode == EXIT_ENVIRONMENT
    resumed = run_cli("resume", "--state-dir", state)
    assert resumed.returncode == EXIT_USAGE
    assert b"--address" in resumed.stderr and b"Traceback" not in resumed.stderr
    assert len(resumed.stderr.decode().strip().splitlines()) == 1


# -- file modes -------------------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


@pytest.mark.usefixtures("ray_session")
def test_the_state_dir_and_everything_in_it_is_private_whatever_the_umask(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], umask: int) -> None:
    job = unique_job(tmp_path, "order_id")
    state = tmp_path / "s"
    assert invoke(["run", str(job), "--state-dir", str(state), "--no-progress"]) == EXIT_OK
    catalog = Catalog(state)
    assert catalog.counts(catalog.latest_run_id()).rows.staged == 4
    catalog.close()
    paths = [state, *state.rglob("*")]
    names = {p.relative_to(state).as_posix() for p in paths}
    assert {"catalog.sqlite", "logs", "locks", "locks/quoted.lock"} <= names
    assert any(n.startswith("logs/") and n.endswith(".log") for n in names)
    modes = {p.relative_to(state).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert modes == {n: 0o700 if (state / n).is_dir() else 0o600 for n in modes}


# -- query ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> Path:
    """One finished run (4 rows staged, 2 unique rejects) for every query test."""
    folder = tmp_path_factory.mktemp("staged")
    job = unique_job(folder, "order_id")
    state = folder / "s"
    assert invoke(["run", str(job), "--state-dir", str(state), "--no-progress"]) == EXIT_OK
    return state


@pytest.fixture
def staged(staged_run: Path, monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str]) -> Path:
    """The finished run's state dir; the current dir is its parent."""
    monkeypatch.chdir(staged_run.parent)
    capsys.readouterr()
    return staged_run


def query(state: Path, capsys: pytest.CaptureFixture[str], sql: str, *flags: str
          ) -> tuple[int, str, str]:
    code = invoke(["query", "--state-dir", str(state), "--format", "json", *flags, sql])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_query_reads_the_staged_table_and_rejects_views(
        staged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = query(staged, capsys, "SELECT count(*) AS n, count(DISTINCT order_id) AS d"
                                           " FROM orders")
    assert code == EXIT_OK, err
    assert parse_json(out) == [{"n": 4, "d": 4}]
    code, out, _ = query(staged, capsys, "SELECT rule, count(*) AS n FROM orders__rejects GROUP BY rule")
    assert code == EXIT_OK and parse_json(out) == [{"rule": "unique", "n": 2}]
    assert invoke(["rejects", "--state-dir", str(staged), "--json"]) == EXIT_OK
    assert len(parse_json(capsys.readouterr().out)) == 2


@pytest.mark.parametrize("sql", [
    "COPY (SELECT 1) TO 'x.csv'",
    "EXPORT DATABASE 'x.csv'",
    "ATTACH 'x.csv' AS other",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO 'x.csv'",
    "SELECT 1; COPY (SELECT 1) TO 'x.csv'",
])
def test_query_refuses_to_write_files(
        staged: Path, capsys: pytest.CaptureFixture[str], sql: str) -> None:
    code, out, err = query(staged, capsys, sql)
    assert code == EXIT_USAGE
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (staged.parent / "x.csv").exists()


def test_query_cannot_overwrite_a_committed_parquet_file(
        staged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = Catalog(staged)
    target = catalog.committed(catalog.latest_run_id()).outputs[0]
    before = Path(target).read_bytes()
    for sql in (f"COPY (SELECT 42 AS order_id) TO '{target}' (FORMAT parquet, USE_TMP_FILE false)",
                f"COPY (SELECT 42 AS order_id) TO '{target}' (FORMAT parquet)"):
        code, _, err = query(staged, capsys, sql)
        assert code == EXIT_USAGE, err
    assert Path(target).read_bytes() == before
    code, out, _ = query(staged, capsys, "SELECT count(*) AS n FROM orders")
    assert parse_json(out) == [{"n": 4}]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_csv('https://example.com/x.csv')",
    "SET enable_external_access = true",
    "RESET enable_external_access",
    "SET lock_configuration = false",
    "SET autoinstall_known_extensions = true",
    "INSTALL httpfs",
    "LOAD httpfs",
])
def test_query_cannot_read_outside_staging_or_lift_its_limits(
        staged: Path, capsys: pytest.CaptureFixture[str], sql: str) -> None:
    code, out, err = query(staged, capsys, sql)
    assert code == EXIT_USAGE, out
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_query_cannot_reach_other_files_through_a_committed_path(
        staged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = Catalog(staged)
    target = catalog.committed(catalog.latest_run_id()).outputs[0]
    code, _, _ = query(staged, capsys, f"SELECT * FROM read_text('{target}/../../../../../etc/passwd')")
    assert code == EXIT_USAGE


def test_unsafe_query_may_write_files(staged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sql = "COPY (SELECT order_id FROM orders) TO 'unsafe.csv'"
    code, _, err = query(staged, capsys, sql, "--unsafe")
    assert code == EXIT_OK, err
    assert (staged.parent / "unsafe.csv").read_text().splitlines() == ["order_id", "1", "2", "3", "4"]
