"""The command line: parse, call the library, render, map errors to exit codes.

This is the only module that imports click or prints. Exit codes are named below and
documented in the README.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from batchrun import logs
from batchrun.catalog import Catalog
from batchrun.config import load_job
from batchrun.errors import (
    BatchrunError,
    ConfigError,
    EnvironmentProblem,
    RunActiveError,
    RunNotFoundError,
    bounded,
)
from batchrun.private import private_dir, private_file
from batchrun.redact import redact
from batchrun.report import effective_state, resumable_runs, run_status, runs_status
from batchrun.states import RunState
from batchrun.stopping import StopToken

if TYPE_CHECKING:
    from batchrun.execute import RunOutcome

EXIT_OK = 0
"""Every batch committed, every file staged."""
EXIT_PARTIAL = 1
"""The run finished but some files or batches failed; `resume` can retry them."""
EXIT_USAGE = 2
"""Bad command line, bad job file, unknown run; nothing was started."""
EXIT_LOCKED = 3
"""Another run of the same job is active."""
EXIT_ENVIRONMENT = 4
"""The environment refused: Ray unreachable, a state or staging dir not writable or full,
a damaged catalog."""
EXIT_INTERNAL = 70
"""A bug in batchrun (EX_SOFTWARE): one line names the error and the log holding its
traceback."""
EXIT_SIGINT = 130
"""Interrupted by SIGINT (Ctrl-C); resumable."""
EXIT_SIGTERM = 143
"""Stopped by SIGTERM; resumable."""

DEFAULT_STATE_DIR = ".batchrun"
_invocation: dict[str, Any] = {}
"""The state dir and run id of the command running now: where an internal error's
traceback is written (the run's log)."""
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

def _remember_state_dir(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    _invocation["state_dir"] = value
    return value


state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR, envvar="BATCHRUN_STATE_DIR", show_default=True,
    callback=_remember_state_dir,
    help="Where the catalog, locks and logs live [env BATCHRUN_STATE_DIR].")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
workers_option = click.option("--workers", type=click.IntRange(min=1), envvar="BATCHRUN_WORKERS",
                              help="Override execution.workers [env BATCHRUN_WORKERS].")
address_option = click.option("--address", envvar="BATCHRUN_ADDRESS",
                              help="Ray cluster to join, e.g. auto or 127.0.0.1:6379 "
                                   "[env BATCHRUN_ADDRESS].")

_CONTROL_FLAGS = [
    # (flag, job key, click type, help)
    ("--mode", "execution.mode", click.Choice(["parallel", "sequential"]),
     "parallel (with the limits below) or sequential (one batch at a time, fail fast)"),
    ("--max-in-flight", "execution.max_in_flight", click.IntRange(min=1),
     "batches in flight at most (default 2 x workers)"),
    ("--per-source-concurrency", "execution.per_source_concurrency", str,
     "batches of one source in flight at most, or 'unlimited'"),
    ("--stagger", "execution.stagger", str,
     "delay between the first batches of successive sources, e.g. 200ms"),
    ("--max-bytes-in-flight", "execution.max_bytes_in_flight", str,
     "input bytes in flight at most, e.g. 2GB, or 'unlimited'"),
    ("--rate-limit", "execution.rate_limit", str, "batch starts per source, e.g. 3/s"),
    ("--breaker-failures", "execution.circuit_breaker.failures", click.IntRange(min=0),
     "consecutive failed batches that open a source's circuit breaker (0: off)"),
    ("--breaker-cooldown", "execution.circuit_breaker.cooldown", str,
     "how long an open breaker waits before its probe batch, e.g. 30s"),
]


def _env_name(flag: str) -> str:
    return "BATCHRUN_" + flag.lstrip("-").replace("-", "_").upper()


def control_options(command: Any) -> Any:
    """The contention controls as flags (and environment variables), plus --set."""
    command = click.option(
        "--set", "settings", multiple=True, metavar="KEY=VALUE",
        help="Override any job key, e.g. --set batch.max_files=10 (value parsed as TOML).")(command)
    for flag, key, kind, text in reversed(_CONTROL_FLAGS):
        command = click.option(flag, key.replace(".", "__"), type=kind, envvar=_env_name(flag),
                               help=f"Override {key}: {text} [env {_env_name(flag)}].")(command)
    return command


def control_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """Flag values (and --set pairs) as dotted job keys."""
    overrides = {key: params.get(key.replace(".", "__")) for _, key, _, _ in _CONTROL_FLAGS}
    for pair in params.get("settings") or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        overrides[key.strip()] = _toml_value(value.strip())
    return overrides


def _toml_value(text: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="batchrun")
def cli() -> None:
    """Stage large, messy file sets into one clean table, exactly once, resumably."""
    logs.silence_default_sink()


@cli.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@workers_option
@address_option
@click.option("--staging-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="BATCHRUN_STAGING_DIR", help="Override staging.dir [env BATCHRUN_STAGING_DIR].")
@state_dir_option
@json_option
@click.option("--progress/--no-progress", default=None, help="Show a progress bar (default: on a TTY).")
@click.option("--group-by", envvar="BATCHRUN_GROUP_BY",
              help="Override source.group_by: parent_dir, none or a regex with a named group "
                   "[env BATCHRUN_GROUP_BY].")
@control_options
def run(job_file: Path, workers: int | None, address: str | None, staging_dir: Path | None,
        state_dir: Path, as_json: bool, progress: bool | None, group_by: str | None,
        **controls: Any) -> None:
    """Plan JOB_FILE, run every batch on Ray, stage and checkpoint each one."""
    from batchrun.runner import start_run  # Ray and Arrow load only for run and resume

    overrides = {"execution.workers": workers, "execution.address": address,
                 "staging.dir": str(staging_dir.resolve()) if staging_dir else None,
                 "source.group_by": group_by, **control_overrides(controls)}
    job = load_job(job_file, overrides)

    def planned(event: dict[str, Any]) -> None:
        _invocation["run_id"] = event["run_id"]
        view.planned(event)

    with _ProgressView(enabled=_progress_enabled(progress, as_json)) as view, _stdout_for_results():
        outcome = start_run(job, state_dir, stop=StopToken(), on_progress=view.advance,
                            on_planned=planned)
    _finish(outcome, state_dir, as_json)


@cli.command()
@click.argument("run_id", default="latest")
@workers_option
@address_option
@state_dir_option
@json_option
@click.option("--progress/--no-progress", default=None, help="Show a progress bar (default: on a TTY).")
@click.option("--repair", is_flag=True,
              help="First verify every committed output (as `batchrun verify`) and stage again "
                   "the batches whose output is missing or damaged; works on a succeeded run too.")
@control_options
def resume(run_id: str, workers: int | None, address: str | None, state_dir: Path,
           as_json: bool, progress: bool | None, repair: bool, **controls: Any) -> None:
    """Finish a failed or killed run; committed batches are never redone (except, with
    --repair, those whose committed output is missing or damaged). Without RUN_ID: the
    latest failed or interrupted run of the state dir (each job's latest run counts); with
    --repair, the latest run whatever its state."""
    from batchrun.runner import refuse_staging_changes, resume_run

    run_id = (_resolve_run(state_dir, run_id) if repair
              else _resolve_resume_run(state_dir, run_id))
    _invocation["run_id"] = run_id
    overrides = {"execution.workers": workers, "execution.address": address,
                 **control_overrides(controls)}
    refuse_staging_changes(run_id, overrides)
    with _ProgressView(enabled=_progress_enabled(progress, as_json)) as view:
        status = run_status(Catalog(state_dir, create=False), run_id)
        view.planned({"run_id": run_id, "batches": status["batches"]["total"]})
        view.advance({"committed": status["batches"]["committed"], "rows": status["rows"]["staged"]})
        with _stdout_for_results():
            outcome = resume_run(run_id, state_dir, overrides, stop=StopToken(),
                                 on_progress=view.advance, repair=repair)
    if outcome.repaired is not None and not as_json:
        for finding in outcome.repaired.bad:
            err.print(f"repaired: {finding.line()}", markup=False)
        err.print(f"repair: {outcome.repaired.summary()}", markup=False)
    if outcome.already_done and not as_json:
        err.print(f"run {run_id} already succeeded; nothing to "
                  + ("repair" if repair else "resume"))
    _finish(outcome, state_dir, as_json)


@cli.command()
@click.argument("run_id", default="latest")
@state_dir_option
@json_option
def verify(run_id: str, state_dir: Path, as_json: bool) -> None:
    """Check every committed output of a run (default: the latest) against its commit
    record: the file exists, has its recorded size and its recorded checksum."""
    from batchrun.verify import verify_run

    run_id = _resolve_run(state_dir, run_id)
    report = verify_run(Catalog(state_dir, create=False), run_id)
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        for finding in [*report.bad, *report.unverifiable]:
            out.print(finding.line(), markup=False)
        out.print(report.summary(), markup=False)
    sys.exit(EXIT_OK if report.ok else EXIT_PARTIAL)


@cli.command()
@click.argument("run_id", default="latest")
@state_dir_option
@json_option
def status(run_id: str, state_dir: Path, as_json: bool) -> None:
    """Show one run (default: the latest); works while the run is going."""
    run_id = _resolve_run(state_dir, run_id)
    report = run_status(Catalog(state_dir, create=False), run_id, detail=True)
    if as_json:
        out.print_json(json.dumps(report))
    else:
        _render_status(report)


@cli.command()
@click.argument("run_id", default="latest")
@state_dir_option
@json_option
def report(run_id: str, state_dir: Path, as_json: bool) -> None:
    """Throughput, batch latency, errors, retries and concurrency per source of a run."""
    from batchrun.metrics import run_metrics

    metrics = run_metrics(Catalog(state_dir, create=False), _resolve_run(state_dir, run_id))
    if as_json:
        out.print_json(json.dumps(metrics))
        return
    _render_report(metrics)


@cli.command(name="compare")
@click.argument("job_file", type=click.Path(path_type=Path))
@click.option("--shapes", "shape_specs", multiple=True, metavar="SPEC",
              help="Shapes to run: sequential, parallel, hybrid (comma separated), or "
                   "KEY=V1,V2,... e.g. workers=1,2,4 or per_source_concurrency=1,3,unlimited. "
                   "Repeatable. Default: sequential,parallel,hybrid.")
@click.option("--inject-faults", is_flag=False, flag_value="default", default=None,
              metavar="[FAULTS]",
              help="Repeat every shape with the fault injector on (default faults: 5% "
                   "transient read errors and one worker crash; or an inline TOML body).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a self-contained HTML report with charts.")
@click.option("--scratch", type=click.Path(file_okay=False, path_type=Path),
              help="Where the shapes' state and staging go [default: a temporary folder].")
@click.option("--keep", is_flag=True, help="Keep the scratch state and staging of every shape.")
@json_option
def compare_command(job_file: Path, shape_specs: tuple[str, ...], inject_faults: str | None,
                    html_file: Path | None, scratch: Path | None, keep: bool, as_json: bool) -> None:
    """Run JOB_FILE under several shapes (sequential, parallel, the job's own limits) into
    scratch staging areas and compare time, throughput, latency, memory, retries and output."""
    import tempfile

    from batchrun.compare import DEFAULT_FAULTS, compare, parse_shapes

    load_job(job_file)
    shapes = parse_shapes(shape_specs)
    faults = DEFAULT_FAULTS if inject_faults == "default" else inject_faults
    if faults:
        from batchrun.faults import load_faults_text

        load_faults_text(faults)
    scratch = scratch or Path(tempfile.mkdtemp(prefix="batchrun-compare-"))
    result = compare(job_file.resolve(), shapes, scratch.resolve(), faults, keep,
                     on_shape=lambda text: err.print(f"compare {text}", markup=False))
    report = result.as_dict()
    if html_file:
        from batchrun.charts import write_html

        write_html(report, html_file)
        err.print(f"wrote {html_file}")
    if as_json:
        out.print_json(json.dumps(report))
    else:
        _render_compare(report)
    sys.exit(EXIT_OK if result.all_identical else EXIT_PARTIAL)


@cli.command()
@state_dir_option
@json_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most N runs.")
def runs(state_dir: Path, as_json: bool, limit: int | None) -> None:
    """Run history, the run recorded last first."""
    history = runs_status(Catalog(state_dir, create=False), limit)
    if not history:
        raise RunNotFoundError(f"no runs yet in {state_dir}")
    if as_json:
        out.print_json(json.dumps(history))
        return
    table = Table("run", "job", "state", "batches", "files failed", "rows staged",
                  "rows rejected", "started", "duration")
    for r in history:
        table.add_row(r["run_id"], r["job"], _state_text(r["state"]),
                      f"{r['batches']['committed']}/{r['batches']['total']}",
                      str(r["files"]["failed"]), f"{r['rows']['staged']:,}",
                      f"{r['rows']['rejected']:,}", (r["started_at"] or "")[:19],
                      f"{r['duration_s']:.1f}s" if r["duration_s"] is not None else "")
    out.print(table)


@cli.command()
@click.argument("sql")
@click.option("--run", "run_id", default="latest", help="Run whose staged table to query.")
@state_dir_option
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table")
@click.option("--unsafe", is_flag=True,
              help="Lift query's limits: let the SQL write files, read any file or URL and "
                   "load extensions (by default it only reads the run's staged files).")
def query(sql: str, run_id: str, state_dir: Path, fmt: str, unsafe: bool) -> None:
    """Run SQL over a run's staged table and its <table>__rejects view (DuckDB)."""
    import duckdb

    from batchrun.staging import query_connection, read_only_problem  # DuckDB: only here

    refused = None if unsafe else read_only_problem(sql)
    if refused:
        raise click.ClickException(f"query refused: {refused}")
    run_id = _resolve_run(state_dir, run_id)
    catalog = Catalog(state_dir, create=False)
    record = catalog.run(run_id)
    db = query_connection(record.table, record.schema or {}, catalog.committed(run_id), unsafe)
    try:
        cursor = db.execute(sql)
        names = [column[0] for column in cursor.description or []]
        rows = cursor.fetchall() if names else []
    except duckdb.Error as exc:
        hint = " (query reads only the run's staged files; --unsafe lifts this)" \
            if isinstance(exc, duckdb.PermissionException) else ""
        raise _damaged_output(catalog, run_id, exc) or click.ClickException(
            f"query failed: {str(exc).splitlines()[0]}{hint}") from None
    _render_rows(names, rows, fmt)


@cli.command()
@click.argument("run_id", default="latest")
@click.option("--file", "file_filter", help="Only rejects of files whose path contains this text.")
@click.option("--rule", help="Only this rule, e.g. required, type:int32, unique, ragged_row.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most N rejects.")
@state_dir_option
@json_option
def rejects(run_id: str, file_filter: str | None, rule: str | None, limit: int | None,
            state_dir: Path, as_json: bool) -> None:
    """Rejected rows of a run, with file, line, column, rule, value and the raw line."""
    import duckdb

    from batchrun.staging import query_connection, quote_identifier, unreadable_output

    run_id = _resolve_run(state_dir, run_id)
    catalog = Catalog(state_dir, create=False)
    record = catalog.run(run_id)
    committed = catalog.committed(run_id)
    db = query_connection(record.table, record.schema or {}, committed)
    conditions, params = ["true"], []
    if file_filter:
        conditions.append("contains(file, ?)")
        params.append(file_filter)
    if rule:
        conditions.append("rule = ?")
        params.append(rule)
    sql = (f'SELECT run_id, batch_id, file, line, "column", rule, value, raw_line'
           f' FROM {quote_identifier(record.table + "__rejects")} WHERE {" AND ".join(conditions)}'
           f' ORDER BY file, line' + (f" LIMIT {limit}" if limit else ""))
    try:
        cursor = db.execute(sql, params)
        names = [column[0] for column in cursor.description or []]
        rows = cursor.fetchall()
    except duckdb.Error as exc:  # our own SQL: only a damaged committed file fails it
        raise _damaged_output(catalog, run_id, exc) or unreadable_output(committed, exc) from None
    _render_rows(names, rows, "json" if as_json else "table")


def _damaged_output(catalog: Catalog, run_id: str, exc: Exception) -> Exception | None:
    """The damaged committed file behind a failed query, if any: one the error names, or,
    for an error that is not about the SQL text, one that fails its checksum (`verify`)."""
    import duckdb

    from batchrun.staging import named_output_error
    from batchrun.verify import first_damaged

    if isinstance(exc, (duckdb.ParserException, duckdb.BinderException,
                        duckdb.CatalogException, duckdb.PermissionException)):
        return None
    return named_output_error(catalog.committed(run_id), exc) or first_damaged(catalog, run_id)


def _render_rows(names: list[str], rows: list[tuple[Any, ...]], fmt: str) -> None:
    if fmt == "json":
        out.print_json(json.dumps([dict(zip(names, r)) for r in rows], default=str))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows(rows)
    else:
        table = Table(*names)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        out.print(table)


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path),
                default=Path("configs/data/suppliers"))
