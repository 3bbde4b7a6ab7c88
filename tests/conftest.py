"""Suite-wide settings: offline hub, fixed seeds, few threads.

Expensive models are cached by ``lmsan.models.zoo`` and ``lmsan.attacks.zoo`` under
``$LMSAN_CACHE`` (default ``~/.cache/lmsan``), keyed by a hash of their builder parameters and the
lmsan version, so a session builds each at most once and later sessions reuse them.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
    except ImportError:  # the runtime tests run without torch in subprocesses
        return
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep each module's tests on one worker of a parallel run (``scripts/test.sh``: ``-n 2
    --dist loadgroup``), so its module fixtures are built once: every test without an explicit
    ``xdist_group`` gets its module's name, unless the module sets ``SPREAD_TESTS = True`` (its
    tests share no costly fixture, so they spread over the workers). Tests that share a session
    mining run name one group (``POR_RUNS`` in the e2e tests: ``mined`` caches its runs per
    worker process). Models are shared through the
    on-disk cache, whose builds lock (``lmsan.files.cache_lock``). Skip ``gpu`` tests where CUDA is
    missing (they run from ``scripts/test_gpu.sh`` on a device)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None and not getattr(item.module, "SPREAD_TESTS", False):
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if not cuda:
        skip = pytest.mark.skip(reason="needs CUDA (gpu marker; run scripts/test_gpu.sh on a GPU machine)")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)
