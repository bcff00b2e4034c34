#!/usr/bin/env bash
# From a fresh clone: install, then run the whole pipeline on the embedded demo default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# No git history is needed for `dvc repro`; the analytics ping is off for offline machines.
export DVC_NO_ANALYTICS=1
dvc repro "$@"
