"""The command line: parse, call the library, render, map errors to exit codes.

This is the only module that imports click or prints. Exit codes are named below and
documented in the README.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from batchrun import logs
from batchrun.catalog import Catalog
from batchrun.cli.exits import EXIT_OK, EXIT_PARTIAL, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE
from batchrun.cli.logs_command import logs_command
from batchrun.cli.options import (
    address_option,
    control_options,
    control_overrides,
    err,
    full_refresh_option,
    hint,
    invocation,
    json_option,
    out,
    resolve_state_dir,
    run_id_option,
    run_output_options,
    state_dir_option,
    state_options,
    workers_option,
)
from batchrun.cli.render import (
    _render_compare,
    _render_rows,
    _render_run_report,
    _render_runs,
    _render_status,
    _render_summary,
    _stdout_for_results,
)
from batchrun.cli.running import (
    log_note,
    metrics_on_exit,
    noting_run_id,
    resume_totals,
    run_display,
)
from batchrun.config import load_job
from batchrun.errors import (
    RunNotFoundError,
)
from batchrun.execution.stopping import StopToken
from batchrun.model import RunState
from batchrun.report import RunStatus, effective_state, resumable_runs, run_status, runs_status

if TYPE_CHECKING:
    from collections.abc import Callable

    from batchrun.execution.run import RunOutcome

from typing import TYPE_CHECKING


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="batchrun")
def cli() -> None:
    """Stage large, messy file sets into one clean table, exactly once, resumably."""
    logs.silence_default_sink()
    logs.use_format(None)


cli.add_command(logs_command)


@cli.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@workers_option
@address_option
@click.option("--staging-dir", type=click.Path(file_okay=False, path_type=str),
              envvar="BATCHRUN_STAGING_DIR",
              help="Override staging.dir: a folder or s3://bucket/prefix [env BATCHRUN_STAGING_DIR].")
@state_dir_option
@json_option
@run_output_options
@click.option("--group-by", envvar="BATCHRUN_GROUP_BY",
              help="Override source.group_by: parent_dir, none or a regex with a named group "
                   "[env BATCHRUN_GROUP_BY].")
@run_id_option
@full_refresh_option
@control_options
def run(job_file: Path, workers: int | None, address: str | None, staging_dir: str | None,
        state_dir: Path | None, as_json: bool, group_by: str | None,
        run_id: str | None, full_refresh: bool, **controls: Any) -> None:
    """Plan JOB_FILE's new and changed files (all with --full-refresh), run every batch on
    Ray, stage and checkpoint each one. Nothing new: exits 0 without starting Ray."""
    from batchrun.execution.prepare import check_job
    from batchrun.execution.start import start_run

    overrides = {"execution.workers": workers, "execution.address": address,
                 "staging.dir": _staging_override(staging_dir),
                 "source.group_by": group_by, **control_overrides(controls)}
    job = load_job(job_file, overrides)
    check_job(job)  # before the state dir is touched: a bad job leaves nothing behind

    state = resolve_state_dir(state_dir, job_file)

    def planned(event: dict[str, Any]) -> None:
        invocation["run_id"] = event["run_id"]
        log_note(view, state, event["run_id"])

    with Catalog(state) as catalog, metrics_on_exit(catalog, job.name):
        with run_display(f"{job.name}: planning files and starting Ray...", as_json) as view, \
                _stdout_for_results():
            outcome = start_run(job, catalog, stop=StopToken(), on_progress=noting_run_id(view),
                                on_planned=planned, run_id=run_id, full_refresh=full_refresh)
            view.succeeded = outcome.state is RunState.SUCCEEDED
        _finish(outcome, catalog, as_json)


@cli.command()
@click.argument("run_id", default="latest")
@workers_option
@address_option
@state_options
@json_option
@run_output_options
@click.option("--repair", is_flag=True,
              help="First verify every committed output (as `batchrun verify`) and stage again "
                   "the batches whose output is missing or damaged; works on a succeeded run too.")
@control_options
def resume(run_id: str, workers: int | None, address: str | None, state_dir: Path,
           as_json: bool, repair: bool, **controls: Any) -> None:
    """Finish a failed or killed run; committed batches are never redone (except, with
    --repair, those whose committed output is missing or damaged). Without RUN_ID: the
    latest failed or interrupted run of the state dir (each job's latest run counts); with
    --repair, the latest run whatever its state."""
    from batchrun.execution.start import refuse_staging_changes

    overrides = {"execution.workers": workers, "execution.address": address,
                 **control_overrides(controls)}
    refuse_staging_changes(run_id, overrides)  # whichever run it is: no resume honours them
    with _existing_catalog(state_dir, run_id) as catalog, metrics_on_exit(catalog):
        run_id = (_resolve_run(catalog, run_id) if repair
                  else _resolve_resume_run(catalog, state_dir, run_id))
        _resume_and_finish(catalog, run_id, overrides, as_json, repair=repair)


@cli.command("retry-failed")
@click.argument("run_id", default="latest")
@workers_option
@address_option
@state_options
@json_option
@run_output_options
def retry_failed(run_id: str, workers: int | None, address: str | None, state_dir: Path,
                 as_json: bool) -> None:
    """Stage again the quarantined files of a run (default: the latest), whatever they were
    quarantined for, e.g. after a supplier re-sent them; the run's committed batches are
    never redone. It ends succeeded when every file now stages."""
    overrides = {"execution.workers": workers, "execution.address": address}
    with _existing_catalog(state_dir, run_id) as catalog, metrics_on_exit(catalog):
        run_id = _resolve_run(catalog, run_id)
        if not catalog.quarantined_files(run_id):
            err.print(f"nothing to retry: run {run_id} has no quarantined files")
            sys.exit(EXIT_OK)
        _resume_and_finish(catalog, run_id, overrides, as_json, retry=True)


def _resume_and_finish(catalog: Catalog, run_id: str, overrides: dict[str, Any],
                       as_json: bool, *, repair: bool = False, retry: bool = False) -> None:
    from batchrun.execution.start import resume_run

    invocation["run_id"] = run_id
    opening = f"{'retrying' if retry else 'resuming'} {run_id}: starting Ray..."
    with run_display(opening, as_json) as view:
        log_note(view, catalog.path.parent, run_id)
        view(resume_totals(catalog, run_id))
        with _stdout_for_results():
            outcome = resume_run(run_id, catalog, overrides, stop=StopToken(),
                                 on_progress=view, repair=repair, retry_quarantined=retry)
        view.succeeded = outcome.state is RunState.SUCCEEDED
    _report_resume(outcome, run_id, repair, as_json)
    _finish(outcome, catalog, as_json)


def _report_resume(outcome: RunOutcome, run_id: str, repair: bool, as_json: bool) -> None:
    if outcome.repaired is not None and not as_json:
        for finding in outcome.repaired.bad:
            err.print(f"repaired: {finding.line()}", markup=False)
        err.print(f"repair: {outcome.repaired.summary()}", markup=False)
    if outcome.already_done and not as_json:
        err.print(f"run {run_id} already succeeded; nothing to "
                  + ("repair" if repair else "resume"))


@cli.command()
@click.argument("run_id", default="latest")
@state_options
@json_option
def verify(run_id: str, state_dir: Path, as_json: bool) -> None:
    """Check every committed output of a run (default: the latest) against its commit
    record: the file exists, has its recorded size and its recorded checksum."""
    from batchrun.verify import verify_run

    with _existing_catalog(state_dir, run_id) as catalog:
        report = verify_run(catalog, _resolve_run(catalog, run_id))
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        for finding in [*report.bad, *report.unverifiable]:
            out.print(finding.line(), markup=False)
        out.print(report.summary(), markup=False)
    sys.exit(EXIT_OK if report.ok else EXIT_PARTIAL)


@cli.command()
@click.argument("run_id", default="latest")
@state_options
@json_option
def status(run_id: str, state_dir: Path, as_json: bool) -> None:
    """Show one run (default: the latest); works while the run is going."""
    with _existing_catalog(state_dir, run_id) as catalog:
        report = run_status(catalog, _resolve_run(catalog, run_id), detail=True)
    if as_json:
        out.print_json(json.dumps(report.as_json()))
    else:
        _render_status(report)


@cli.command()
@click.argument("run_id", default="latest")
@state_options
@json_option
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write one self-contained HTML page (no network) with the run's charts.")
def report(run_id: str, state_dir: Path, as_json: bool, html_file: Path | None) -> None:
    """Throughput, batch latency, errors, retries and concurrency per source of a run; the
    top reject reasons with example lines and the quarantined files with their reasons."""
    from batchrun.report import run_report

    _check_output_folder(html_file, "--html")
    with _existing_catalog(state_dir, run_id) as catalog:
        found = run_report(catalog, _resolve_run(catalog, run_id))
    if html_file:
        from batchrun.tools.report_html import write_report_html

        err.print(f"wrote {write_report_html(found, html_file)}", markup=False)
    if as_json:
        out.print_json(json.dumps(found.as_json()))
        return
    _render_run_report(found)


def _check_output_folder(path: Path | None, option: str) -> None:
    """An output file's folder must exist: one usage line (exit 2) before any work."""
    if path is not None and not path.absolute().parent.is_dir():
        raise click.BadParameter(f"folder {path.absolute().parent} does not exist",
                                 param_hint=option)


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
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              envvar="BATCHRUN_COMPARE_ROUNDS",
              help="Run every shape N times, the shapes interleaved; report each shape's median "
                   "and min–max [env BATCHRUN_COMPARE_ROUNDS].")
