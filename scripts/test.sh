#!/usr/bin/env bash
# Install batchrun with its test extras into .venv and run the whole test suite.
# This is the README's test command; .ci/run calls it.
# The suite runs on BATCHRUN_TEST_WORKERS pytest-xdist workers (default 2: this project's
# machines have 2 cores; most of a test's time is Ray starting and stopping, so two at once
# nearly halve the wall time). BATCHRUN_TEST_WORKERS=0 runs it in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python -m ruff check batchrun tests scripts
.venv/bin/python -m mypy batchrun
export RAY_USAGE_STATS_ENABLED=0  # Ray's usage reporting would be traffic off this machine
exec .venv/bin/python -m pytest -q -n "${BATCHRUN_TEST_WORKERS:-2}" --dist loadgroup --durations=25 "$@"