@click.option("--suppliers", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--files-per-supplier", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--file-mb", type=click.FloatRange(min=0.001), default=2.0, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
def demo(out_dir: Path, suppliers: int, files_per_supplier: int, file_mb: float, seed: int) -> None:
    """Generate the seed-shaped supplier-orders data set (configs/demo.toml reads it)."""
    from batchrun.demo import DemoSpec, generate

    truth = generate(DemoSpec(out_dir=out_dir, suppliers=suppliers,
                              files_per_supplier=files_per_supplier,
                              file_bytes=int(file_mb * 1e6), seed=seed))
    err.print(f"wrote {len(truth.files)} files, {truth.total_rows:,} rows to {out_dir}")


# -- rendering ------------------------------------------------------------------------------


def _stdout_for_results() -> contextlib.redirect_stdout[Any]:
    """While Ray runs, anything it prints (raylet notices) goes to stderr: stdout carries
    only batchrun's result, so `--json` output always parses."""
    return contextlib.redirect_stdout(sys.stderr)



class _ProgressView:
    """A rich progress bar on stderr, fed by the library's progress callbacks."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("batches"),
                                 TextColumn("{task.fields[rows]:,} rows"), TimeElapsedColumn(),
                                 console=err, transient=False)
        self.task: Any = None

    def __enter__(self) -> _ProgressView:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def planned(self, event: dict[str, Any]) -> None:
        if self.enabled:
            self.task = self.progress.add_task(event["run_id"], total=event["batches"], rows=0)

    def advance(self, event: dict[str, Any]) -> None:
        if self.enabled and self.task is not None:
            done = event.get("committed", 0) + event.get("failed", 0)
            rows = self.progress.tasks[0].fields["rows"] + event.get("rows", 0)
            self.progress.update(self.task, advance=done, rows=rows)


def _progress_enabled(flag: bool | None, as_json: bool) -> bool:
    return flag if flag is not None else (err.is_terminal and not as_json)


def _finish(outcome: RunOutcome, state_dir: Path, as_json: bool) -> None:
    report = run_status(Catalog(state_dir), outcome.run_id, detail=True)
    if as_json:
        out.print_json(json.dumps(report))
    else:
        _render_summary(report)
    code = _exit_code(outcome)
    if code != EXIT_OK and _resumable(report):
        err.print(f"resume with: {_resume_command(outcome.run_id, state_dir)}")
    elif code != EXIT_OK and report["files"]["failed"]:
        err.print("nothing a resume can retry: the quarantined files are bad in themselves;"
                  " fix or replace them and run the job again")
    sys.exit(code)


def _resumable(report: dict[str, Any]) -> bool:
    """Whether a resume has anything left to do: unfinished batches, or files quarantined
    for a reason that may have gone away (not a run failed by its rejects, nor files
    quarantined for their content)."""
    from batchrun.identity import may_recover

    b = report["batches"]
    return b["committed"] < b["total"] or any(
        may_recover(f["error"]) for f in report.get("failed_files", []))


def _exit_code(outcome: RunOutcome) -> int:
    if outcome.state is RunState.SUCCEEDED:
        return EXIT_OK
    stopped = outcome.schedule.stopped_by if outcome.schedule else None
    if stopped == signal.SIGTERM:
        return EXIT_SIGTERM
    if stopped is not None:
        return EXIT_SIGINT
    return EXIT_PARTIAL


def _resume_command(run_id: str, state_dir: Path) -> str:
    command = f"batchrun resume {run_id}"
    if os.path.abspath(state_dir) != os.path.abspath(DEFAULT_STATE_DIR):
        command += f" --state-dir {state_dir}"
    return command


def _render_summary(report: dict[str, Any]) -> None:
    b, f, r = report["batches"], report["files"], report["rows"]
    err.print(f"run {report['run_id']} {_state_text(report['state'])}: "
              f"{b['committed']}/{b['total']} batches, {r['staged']:,} rows staged, "
              f"{r['rejected']:,} rejected, {f['failed']} file(s) quarantined"
              + (f", {f['skipped']} skipped" if f["skipped"] else "")
              + f" in {report['duration_s'] or 0:.1f}s")
    if report["message"]:
        err.print(f"  {report['message']}", markup=False)
    if f["failed"] or f["skipped"]:
        err.print(f"list them with: batchrun status {report['run_id']}")
    if r["rejected"]:
        err.print(f"see rejected rows with: batchrun rejects {report['run_id']}")


def _render_status(report: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    b, f, r = report["batches"], report["files"], report["rows"]
    for key, value in [
        ("run", report["run_id"]), ("job", f"{report['job']} ({report['job_file']})"),
        ("state", _state_text(report["state"])),
        ("batches", f"{b['committed']} committed, {b['running']} running, {b['pending']} "
                    f"pending, {b['failed']} failed, {b['skipped']} skipped, of {b['total']}"),
        ("files", f"{f['committed']} committed, {f['failed']} failed, {f['skipped']} skipped,"
                  f" of {f['total']}"),
        ("rows", f"{r['staged']:,} staged, {r['rejected']:,} rejected"),
        ("started", report["started_at"] or "-"), ("finished", report["finished_at"] or "-"),
        ("staging", report["staging_dir"]), ("message", report["message"] or "-"),
    ]:
        table.add_row(f"[bold]{key}", str(value))
    out.print(table)
    for failed in report.get("failed_files", []):
        out.print(f"  [red]failed[/] {failed['path']}: {failed['error']}")
    for skipped in report.get("skipped_files", []):
        out.print(f"  [yellow]skipped[/] {skipped['path']}: {skipped['reason']}")
    for warned in report.get("warnings", []):
        out.print(f"  [yellow]warning[/] {warned['path']}: {warned['warning']}")
    for retried in report.get("retried_batches", []):
        out.print(f"  [yellow]retried[/] {retried['batch_id']} ({retried['state']}, "
                  f"{retried['attempts']} attempts): {retried['last_error']} "
                  f"[{retried['error_kind']}]")
    for failed in report.get("failed_batches", []):
        out.print(f"  [red]failed batch[/] {failed['batch_id']} after {failed['attempts']} "
                  f"attempt(s): {failed['last_error']}")


def _render_report(m: dict[str, Any]) -> None:
    summary = Table(show_header=False, box=None)
    for key, value in [
        ("run", f"{m['run_id']} ({m['job']}) {_state_text(m['state'])}"),
        ("time", f"{_seconds(m['wall_s'])} wall, {_seconds(m['active_s'])} with batches in flight"),
        ("throughput", f"{m['mb_per_s']:,} MB/s, {m['rows_per_s']:,.0f} rows/s"
                       f" ({m['bytes'] / 1e6:,.1f} MB, {m['rows_staged']:,} rows staged,"
                       f" {m['rows_rejected']:,} rejected)"),
        ("steady", f"{m['steady_mb_per_s'] or '-'} MB/s from the first commit to the last"
                   " (start-up left out)"),
        ("batch latency", _percentile_text(m, "latency") + " (dispatch to commit)"),
        ("processing", _percentile_text(m, "processing") + " (in the worker)"),
        ("errors", f"{m['error_rate']:.1%} of {m['attempts']} attempts failed: {m['retries']}"
                   f" retried, {m['failed_batches']} batch(es) failed,"
                   f" {m['skipped_batches']} skipped"),
        ("concurrency", f"{m['max_in_flight']} batches in flight at most,"
                        f" {m['max_concurrency_per_source']} of one source"),
    ]:
        summary.add_row(f"[bold]{key}", value)
    out.print(summary)
    table = Table("source", "attempts", "committed", "retries", "failed", "MB", "rows",
                  "max concurrency")
    for s in m["sources"]:
        table.add_row(s["source"], str(s["attempts"]), str(s["committed"]), str(s["retries"]),
                      str(s["failed"]), f"{s['bytes'] / 1e6:,.1f}", f"{s['rows']:,}",
                      str(s["max_concurrency"]))
    out.print(table)


def _render_compare(report: dict[str, Any]) -> None:
    from batchrun.charts import COLUMNS, _cell

    table = Table(*(heading for heading, _ in COLUMNS), title=f"compare {report['job']}")
    for shape in report["shapes"]:
        table.add_row(*(_cell(shape.get(key)) for _, key in COLUMNS))
    out.print(table)
    for shape in report["shapes"]:
        if shape.get("error"):
            err.print(f"shape {shape['name']} failed: {shape['error']}", markup=False)
    if not report["all_identical"]:
        err.print("some shapes staged different rows than the sequential baseline")


def _percentile_text(m: dict[str, Any], name: str) -> str:
    return ", ".join(f"p{p} {_seconds(m[f'{name}_p{p}_s'])}" for p in (50, 95, 99))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _state_text(state: str) -> str:
    color = {"succeeded": "green", "failed": "red", "interrupted": "yellow"}.get(state, "cyan")
    return f"[{color}]{state}[/]"


def _resolve_run(state_dir: Path, run_id: str) -> str:
    """`latest` is the run recorded last; the catalog must exist (it is not created)."""
    catalog = _existing_catalog(state_dir, run_id)
    return catalog.latest_run_id() if run_id == "latest" else catalog.run(run_id).run_id


def _existing_catalog(state_dir: Path, run_id: str) -> Catalog:
    try:
        return Catalog(state_dir, create=False)
    except RunNotFoundError as exc:
        if run_id == "latest":
            raise
        raise RunNotFoundError(f"no run {run_id!r}: {exc}") from None


def _resolve_resume_run(state_dir: Path, run_id: str) -> str:
    """An explicit run id, or the one failed or interrupted run to resume: none exits 0
    ("nothing to resume"), several list themselves and exit 2 asking for a run id."""
    catalog = _existing_catalog(state_dir, run_id)
    if run_id != "latest":
        return catalog.run(run_id).run_id
    candidates = resumable_runs(catalog)
    if not candidates:
        err.print(f"nothing to resume: no failed or interrupted run in {state_dir}")
        sys.exit(EXIT_OK)
    if len(candidates) > 1:
        err.print(f"{len(candidates)} unfinished runs in {state_dir}; name one:"
                  f" batchrun resume RUN_ID", markup=False)
        for run in candidates:
            err.print(f"  {run.run_id}  job {run.job}  {effective_state(run).value}", markup=False)
        sys.exit(EXIT_USAGE)
    return candidates[0].run_id


def invoke(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; library errors map to named codes here."""
    _invocation["argv"] = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=argv, prog_name="batchrun", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except click.exceptions.Abort:
        err.print("aborted")
        return EXIT_SIGINT
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        return _fail_usage(exc)
    except (ConfigError, RunNotFoundError) as exc:
        return _fail(exc, EXIT_USAGE)
    except RunActiveError as exc:
        return _fail(exc, EXIT_LOCKED)
    except (EnvironmentProblem, BatchrunError) as exc:
        return _fail(exc, EXIT_ENVIRONMENT)
    except Exception as exc:  # noqa: BLE001 - the last resort: never a traceback on screen
        return _internal_error(exc)
    finally:
        _invocation.clear()
    return EXIT_OK


def _fail(exc: Exception, code: int) -> int:
    err.print(f"error: {_one_line(str(exc))}", markup=False)
    return code


def _fail_usage(exc: click.ClickException) -> int:
    """A bad command line, as one line that says where to look."""
    context = getattr(exc, "ctx", None)
    command = context.command_path if context is not None else "batchrun"
    err.print(f"error: {_one_line(exc.format_message())} (see `{command} --help`)", markup=False)
    return EXIT_USAGE


def _one_line(text: str) -> str:
    """Whitespace folded, credentials in URIs masked, at most 1,000 characters."""
    return bounded(redact(" ".join(text.split())), 1000) or ""


def _internal_error(exc: Exception) -> int:
    """One line naming the error and the log that holds its traceback; EXIT_INTERNAL."""
    log = _write_traceback(exc)
    where = f"log: {log}" if log else "no log could be written"
    err.print(f"internal error: {type(exc).__name__}: {_one_line(str(exc))} ({where})",
              markup=False)
    return EXIT_INTERNAL


def _write_traceback(exc: Exception) -> Path | None:
    """Append the traceback to the run's log, else to the state dir's (or the temporary
    folder's) batchrun-internal.log; the state dir itself is never created for it."""
    state_dir, run_id = _invocation.get("state_dir"), _invocation.get("run_id")
    if state_dir is not None and run_id and Path(state_dir).is_dir():
        candidates = [logs.run_log_path(Path(state_dir), run_id)]
    elif state_dir is not None and Path(state_dir).is_dir():
        candidates = [Path(state_dir) / "logs" / "batchrun-internal.log"]
    else:
        candidates = []
    candidates.append(Path(tempfile.gettempdir()) / "batchrun-internal.log")
    text = redact("".join(traceback.format_exception(exc)))
    for path in candidates:
        try:
            private_file(private_dir(path.parent) / path.name)
            with path.open("a", encoding="utf-8") as handle:
                command = " ".join(_invocation.get("argv", []))
                handle.write(f"internal error in `batchrun {command}`:\n{text}")
            return path
        except OSError:
            continue
    return None


def main() -> None:
    sys.exit(invoke())