@json_option
def compare_command(job_file: Path, shape_specs: tuple[str, ...], inject_faults: str | None,
                    html_file: Path | None, scratch: Path | None, keep: bool, rounds: int,
                    as_json: bool) -> None:
    """Run JOB_FILE under several shapes (sequential, parallel, the job's own limits) into
    scratch staging areas and compare time, throughput, latency, memory, retries and output."""

    from batchrun.execution.prepare import check_job
    from batchrun.tools.compare import DEFAULT_FAULTS, compare, parse_shapes

    _check_output_folder(html_file, "--html")
    if html_file:
        from batchrun.tools.charts import require_plotly

        require_plotly()  # before the runs, not after them
    check_job(load_job(job_file))
    shapes = parse_shapes(shape_specs)
    faults = DEFAULT_FAULTS if inject_faults == "default" else inject_faults
    if faults:
        from batchrun.tools.faults import load_faults_text

        load_faults_text(faults)
    scratch = scratch or Path(tempfile.mkdtemp(prefix=f"batchrun-compare-{os.getpid()}-"))
    result = compare(job_file.resolve(), shapes, scratch.resolve(), faults, keep,
                     on_shape=lambda text: err.print(f"compare {text}", markup=False),
                     rounds=rounds)
    if html_file:
        from batchrun.tools.charts import write_html

        write_html(result, html_file)
        err.print(f"wrote {html_file}")
    if as_json:
        out.print_json(json.dumps(result.as_json()))
    else:
        _render_compare(result)
    sys.exit(EXIT_OK if result.all_identical else EXIT_PARTIAL)


