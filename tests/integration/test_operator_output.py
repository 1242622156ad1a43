"""What the operator sees and keeps: the display without a terminal (cron) and under a real
pseudo-terminal, hints that work when pasted into a shell, the run log as JSON lines,
`batchrun logs`, and the Prometheus textfile. Two real runs (their own local Ray) and one
resume are shared by the module; counts are checked against the demo data's truth."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, invoke
from batchrun.tools.demo import DemoTruth
from batchrun.tools.faults import FAULTS_ENV
from tests.conftest import assert_exactly_once, kill_group, staged_counts, write_job

pytestmark = pytest.mark.slow
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
"""Any control character but tab and newline: ANSI escapes start with \\x1b, and \\r."""
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Nights:
    """A first run that succeeds (no terminal, the venv's script by a relative path), a
    second that fails (under a pseudo-terminal, `python -m batchrun`), and the resume the
    second one's hint printed, pasted into a shell."""

    state: Path
    truth: DemoTruth
    first: subprocess.CompletedProcess[str]
    first_metrics: str
    script: str
    script_dir: Path
    second_code: int
    second_screen: str
    second_metrics: str
    resumed: subprocess.CompletedProcess[str]
    first_run: str
    second_run: str


def under_pty(argv: list[str], env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
    """Run `argv` with stdin, stdout and stderr on a pseudo-terminal 200 columns wide."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                               start_new_session=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunks.append(os.read(master, 65536))
                except OSError:  # EIO: every writer of the terminal is gone
                    break
            elif process.poll() is not None:
                break  # Ray's helpers may keep the terminal open a moment longer
        code = process.wait(timeout=30)
    finally:
        kill_group(process)
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def plain(screen: str) -> str:
    return ANSI.sub("", screen).replace("\r", "\n")


def hint_after(text: str, label: str) -> str:
    found = re.search(rf"^{re.escape(label)} (.+)$", plain(text), re.MULTILINE)
    assert found, f"no {label!r} line in:\n{text}"
    return found.group(1).strip()


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory,
           demo_data: tuple[Path, DemoTruth]) -> Nights:
    data, truth = demo_data
    home = tmp_path_factory.mktemp("nights")
    job = write_job(home, data, batch="max_files = 1")
    state, metrics = home / "state", home / "batchrun.prom"
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    script = Path(sys.executable).parent / "batchrun"
    script_dir = script.parent.parent.parent
    relative = os.path.relpath(script, script_dir)
    first = subprocess.run(
        [relative, "run", str(job), "--state-dir", str(state), "--progress-interval", "1s",
         "--metrics-file", str(metrics)], cwd=script_dir, capture_output=True, text=True,
        env={**env, FAULTS_ENV: "batch_delay = 0.5"}, timeout=300)
    first_metrics = metrics.read_text()
    second_code, screen = under_pty(
        [sys.executable, "-m", "batchrun", "run", str(job), "--state-dir", str(state),
         "--log-format", "json", "--metrics-file", str(metrics), "--full-refresh",
         "--set", "execution.max_retries=0"],
        {**env, "TERM": "xterm-256color", "COLUMNS": "200",
         FAULTS_ENV: 'fail_paths = ["supplier_01"], batch_delay = 0.2'})
    resume = hint_after(screen, "resume with:")
    resumed = subprocess.run(["bash", "-c", resume + " --quiet"], cwd=home, env=env,
                             capture_output=True, text=True, timeout=300)
    first_run, second_run = Catalog(state).run_ids()[::-1]
    return Nights(state, truth, first, first_metrics, relative, script_dir, second_code,
                  screen, metrics.read_text(), resumed, first_run, second_run)


def samples(textfile: str) -> dict[str, float]:
    """Every sample of a textfile by metric name, parsed by prometheus_client."""
    found = {}
    for family in text_string_to_metric_families(textfile):
        for sample in family.samples:
            assert sample.labels["job"] == "orders_job"
            found[sample.name] = sample.value
    return found


# -- without a terminal --------------------------------------------------------------------


def test_without_a_terminal_a_run_prints_plain_lines_every_interval_and_its_summary(
        nights: Nights) -> None:
    first = nights.first
    assert first.returncode == EXIT_OK, first.stderr
    assert not CONTROL.search(first.stderr) and not CONTROL.search(first.stdout)
    lines = first.stderr.splitlines()
    assert lines[0] == "orders_job: planning files and starting Ray..."
    assert f"log: {nights.state}/logs/{nights.first_run}.log" in lines[:4]
    progress = [line for line in lines if line.startswith(f"progress {nights.first_run}: ")]
    assert len(progress) >= 2 and "MB/s" in progress[0] and "rows/s" in progress[0]
    assert re.search(r"[1-9]\d*/12 files", progress[-1])
    rows = nights.truth.total_rows
    assert f"succeeded: 12/12 batches, {rows:,} rows staged, 0 rejected" in first.stderr
    assert lines[-1].startswith(f"log: {nights.state}/logs/{nights.first_run}.log (or: ")


def test_the_log_hint_names_the_script_as_invoked_and_works_when_pasted(
        nights: Nights) -> None:
    pasted = hint_after(nights.first.stderr, f"log: {nights.state}/logs/{nights.first_run}.log"
                        )[len("(or: "):-1]
    assert pasted == (f"{nights.script} logs {nights.first_run}"
                      f" --state-dir {nights.state}")
    shown = subprocess.run(["bash", "-c", pasted], cwd=nights.script_dir, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == EXIT_OK, shown.stderr
    assert f"run={nights.first_run} batch=-" in shown.stdout
    assert "run succeeded: 12 batch(es) committed" in shown.stdout


def test_the_metrics_file_parses_and_holds_the_runs_truth(nights: Nights) -> None:
    found = samples(nights.first_metrics)
    record = Catalog(nights.state).run(nights.first_run)
    assert found["batchrun_rows_staged"] == nights.truth.total_rows
    assert found["batchrun_rows_rejected"] == 0 and found["batchrun_files_quarantined"] == 0
    assert found["batchrun_files"] == 12 and found["batchrun_exit_code"] == EXIT_OK
    assert found["batchrun_last_success_timestamp_seconds"] == record.finished_at
    assert 0 < found["batchrun_run_duration_seconds"] < 300
    assert not [p for p in nights.state.parent.iterdir() if p.name.startswith(".batchrun.prom")]


# -- at a terminal, a failed run --------------------------------------------------------------


def test_at_a_terminal_progress_shows_rates_and_counts_and_a_failure_is_red(
        nights: Nights) -> None:
    screen = nights.second_screen
    assert nights.second_code == EXIT_PARTIAL, plain(screen)[-2000:]
    text = plain(screen)
    assert "orders_job: planning files and starting Ray..." in text
    assert re.search(r"\d+/12 files · [\d.]+/[\d.]+ MB · [\d.]+ MB/s · [\d,]+ rows/s · ETA", text)
    assert "files quarantined" in text and "per worker" in text
    assert re.search(rf"\x1b\[31mrun {nights.second_run} failed: ", screen)  # red, not green
    assert not re.search(rf"\x1b\[32mrun {nights.second_run}", screen)


def test_a_failed_run_keeps_the_last_success_timestamp_of_the_earlier_run(
        nights: Nights) -> None:
    found = samples(nights.second_metrics)
    assert found["batchrun_exit_code"] == EXIT_PARTIAL
    first = Catalog(nights.state).run(nights.first_run)
    assert found["batchrun_last_success_timestamp_seconds"] == first.finished_at
    assert found["batchrun_files_quarantined"] == 3  # supplier_01's three files


def test_the_resume_hint_pasted_into_a_shell_finishes_the_run_exactly_once(
        nights: Nights) -> None:
    hint = hint_after(nights.second_screen, "resume with:")
    assert hint == f"{sys.executable} -m batchrun resume {nights.second_run}" \
                   f" --state-dir {nights.state}"
    resumed = nights.resumed
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert_exactly_once(nights.state, nights.truth.total_rows)
    lines = resumed.stderr.splitlines()  # --quiet: the summary, its files line and the log
    assert lines[0].startswith(f"run {nights.second_run} succeeded: 12/12 batches")
    assert lines[1].startswith("  files: 0 new, 0 changed, 12 unchanged"), lines
    assert len(lines) == 3 and lines[2].startswith("log: ") and not resumed.stdout


# -- the run log --------------------------------------------------------------------------------


def test_a_json_run_log_binds_run_batch_and_file_on_every_line(nights: Nights) -> None:
    log = nights.state / "logs" / f"{nights.second_run}.log"
    records = [json.loads(line) for line in log.read_text().splitlines()]  # the resume's too
    assert {r["run_id"] for r in records} == {nights.second_run}
    assert any(r["message"].startswith("resuming job") for r in records)
    assert all({"time", "level", "batch_id", "file", "message"} <= set(r) for r in records)
    failed = [r for r in records if r["message"].startswith("failed after")]
    assert len(failed) == 3 and all("/supplier_01/" in r["file"] for r in failed)
    assert all(r["batch_id"] != "-" for r in failed)


def test_logs_prints_one_batchs_lines(nights: Nights, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    catalog = Catalog(nights.state)
    batch = catalog.batches(nights.first_run)[0]["batch_id"]
    assert invoke(["logs", nights.first_run, "--batch", batch,
                   "--state-dir", str(nights.state)]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 2 and all(f" batch={batch} " in line for line in lines)
    assert invoke(["logs", "no-such-run", "--state-dir", str(nights.state)]) == EXIT_USAGE
    assert capsys.readouterr().err.count("\n") == 1


# -- --json, and bad input ----------------------------------------------------------------------


@pytest.mark.usefixtures("ray_session")
def test_json_prints_only_the_final_object_on_stdout(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth],
        capsys: pytest.CaptureFixture[str]) -> None:
    data, truth = demo_data
    job = write_job(tmp_path, data, batch="max_files = 6")
    code = invoke(["run", str(job), "--state-dir", str(tmp_path / "s"), "--json"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert json.loads(out)["rows"] == {"staged": truth.total_rows, "rejected": 0}
    assert staged_counts(tmp_path / "s")["rows"] == truth.total_rows


@pytest.mark.parametrize(("flags", "says"), [
    (["--progress-interval", "soon"], "expected a duration such as '200ms' or '30s', got 'soon'"),
    (["--metrics-file", "no/such/dir/batchrun.prom"], "folder 'no/such/dir' does not exist"),
])
def test_bad_output_options_fail_in_one_line_before_anything_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], says: str) -> None:
    job = write_job(tmp_path, tmp_path / "in")
    state = tmp_path / "state"
    assert invoke(["run", str(job), "--state-dir", str(state), *flags]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err
    assert not state.exists()
