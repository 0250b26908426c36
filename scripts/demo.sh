#!/usr/bin/env bash
# The README's main command: set up (idempotent), then start the Flow on Milvus Lite with a demo
# question bank, show a text->image and an image->text search, and keep serving (Ctrl-C stops).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/qbank-demo "$@"