@cli.command()
@state_options
@json_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most N runs.")
def runs(state_dir: Path, as_json: bool, limit: int | None) -> None:
    """Run history, the run recorded last first."""
    with Catalog(state_dir, create=False) as catalog:
        history = runs_status(catalog, limit, invocation.get("job"))
    if not history:
        raise RunNotFoundError(f"no runs yet in {state_dir}")
    if as_json:
        out.print_json(json.dumps([status.as_json() for status in history]))
    else:
        _render_runs(history)


@cli.command()
@click.argument("sql")
@click.option("--run", "run_id", default=None,
              help="Query this run's own staged rows (or `latest`) instead of the job's table.")
@state_options
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table")
@click.option("--unsafe", is_flag=True,
              help="Lift query's limits: let the SQL write files, read any file or URL and "
                   "load extensions (by default it only reads the staged files it queries).")
def query(sql: str, run_id: str | None, state_dir: Path, fmt: str, unsafe: bool) -> None:
    """Run SQL over the job's table (every file's latest committed version, across the
    runs of the latest run's job) and its <table>__rejects view (DuckDB)."""
    import duckdb

    from batchrun.staging import read_only_problem

    refused = None if unsafe else read_only_problem(sql)
    if refused:
        raise click.ClickException(f"query refused: {refused}")
    with _existing_catalog(state_dir, run_id or "latest") as catalog:
        db, damaged = _query_connection(catalog, run_id, unsafe)
        try:
            cursor = db.execute(sql)
            names = [column[0] for column in cursor.description or []]
            rows = cursor.fetchall() if names else []
        except duckdb.Error as exc:
            hint = " (query reads only the staged files it queries; --unsafe lifts this)" \
                if isinstance(exc, duckdb.PermissionException) else ""
            raise damaged(exc) or click.ClickException(
                f"query failed: {str(exc).splitlines()[0]}{hint}") from None
    _render_rows(names, rows, fmt)


def _query_connection(catalog: Catalog, run_id: str | None, unsafe: bool
                      ) -> tuple[Any, Callable[[Exception], Exception | None]]:
    """The confined DuckDB connection `query` runs on: the job's table of the latest run's
    job, or one run's rows; and what finds the damaged file behind a failed query."""
    from batchrun.jobtable import job_query_connection, job_table
    from batchrun.staging import query_connection

    record = catalog.run(_resolve_run(catalog, run_id or "latest"))
    if run_id is not None:
        return (query_connection(record.table, record.schema or {},
                                 catalog.committed(record.run_id), unsafe),
                lambda exc: _damaged_output(catalog, record.run_id, exc))
    table = job_table(catalog, record)
    runs = [part.run_id for part in table.slices]
    return (job_query_connection(table, unsafe),
            lambda exc: next(filter(None, (_damaged_output(catalog, r, exc) for r in runs)), None))


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


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path),
                default=Path("configs/data/suppliers"))
