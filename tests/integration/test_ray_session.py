"""Starting Ray: a lean local instance, and the planning that runs beside its start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from batchrun.catalog import Catalog
from batchrun.cli import EXIT_OK, EXIT_USAGE, invoke
from batchrun.tools.demo import DemoTruth
from tests.conftest import ON_RAY, assert_exactly_once, write_job

LEAN_START = """
import json
import os
from pathlib import Path

import psutil
import ray

from batchrun.config import validate_config
from batchrun.execution.ray_session import connect_ray
from batchrun.execution.settings import resolve_settings

config = validate_config({"job": {"name": "j", "table": "t"}, "source": {"paths": ["*.csv"]},
                          "execution": {"workers": 2}}, "test")
ready = connect_ray(resolve_settings(config), config, Path("."))
commands = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
logs = sorted(os.listdir(ray._private.worker._global_node.get_logs_dir_path()))
answer = ray.get(ray.remote(lambda: 42).remote())
ray.shutdown()
print(json.dumps({"started": ready.started, "commands": commands, "logs": logs,
                  "answer": answer}))
"""


def test_a_local_instance_starts_without_the_monitor_and_the_log_monitor(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", LEAN_START], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["started"] and seen["answer"] == 42
    commands = seen["commands"]
    assert any("raylet" in c for c in commands) and any("gcs_server" in c for c in commands)
    assert not [c for c in commands if "autoscaler/_private/monitor.py" in c or "log_monitor.py" in c]
    # never started at all (not started, then stopped): each would have opened its log
    assert "raylet.out" in seen["logs"]
    assert not {"monitor.log", "monitor.out", "log_monitor.log"} & set(seen["logs"])


def test_a_fresh_run_counts_planning_and_ray_start_in_its_duration(
        tmp_path: Path, demo_data: tuple[Path, DemoTruth], ray_session: None) -> None:
    data, truth = demo_data
    job = write_job(tmp_path, data)
    state = tmp_path / "state"
    code = invoke(["run", str(job), "--state-dir", str(state), "--json", "--no-progress"])
    assert code == EXIT_OK
    run_id = assert_exactly_once(state, truth.total_rows)
    catalog = Catalog(state)
    run = catalog.run(run_id)
    assert run.started_at == run.created_at <= min(a["queued_at"] for a in catalog.attempt_rows(run_id))
    assert sum(b["n_files"] for b in catalog.batches(run_id)) == len(truth.files)


PLANNING_FAILS = """
import sys
from pathlib import Path

import ray

from batchrun.catalog import Catalog
from batchrun.config import load_job
from batchrun.execution.start import start_run

try:
    with Catalog(Path(sys.argv[2])) as catalog:
        start_run(load_job(Path(sys.argv[1])), catalog)
except Exception as exc:
    print(type(exc).__name__)
print("ray still up" if ray.is_initialized() else "ray shut down")
"""


def test_when_planning_fails_the_local_ray_it_started_is_shut_down(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    job = write_job(tmp_path, tmp_path / "empty", execution=ON_RAY)
    done = subprocess.run([sys.executable, "-c", PLANNING_FAILS, str(job), str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ConfigError", "ray", "shut", "down"]


def test_a_job_with_no_files_fails_with_a_one_line_error_and_plans_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    job = write_job(tmp_path, tmp_path / "empty")
    state = tmp_path / "state"
    done = subprocess.run([sys.executable, "-m", "batchrun", "run", str(job), "--state-dir",
                           str(state), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "no files match" in done.stderr and str(tmp_path) in done.stderr
    assert Catalog(state).run_ids() == []
