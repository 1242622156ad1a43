"""The command line: parse, call the library, render, map errors to exit codes.

This package is the only place that imports click or prints. `invoke` runs a command and
turns every library error into one line on stderr and a named exit code (`exits.py`);
nothing else reaches the user, never a traceback.
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from pathlib import Path

import click

from batchrun import logs
from batchrun.catalog import Catalog
from batchrun.cli.commands import cli
from batchrun.cli.exits import (
    EXIT_ENVIRONMENT,
    EXIT_INTERNAL,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USAGE,
)
from batchrun.cli.options import err, hint, invocation, invoked_program, state_dir_option
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

__all__ = ["EXIT_ENVIRONMENT", "EXIT_INTERNAL", "EXIT_LOCKED", "EXIT_OK", "EXIT_PARTIAL",
           "EXIT_SIGINT", "EXIT_SIGTERM", "EXIT_USAGE", "cli", "invoke", "main", "state_dir_option"]


def invoke(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; library errors map to named codes here."""
    invocation["argv"] = sys.argv[1:] if argv is None else argv
    invocation["prog"] = invoked_program() if argv is None else "batchrun"
    try:
        cli.main(args=argv, prog_name="batchrun", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except click.exceptions.Abort:
        return _aborted()
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
        invocation.clear()
    return EXIT_OK


def _aborted() -> int:
    """Ctrl-C outside a run's drain (e.g. while Ray starts): one line, and the resume
    command when it stopped a run a resume can finish."""
    run_id, state_dir = invocation.get("run_id"), invocation.get("state_dir")
    if run_id and state_dir is not None and _stopped(Path(state_dir), run_id):
        err.print(f"interrupted: run {run_id} was stopped; resume with: {hint('resume', run_id)}",
                  markup=False)
    else:
        err.print("aborted")
    return EXIT_SIGINT


def _stopped(state_dir: Path, run_id: str) -> bool:
    from batchrun.model import RunState

    try:
        with Catalog(state_dir, create=False) as catalog:
            return catalog.run(run_id).state in (RunState.INTERRUPTED, RunState.FAILED)
    except BatchrunError:
        return False


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
    state_dir, run_id = invocation.get("state_dir"), invocation.get("run_id")
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
                command = " ".join(invocation.get("argv", []))
                handle.write(f"internal error in `batchrun {command}`:\n{text}")
            return path
        except OSError:
            continue
    return None


def main() -> None:
    sys.exit(invoke())
