#!/usr/bin/env bash
# Install batchrun into .venv, generate the demo data and run the demo job end to end.
# This is the README's quick-start command.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
.venv/bin/batchrun demo configs/data/suppliers "$@"
.venv/bin/batchrun run configs/demo.toml
.venv/bin/batchrun query --job configs/demo.toml "SELECT currency, count(*) AS orders, sum(quantity * unit_price) AS revenue FROM orders GROUP BY currency ORDER BY currency"
