#!/usr/bin/env bash
# From a fresh clone: install with the test extras, lint, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
export DVC_NO_ANALYTICS=1
ruff check .
python3 -m pytest -q "$@"
