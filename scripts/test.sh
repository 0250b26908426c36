#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, run the whole suite on CPU, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# tests/test_k8s.py renders k8s/ with the real kustomize (kubectl kustomize); Debian's kubectl where missing.
if ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null; then
  echo "[test] installing kubectl (kustomize) for tests/test_k8s.py"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null
fi
# OCR tests render question photos in a Chinese font (Debian's small WenQuanYi Micro Hei), and a
# student's handwriting over them in a Kai face (fonts-arphic-ukai; qbank_devtools.photos.pen_marks).
if ! fc-list 2>/dev/null | grep -qi "wqy-microhei" || ! fc-list 2>/dev/null | grep -qi "ukai"; then
  echo "[test] installing fonts-wqy-microhei and fonts-arphic-ukai for the OCR tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei fonts-arphic-ukai fontconfig >/dev/null
fi
# tests/test_page.py drives the search page in Debian's headless Chromium (Selenium + chromedriver).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "[test] installing chromium and chromium-driver for the search page tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
# tests/test_metrics.py scrapes a real Flow with a real Prometheus (Debian's package).
if ! command -v prometheus >/dev/null; then
  echo "[test] installing prometheus for tests/test_metrics.py"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -p no:cacheprovider "$@"
