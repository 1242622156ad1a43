"""Shared options and the two consoles (stdout for results, stderr for everything else)."""

from __future__ import annotations

import functools
import os
import sys
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
    resolved against it), shown relative to the current directory when it lies below it.
    One job has one state, one history and one lock wherever it is run from."""
    real = Path(os.path.realpath(Path(job_file).expanduser())).parent / DEFAULT_STATE_DIR
    relative = os.path.relpath(real)
    return Path(relative) if not relative.startswith("..") else real


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
