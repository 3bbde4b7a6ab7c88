"""Session fixtures for the end-to-end tests: cached tiny models and attacked models.

Every model comes from ``lmsan.attacks.standard_attack`` / ``lmsan.models.zoo.default_tiny``,
which cache under ``$LMSAN_CACHE`` keyed by the builder parameters and the lmsan version: a
session builds each at most once, later sessions reuse them, and the benchmarks, the demo and
every e2e test share the same builds. Use ``attacked("<name>")`` for any ``STANDARD_ATTACKS``
entry and ``"<name>-clean"`` for its clean control (trained identically minus the trigger loss).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    """One torch thread: on a small shared CPU two OpenMP threads are slower than one."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def attacked() -> Callable[[str], Path]:
    """``attacked(name)`` -> cached model directory of a standard attack or its ``-clean`` control."""
    from lmsan.attacks import standard_attack

    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = standard_attack(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def tiny_bert() -> Path:
    from lmsan.models.zoo import default_tiny

    return default_tiny("bert").path


@pytest.fixture(scope="session")
def tiny_roberta() -> Path:
    from lmsan.models.zoo import default_tiny

    return default_tiny("roberta").path


@pytest.fixture(scope="session")
def bert_por(attacked) -> Path:
    """Tiny BERT with the paper's POR attack (triggers cf mn tq qt mm pt, POR-2 PVs)."""
    return attacked("bert-por")


@pytest.fixture(scope="session")
def bert_por_clean(attacked) -> Path:
    return attacked("bert-por-clean")


@pytest.fixture(scope="session")
def roberta_por(attacked) -> Path:
    """Tiny RoBERTa with the paper's POR attack (clean weight 1: it does not take the backdoor at 3)."""
    return attacked("roberta-por")


@pytest.fixture(scope="session")
def roberta_por_clean(attacked) -> Path:
    return attacked("roberta-por-clean")


@pytest.fixture(scope="session")
def bert_neuba(attacked) -> Path:
    return attacked("bert-neuba")


@pytest.fixture(scope="session")
def bert_neuba_clean(attacked) -> Path:
    return attacked("bert-neuba-clean")


@pytest.fixture(scope="session")
def bert_btop(attacked) -> Path:
    return attacked("bert-btop")


@pytest.fixture(scope="session")
def bert_btop_clean(attacked) -> Path:
    return attacked("bert-btop-clean")


@pytest.fixture(scope="session")
def bert_single_pv(attacked) -> Path:
    """Tiny BERT with a one-trigger POR attack (one random-sign PV)."""
    return attacked("bert-por-single")


@pytest.fixture(scope="session")
def defense_sentences() -> list[str]:
    """The standard defense split (clean sentences the scanner may use)."""
    from lmsan.data import standard_splits

    return standard_splits()["defense"]
