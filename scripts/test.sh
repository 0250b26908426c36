#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, run the whole suite on CPU, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -p no:cacheprovider "$@"
