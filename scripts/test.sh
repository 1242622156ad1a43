#!/usr/bin/env bash
# Install batchrun with its test extras into .venv and run the whole test suite.
# This is the README's test command; .ci/run calls it.
# The suite runs on BATCHRUN_TEST_WORKERS pytest-xdist workers (default 2: this project's
# machines have 2 cores; most of a test's time is Ray starting and stopping, so two at once
# nearly halve the wall time). BATCHRUN_TEST_WORKERS=0 runs it in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
# The HTML pages are tested in Debian's chromium (tests/browser.py); installed once, quietly.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "note: chromium is not installed (apt-get install chromium): the browser tests will skip" >&2
        export BATCHRUN_SKIP_BROWSER=1
    fi
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python -m ruff check batchrun tests scripts
.venv/bin/python -m mypy batchrun
export RAY_USAGE_STATS_ENABLED=0  # Ray's usage reporting would be traffic off this machine
exec .venv/bin/python -m pytest -q -n "${BATCHRUN_TEST_WORKERS:-2}" --dist loadgroup --durations=25 "$@"
