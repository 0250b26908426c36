#!/usr/bin/env bash
# Create .venv and install the project with the pinned stack (constraints.txt). Idempotent.
# CPU torch: the +cpu wheel (a local find-links wheel here, PyTorch's CPU index elsewhere), never a
# CUDA build. Set QBANK_TORCH_INDEX to use another index (e.g. a CUDA one on GPU hosts).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${QBANK_VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  echo "[bootstrap] installing torch 2.13.0 (CPU)"
  if ! "${PIP[@]}" install -q "torch==2.13.0+cpu" 2>/dev/null; then
    "${PIP[@]}" install -q "torch==2.13.0+cpu" --index-url "${QBANK_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
  fi
fi

echo "[bootstrap] installing the project and compat/ (editable) with their pinned dependencies"
# Editable: tests, executors and console scripts run the tree being edited. compat/ is the jina client
# fix (its own small distribution, for clip-client users too); an editable install does not ship its
# qbank_jina_compat.pth, so it is copied into site-packages.
"${PIP[@]}" install -q -c constraints.txt -e ./compat -e ".[encoder,indexer,ocr,openvino,client,dev]" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp compat/qbank_jina_compat.pth "$SITE/qbank_jina_compat.pth"
# The import check loads jina, whose imports print third-party notices (setuptools' pkg_resources one):
# qbank.quiet silences those it knows, as in qbank's commands (QBANK_SHOW_WARNINGS=true shows them).
"$VENV/bin/python" -c "from qbank.quiet import quiet_known_warnings; quiet_known_warnings(); import qbank, qbank_jina_compat, jina, docarray, clip_client, pymilvus, torch, onnxruntime, rapidocr; print('[bootstrap] ok: jina', jina.__version__, 'docarray', docarray.__version__, 'torch', torch.__version__)"
# The demo's stand-in model (a toy CLIP trained on drawn figures, about 75 s on 2 cores), built once
# here so that `bash scripts/demo.sh` serves without training first; cached in models/ by its recipe.
if [ -z "${QBANK_MODEL:-}" ]; then
  echo "[bootstrap] the demo's toy CLIP (models/toy-chinese-clip; trained once, about 75 s on 2 cores, then cached)"
  "$VENV/bin/python" -m qbank_devtools.toy_clip models/toy-chinese-clip | sed 's/^/[bootstrap] /'
fi
