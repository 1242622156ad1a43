"""Shared options and the two consoles (stdout for results, stderr for everything else)."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console

DEFAULT_STATE_DIR = ".batchrun"


invocation: dict[str, Any] = {}
"""The state dir and run id of the command running now: where an internal error's
traceback is written (the run's log)."""


out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


err = Console(stderr=True, highlight=False, soft_wrap=True)


def _remember_state_dir(ctx: click.Context, param: click.Parameter, value: Path | None
                        ) -> Path | None:
    if value is not None:
        invocation["state_dir"] = value
    return value


state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path),
    default=None, envvar="BATCHRUN_STATE_DIR", callback=_remember_state_dir,
    help="Where the catalog, locks and logs live [env BATCHRUN_STATE_DIR; default: .batchrun "
         "beside the job file, or in the current directory for a command given no job].")


def job_state_dir(job_file: Path | str) -> Path:
    """A job's own state dir: `.batchrun` beside the job file (the real file, as staging is
    resolved against it). One job has one state, one history and one lock wherever it is
    run from. Shown as `.batchrun` when that is the current directory's, else as an
    absolute path: the hints carry it, and a cron mail's `--state-dir jobs/.batchrun`
    would work only when pasted in the directory cron ran in."""
    real = Path(os.path.realpath(Path(job_file).expanduser())).parent / DEFAULT_STATE_DIR
    return Path(DEFAULT_STATE_DIR) if real == Path(os.path.realpath(DEFAULT_STATE_DIR)) else real


def resolve_state_dir(state_dir: Path | None, job_file: Path | str | None) -> Path:
    """--state-dir (or BATCHRUN_STATE_DIR) when given; else the job's state dir; else
    ./.batchrun."""
    chosen = (state_dir if state_dir is not None
              else job_state_dir(job_file) if job_file is not None else Path(DEFAULT_STATE_DIR))
    invocation["state_dir"] = chosen
    return chosen


def state_options(command: Any) -> Any:
    """--state-dir and --job for the commands that are given no job file: the function gets
    the resolved `state_dir`; with --job, `latest` means that job's latest run."""
    @functools.wraps(command)
    def resolved(*args: Any, state_dir: Path | None, job_file: Path | None, **kwargs: Any) -> Any:
        invocation["job"] = _job_name(job_file) if job_file is not None else None
        return command(*args, state_dir=resolve_state_dir(state_dir, job_file), **kwargs)

    resolved = click.option(
        "--job", "job_file", type=click.Path(dir_okay=False, path_type=Path),
        envvar="BATCHRUN_JOB",
        help="The job file whose state to use (.batchrun beside it) and whose latest run "
             "`latest` means [env BATCHRUN_JOB].")(resolved)
    return state_dir_option(resolved)


def _job_name(job_file: Path) -> str:
    from batchrun.config import load_job

    return load_job(job_file).name


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


workers_option = click.option("--workers", type=click.IntRange(min=1), envvar="BATCHRUN_WORKERS",
                              help="Override execution.workers [env BATCHRUN_WORKERS].")


address_option = click.option("--address", envvar="BATCHRUN_ADDRESS",
                              help="Ray cluster to join, e.g. auto or 127.0.0.1:6379 "
                                   "[env BATCHRUN_ADDRESS].")


run_id_option = click.option(
    "--run-id", envvar="BATCHRUN_RUN_ID",
    help="The new run's id instead of a generated one (letters, digits, . _ -), e.g. the "
         "Ray job's --submission-id; its retry is `batchrun resume RUN_ID` "
         "[env BATCHRUN_RUN_ID].")


full_refresh_option = click.option(
    "--full-refresh", is_flag=True, envvar="BATCHRUN_FULL_REFRESH",
    help="Plan every matched file, not only the new and changed ones; the job's table then "
         "serves this run's version of each [env BATCHRUN_FULL_REFRESH].")