@click.option("--suppliers", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--files-per-supplier", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--file-mb", type=click.FloatRange(min=0.001), default=2.0, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
def demo(out_dir: Path, suppliers: int, files_per_supplier: int, file_mb: float, seed: int) -> None:
    """Generate the seed-shaped supplier-orders data set (configs/demo.toml reads it)."""
    from batchrun.tools.demo import DemoSpec, generate

    truth = generate(DemoSpec(out_dir=out_dir, suppliers=suppliers,
                              files_per_supplier=files_per_supplier,
                              file_bytes=int(file_mb * 1e6), seed=seed))
    err.print(f"wrote {len(truth.files)} files, {truth.total_rows:,} rows to {out_dir}")


# -- rendering ------------------------------------------------------------------------------


def _staging_override(staging_dir: str | None) -> str | None:
    """An s3:// prefix as given; a folder made absolute (against the current directory)."""
    if staging_dir is None or staging_dir.startswith("s3://"):
        return staging_dir
    return str(Path(staging_dir).resolve())


def _finish(outcome: RunOutcome, catalog: Catalog, as_json: bool) -> None:
    state_dir = catalog.path.parent
    report = run_status(catalog, outcome.run_id, detail=True)
    if as_json:
        out.print_json(json.dumps(report.as_json()))
    else:
        _render_summary(report, outcome.pool.pool if outcome.pool else None)
    code = _exit_code(outcome)
    if code != EXIT_OK and _resumable(report):
        err.print(f"resume with: {hint('resume', outcome.run_id)}", markup=False)
    elif code != EXIT_OK and report.counts.files.failed:
        err.print("nothing a resume can retry: the quarantined files are bad in themselves;"
                  f" replace them, then: {hint('retry-failed', outcome.run_id)}",
                  markup=False)
    if not as_json:
        err.print(f"log: {logs.run_log_path(state_dir, outcome.run_id)}"
                  f" (or: {hint('logs', outcome.run_id)})", markup=False)
    sys.exit(code)


def _resumable(report: RunStatus) -> bool:
    """Whether a resume has anything left to do: unfinished batches, or files quarantined
    for a reason that may have gone away (not a run failed by its rejects, nor files
    quarantined for their content)."""
    from batchrun.identity import may_recover

    b = report.counts.batches
    failed = report.detail.failed_files if report.detail else ()
    return b.committed < b.total or any(may_recover(f.error) for f in failed)


def _exit_code(outcome: RunOutcome) -> int:
    if outcome.state is RunState.SUCCEEDED:
        return EXIT_OK
    stopped = outcome.schedule.stopped_by if outcome.schedule else None
    if stopped == signal.SIGTERM:
        return EXIT_SIGTERM
    if stopped is not None:
        return EXIT_SIGINT
    return EXIT_PARTIAL


def _resolve_run(catalog: Catalog, run_id: str) -> str:
    """`latest` is the run recorded last (of the --job's job, when given)."""
    if run_id == "latest":
        return catalog.latest_run_id(invocation.get("job"))
    return catalog.run(run_id).run_id


def _existing_catalog(state_dir: Path, run_id: str) -> Catalog:
    """The state dir's catalog, which must exist (it is not created)."""
    try:
        return Catalog(state_dir, create=False)
    except RunNotFoundError as exc:
        if run_id == "latest":
            raise
        raise RunNotFoundError(f"no run {run_id!r}: {exc}") from None


def _resolve_resume_run(catalog: Catalog, state_dir: Path, run_id: str) -> str:
    """An explicit run id, or the one failed or interrupted run to resume: none exits 0
    ("nothing to resume"), several list themselves and exit 2 asking for a run id."""
    if run_id != "latest":
        return catalog.run(run_id).run_id
    job = invocation.get("job")
    candidates = [r for r in resumable_runs(catalog) if job is None or r.job == job]
    if not candidates:
        err.print(f"nothing to resume: no failed or interrupted run in {state_dir}")
        sys.exit(EXIT_OK)
    if len(candidates) > 1:
        err.print(f"{len(candidates)} unfinished runs in {state_dir}; name one:"
                  f" {hint('resume', 'RUN_ID')}", markup=False)
        for run in candidates:
            err.print(f"  {run.run_id}  job {run.job}  {effective_state(run).value}", markup=False)
        sys.exit(EXIT_USAGE)
    return candidates[0].run_id


from batchrun.cli.clean_command import clean_command  # noqa: E402 - its own module, registered here
from batchrun.cli.plan_command import plan  # noqa: E402 - its own module, registered here
from batchrun.cli.rejects_command import rejects  # noqa: E402 - its own module, registered here

cli.add_command(plan)
cli.add_command(rejects)
cli.add_command(clean_command)
