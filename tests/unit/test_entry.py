"""The console script's entry: a Ctrl-C while the CLI is still being imported."""

from __future__ import annotations

import subprocess
import sys

from batchrun.cli.exits import EXIT_SIGINT

INTERRUPTED_IMPORT = """
import sys
class Interrupt:
    @staticmethod
    def find_spec(name, *args):
        if name == "batchrun.cli":
            raise KeyboardInterrupt  # as a Ctrl-C during the slow import does
sys.meta_path.insert(0, Interrupt)
from batchrun.entry import main
main()
"""


def test_ctrl_c_while_the_cli_is_importing_exits_130_without_a_traceback() -> None:
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_IMPORT], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == EXIT_SIGINT
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == "aborted"


def test_the_console_script_and_python_m_use_the_guarded_entry() -> None:
    done = subprocess.run([sys.executable, "-m", "batchrun", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "Usage" in done.stdout
