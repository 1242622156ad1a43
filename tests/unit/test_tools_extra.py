"""The `tools` extra: plotly is optional, the runtime never loads the tooling, and
`compare --html` without plotly says what to install, in one line, with a named exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from batchrun.cli import EXIT_ENVIRONMENT
from batchrun.tools.sampler import TreeWatcher
from batchrun.tools.tomltext import toml_text
from tests.conftest import REPO, write_job

BLOCK_PLOTLY = "import sys; sys.modules['plotly'] = None  # `import plotly` now fails\n"
"""Prefix for `python -c`: this interpreter behaves as if plotly were not installed."""

TOOLING = ("batchrun.tools.demo", "batchrun.tools.compare", "batchrun.tools.charts")
"""Loaded by the CLI's demo and compare commands only. (batchrun.tools.faults leaves for
the hooks; until then the runtime still imports it.)"""

RUNTIME = ("batchrun", "batchrun.cli", "batchrun.cli.commands", "batchrun.execution.start",
           "batchrun.execution.run", "batchrun.execution.scheduler", "batchrun.pipeline",
           "batchrun.staging", "batchrun.plan", "batchrun.catalog", "batchrun.report")


def python_without_plotly(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK_PLOTLY + code], cwd=cwd, text=True,
                          capture_output=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_plotly_is_in_the_tools_extra_not_in_the_core_dependencies() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("plotly") for dep in project["dependencies"])
    assert any(dep.startswith("plotly") for dep in project["optional-dependencies"]["tools"])
    own = [dep for dep in project["optional-dependencies"]["test"] if dep.startswith("batchrun[")]
    assert own and "tools" in own[0].removeprefix("batchrun[").rstrip("]").split(",")
    assert project["requires-python"] == ">=3.11"


def test_compare_html_without_plotly_fails_in_one_line_naming_the_extra(tmp_path: Path) -> None:
    data = tmp_path / "data" / "acme"
    data.mkdir(parents=True)
    (data / "orders.csv").write_text("order_id\n1\n")
    job = write_job(tmp_path, tmp_path / "data")
    scratch = tmp_path / "scratch"
    argv = ["compare", str(job), "--shapes", "sequential", "--html", str(tmp_path / "c.html"),
            "--scratch", str(scratch)]
    done = python_without_plotly(f"import sys; sys.argv = ['batchrun', *{argv!r}]\n"
                                 "from batchrun.cli import main; main()", tmp_path)
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "pip install 'batchrun[tools]'" in lines[0] and "plotly" in lines[0]
    assert not scratch.exists()  # refused before running any shape
    assert not (tmp_path / "c.html").exists()


def test_the_runtime_imports_neither_plotly_nor_the_tooling(tmp_path: Path) -> None:
    imports = "; ".join(f"import {module}" for module in RUNTIME)
    done = python_without_plotly(
        f"{imports}\nimport json; print(json.dumps([name for name, module in sys.modules.items()"
        " if module is not None]))", tmp_path)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "batchrun.execution.start" in loaded
    assert [name for name in loaded if name.split(".")[0] == "plotly" or name in TOOLING] == []


def test_the_compare_table_renders_without_plotly(tmp_path: Path) -> None:
    done = python_without_plotly(
        "from batchrun.tools.charts import COLUMNS, _cell\n"
        "print(len(COLUMNS), _cell(1234), _cell(None), _cell(True))", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["16", "1,234", "-", "yes"]


def test_a_job_document_written_as_toml_reads_back_the_same() -> None:
    doc = tomllib.loads((REPO / "configs" / "demo.toml").read_text())
    doc["source"]["csv"] = {"delimiter": ";", "quote": "'"}
    doc["schema"]["columns"]["odd name"] = {"type": "string", "allowed": ["a\"b", "c\\d"]}
    assert tomllib.loads(toml_text(doc)) == doc
    assert "[schema.columns]" in toml_text(doc) and "[schema]" not in toml_text(doc)


def test_the_tree_watcher_sees_a_child_process_memory_and_cpu() -> None:
    code = "x = b'x' * 200_000_000; import time; t = time.process_time(); " \
           "exec('while time.process_time() - t < 0.3: pass')"
    started = time.time()
    with subprocess.Popen([sys.executable, "-c", code]) as child:
        with TreeWatcher(child.pid, 0.02) as watcher:
            child.wait(timeout=60)
    assert watcher.peak >= 200_000_000 and watcher.peak_driver >= 200_000_000
    assert watcher.peak_workers == 0  # no process titled ray::
    assert watcher.peak_one["driver"] == watcher.peak_driver and "workers" not in watcher.peak_one
    assert started < watcher.peak_one_at["driver"] < time.time()
    assert watcher.cpu_by_kind()["driver"] >= 0.2
