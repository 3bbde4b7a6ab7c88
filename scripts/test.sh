#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite except GPU-only tests, on LMSAN_TEST_WORKERS
# parallel workers (default 2; 0 runs in one process). Each test module runs on one worker; the
# modules that share the e2e mining runs share one (tests/conftest.py). With an empty model cache
# the models are built once, whichever worker needs them first (the other waits on the cache lock).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -m "not gpu" -n "${LMSAN_TEST_WORKERS:-2}" --dist loadgroup "$@"
