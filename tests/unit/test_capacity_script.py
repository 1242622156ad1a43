"""scripts/capacity.py, which `scripts/bench.py --driver-capacity` runs: it plans for real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_planning_capacity_script_plans_every_file_it_made_into_batches() -> None:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "capacity.py"), "300",
                           "--max-files", "100"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["planned_files"] == 300
    assert result["batches"] >= 3