_CONTROL_FLAGS = [
    # (flag, job key, click type, help)
    ("--mode", "execution.mode", click.Choice(["parallel", "sequential"]),
     "parallel (with the limits below) or sequential (one batch at a time, fail fast)"),
    ("--pool", "execution.pool", click.Choice(["auto", "ray", "inline"]),
     "where the batches run: ray (worker actors), inline (this process, no Ray) or auto"
     " (inline for a small local plan)"),
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


# -- what a run shows and writes besides its data (run, resume, retry-failed) ------------------


@dataclass
class RunOutput:
    """The output options of a run command, gathered by their callbacks (`run_output`)."""

    progress: bool | None = None
    interval: float = 60.0
    quiet: bool = False
    log_format: str | None = None
    """None: as the run's log began (a resume), else text."""
    metrics_file: Path | None = None


def run_output(context: click.Context | None = None) -> RunOutput:
    """The current command's output options (all defaults outside a run command)."""
    context = context or click.get_current_context(silent=True)
    if context is None:
        return RunOutput()
    output: RunOutput = context.meta.setdefault("batchrun.run_output", RunOutput())
    return output


def _keep(name: str, convert: Any = None) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            setattr(run_output(ctx), name, convert(value) if convert else value)
        return value
    return callback


def _interval(text: str) -> float:
    from batchrun.config import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter(f"expected a duration above 0, got {text!r}")
    return seconds


def _metrics_target(text: str) -> Path:
    """The textfile's folder must exist and be writable: checked before the run starts, so
    a typo never costs a night's run (or its metrics)."""
    path = Path(text)
    folder = path.parent
    if not folder.is_dir():
        raise click.BadParameter(f"folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.BadParameter(f"folder {str(folder)!r} is not writable")
    if path.is_dir():
        raise click.BadParameter(f"{text!r} is a folder, expected a file name")
    return path


def run_output_options(command: Any) -> Any:
    """--progress/--no-progress, --progress-interval, --quiet, --log-format, --metrics-file
    (each with its environment twin where a cron job wants one)."""
    options = [
        click.option("--progress/--no-progress", default=None, expose_value=False,
                     callback=_keep("progress"),
                     help="Show progress: live at a terminal, a plain line every "
                          "--progress-interval without one (default: on)."),
        click.option("--progress-interval", metavar="DURATION", envvar="BATCHRUN_PROGRESS_INTERVAL",
                     expose_value=False, callback=_keep("interval", _interval),
                     help="Without a terminal, one progress line this often, e.g. 30s "
                          "[default: 60s; env BATCHRUN_PROGRESS_INTERVAL]."),
        click.option("--quiet", "-q", is_flag=True, default=None, expose_value=False,
                     callback=_keep("quiet"), help="Print only the summary (and errors)."),
        click.option("--log-format", type=click.Choice(["text", "json"]), expose_value=False,
                     envvar="BATCHRUN_LOG_FORMAT", callback=_keep("log_format"),
                     help="The run log's lines: text, or JSON lines for log shippers "
                          "[default: text; env BATCHRUN_LOG_FORMAT]."),
        click.option("--metrics-file", metavar="PATH", envvar="BATCHRUN_METRICS_FILE",
                     expose_value=False, callback=_keep("metrics_file", _metrics_target),
                     help="At the end of the run, write its metrics there as a Prometheus "
                          "textfile (node_exporter's textfile collector) "
                          "[env BATCHRUN_METRICS_FILE]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def invoked_program() -> str:
    """The command as this process was started, to paste back into a shell:
    `python -m batchrun` (with the interpreter as typed), the script's path as typed
    (`.venv/bin/batchrun`), or plain `batchrun` when that is what PATH finds."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "__main__.py":
        python = sys.orig_argv[0] if getattr(sys, "orig_argv", None) else sys.executable
        return f"{shlex.quote(python)} -m batchrun"
    if not argv0 or argv0.startswith("-"):
        return "batchrun"
    found = shutil.which(Path(argv0).name)
    if found and Path(argv0).exists() and os.path.samefile(found, argv0):
        return Path(argv0).name
    return shlex.quote(argv0)


def hint(*args: str | Path) -> str:
    """A command to paste: the program as invoked, the arguments quoted, and --state-dir
    when this command was given one that is not the default."""
    words = [shlex.quote(str(arg)) for arg in args]
    state_dir = invocation.get("state_dir")
    if state_dir is not None and os.path.abspath(state_dir) != os.path.abspath(DEFAULT_STATE_DIR):
        words += ["--state-dir", shlex.quote(str(state_dir))]
    return " ".join([invocation.get("prog", "batchrun"), *words])
