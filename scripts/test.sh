#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite except GPU-only tests (~15 minutes on 2 cores
# with an empty model cache; far less once $LMSAN_CACHE holds the built models).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -m "not gpu" "$@"
