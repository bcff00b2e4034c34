#!/usr/bin/env bash
# From a fresh clone: install with the test extras, lint, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
export DVC_NO_ANALYTICS=1
ruff check .
# two processes, a test file each at a time (a module's fixtures stay in one process): the
# end-to-end tests wait on DVC, local servers and subprocesses much of the time.
# TEST_WORKERS=1 runs them in this process.
if [[ "${TEST_WORKERS:-2}" == "1" ]]; then
  python3 -m pytest -q "$@"
else
  python3 -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
fi
