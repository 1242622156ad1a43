"""The `batchrun` console script and `python -m batchrun`.

Importing the CLI (click, pydantic, loguru, ...) takes a second or more on a cold cache; a
Ctrl-C in that second must end like one a moment later (exit 130, one line), not with a
KeyboardInterrupt traceback from deep inside an import. So the CLI is imported here, under
a guard, by a module that imports nothing heavy itself.
"""

from __future__ import annotations

import sys

EXIT_SIGINT = 130
"""As `batchrun.cli.exits.EXIT_SIGINT` (not imported from there: that is the slow import)."""


def main() -> None:
    try:
        from batchrun.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("aborted\n")
        sys.exit(EXIT_SIGINT)
    cli_main()
