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
from batchrun.cli.options import (
    DEFAULT_STATE_DIR,
    address_option,
    control_options,
    control_overrides,
    err,
    invocation,
    json_option,
    out,
    run_id_option,
    state_dir_option,
    workers_option,
)
from batchrun.cli.render import (
    _progress_enabled,
    _ProgressView,
    _render_compare,
    _render_report,
    _render_rows,
    _render_runs,
    _render_status,
    _render_summary,
    _stdout_for_results,
)
from batchrun.config import load_job
from batchrun.errors import (
    RunNotFoundError,
)
from batchrun.execution.stopping import StopToken
from batchrun.model import Committed, RunRecord, RunState
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


@cli.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@workers_option
@address_option
@click.option("--staging-dir", type=click.Path(file_okay=False, path_type=str),
              envvar="BATCHRUN_STAGING_DIR",
              help="Override staging.dir: a folder or s3://bucket/prefix [env BATCHRUN_STAGING_DIR].")
@state_dir_option
@json_option
@click.option("--progress/--no-progress", default=None, help="Show a progress bar (default: on a TTY).")
@click.option("--group-by", envvar="BATCHRUN_GROUP_BY",
              help="Override source.group_by: parent_dir, none or a regex with a named group "
                   "[env BATCHRUN_GROUP_BY].")
@run_id_option
@control_options
def run(job_file: Path, workers: int | None, address: str | None, staging_dir: str | None,
        state_dir: Path, as_json: bool, progress: bool | None, group_by: str | None,
        run_id: str | None, **controls: Any) -> None:
    """Plan JOB_FILE, run every batch on Ray, stage and checkpoint each one."""
    from batchrun.execution.prepare import check_job
    from batchrun.execution.start import start_run

    overrides = {"execution.workers": workers, "execution.address": address,
                 "staging.dir": _staging_override(staging_dir),
                 "source.group_by": group_by, **control_overrides(controls)}
    job = load_job(job_file, overrides)
    check_job(job)  # before the state dir is touched: a bad job leaves nothing behind

    def planned(event: dict[str, Any]) -> None:
        invocation["run_id"] = event["run_id"]
        view.planned(event)

    with Catalog(state_dir) as catalog:
        with _ProgressView(enabled=_progress_enabled(progress, as_json)) as view, \
                _stdout_for_results():
            outcome = start_run(job, catalog, stop=StopToken(), on_progress=view.advance,
                                on_planned=planned, run_id=run_id)
        _finish(outcome, catalog, as_json)


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
    from batchrun.execution.start import refuse_staging_changes, resume_run

    overrides = {"execution.workers": workers, "execution.address": address,
                 **control_overrides(controls)}
    refuse_staging_changes(run_id, overrides)  # whichever run it is: no resume honours them
    with _existing_catalog(state_dir, run_id) as catalog:
        run_id = (_resolve_run(catalog, run_id) if repair
                  else _resolve_resume_run(catalog, state_dir, run_id))
        invocation["run_id"] = run_id
        with _ProgressView(enabled=_progress_enabled(progress, as_json)) as view:
            status = run_status(catalog, run_id)
            view.planned({"run_id": run_id, "batches": status.counts.batches.total})
            view.advance({"committed": status.counts.batches.committed,
                          "rows": status.counts.rows.staged})
            with _stdout_for_results():
                outcome = resume_run(run_id, catalog, overrides, stop=StopToken(),
                                     on_progress=view.advance, repair=repair)
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
@state_dir_option
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
@state_dir_option
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
@state_dir_option
@json_option
def report(run_id: str, state_dir: Path, as_json: bool) -> None:
    """Throughput, batch latency, errors, retries and concurrency per source of a run."""
    from batchrun.metrics import run_metrics

    with _existing_catalog(state_dir, run_id) as catalog:
        metrics = run_metrics(catalog, _resolve_run(catalog, run_id))
    if as_json:
        out.print_json(json.dumps(metrics.as_json()))
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

    from batchrun.execution.prepare import check_job
    from batchrun.tools.compare import DEFAULT_FAULTS, compare, parse_shapes

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
                     on_shape=lambda text: err.print(f"compare {text}", markup=False))
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
@state_dir_option
@json_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most N runs.")
def runs(state_dir: Path, as_json: bool, limit: int | None) -> None:
    """Run history, the run recorded last first."""
    with Catalog(state_dir, create=False) as catalog:
        history = runs_status(catalog, limit)
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
@state_dir_option
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
    with _existing_catalog(state_dir, run_id) as catalog:
        run_id = _resolve_run(catalog, run_id)
        record = catalog.run(run_id)
        committed = catalog.committed(run_id)
        rows = _rejects_rows(catalog, run_id, record, committed, file_filter, rule, limit)
    _render_rows(*rows, "json" if as_json else "table")


def _rejects_rows(catalog: Catalog, run_id: str, record: RunRecord, committed: Committed,
                  file_filter: str | None, rule: str | None, limit: int | None
                  ) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The rejects view's rows for `batchrun rejects` (column names, rows)."""
    import duckdb

    from batchrun.staging import query_connection, quote_identifier, unreadable_output

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
    return names, rows


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
        _render_summary(report)
    code = _exit_code(outcome)
    if code != EXIT_OK and _resumable(report):
        err.print(f"resume with: {_resume_command(outcome.run_id, state_dir)}")
    elif code != EXIT_OK and report.counts.files.failed:
        err.print("nothing a resume can retry: the quarantined files are bad in themselves;"
                  " fix or replace them and run the job again")
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


def _resume_command(run_id: str, state_dir: Path) -> str:
    command = f"batchrun resume {run_id}"
    if os.path.abspath(state_dir) != os.path.abspath(DEFAULT_STATE_DIR):
        command += f" --state-dir {state_dir}"
    return command


def _resolve_run(catalog: Catalog, run_id: str) -> str:
    """`latest` is the run recorded last."""
    return catalog.latest_run_id() if run_id == "latest" else catalog.run(run_id).run_id


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




from batchrun.cli.clean_command import clean_command  # noqa: E402 - registered below

cli.add_command(clean_command)
