#!/usr/bin/env bash
# Install tvts and everything it needs, at the exact versions in constraints.txt.
# Idempotent: a second run installs nothing. Usage: scripts/install.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"
"$PYTHON" -m pip install --quiet --disable-pip-version-check \
  -c constraints.txt -e ".${extras}"
