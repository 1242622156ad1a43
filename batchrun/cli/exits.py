"""Exit codes: the contract with scripts and cron (documented in the README)."""

from __future__ import annotations

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


def exit_code_for(exc: BaseException) -> int:
    """The exit code `batchrun.cli.invoke` gives a command that ends with `exc`."""
    import click

    from batchrun.errors import BatchrunError, ConfigError, RunActiveError, RunNotFoundError

    if isinstance(exc, SystemExit):
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    if isinstance(exc, (KeyboardInterrupt, click.exceptions.Abort)):
        return EXIT_SIGINT
    if isinstance(exc, (click.ClickException, ConfigError, RunNotFoundError)):
        return EXIT_USAGE
    if isinstance(exc, RunActiveError):
        return EXIT_LOCKED
    if isinstance(exc, BatchrunError):
        return EXIT_ENVIRONMENT
    return EXIT_INTERNAL
