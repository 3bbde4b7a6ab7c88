"""Session fixtures for the end-to-end tests: cached tiny models and attacked models.

Every model comes from ``lmsan.attacks.standard_attack`` / ``lmsan.models.zoo.default_tiny``,
which cache under ``$LMSAN_CACHE`` keyed by the builder parameters and the lmsan version: a
session builds each at most once, later sessions reuse them, and the benchmarks, the demo and
every e2e test share the same builds. Use ``attacked("<name>")`` for any ``STANDARD_ATTACKS``
entry and ``"<name>-clean"`` for its clean control (trained identically minus the trigger loss).
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class MinedRun:
    """One ``lmsan-mine`` CLI run: exit code, output directory, ``report.json`` and PV set."""

    code: int
    scan: Path
    report: dict
    pvset: object  # lmsan.pvset.PVSet


@pytest.fixture(scope="session")
def mined(defense_sentences, tmp_path_factory) -> Callable[..., MinedRun]:
    """``mined(model, *args)`` -> ``MinedRun`` of ``lmsan-mine MODEL --data DEFENSE *args`` (in-process,
    CPU). Runs once per model and argument list, shared by every test that asks for it: mining is
    what the suite's time goes to. The data file holds 2000 defense sentences; ``--limit 1000``
    applies unless ``args`` sets ``--limit``."""
    import json

    from lmsan.cli import mine as mine_cli
    from lmsan.pvset import PVSet

    root = tmp_path_factory.mktemp("mined")
    data = root / "defense.txt"
    data.write_text("\n".join(defense_sentences[:2000]) + "\n", encoding="utf-8")
    runs: dict[tuple, MinedRun] = {}

    def run(model: Path, *args: str) -> MinedRun:
        key = (str(model), *args)
        if key not in runs:
            out = root / f"scan-{len(runs)}"
            limit = [] if "--limit" in args else ["--limit", "1000"]
            with pytest.raises(SystemExit) as exit_info:
                mine_cli.main([str(model), "--data", str(data), "--out", str(out), "--device", "cpu", "-q",
                               *limit, *args])
            report = json.loads((out / "report.json").read_text())
            runs[key] = MinedRun(int(exit_info.value.code), out, report, PVSet.load(out / "pvs.safetensors"))
        return runs[key]

    return run


@pytest.fixture(scope="session")
def bert_por_search(bert_por, mined) -> MinedRun:
    """``lmsan-mine --mode search --loops 6 --patience 2`` on the POR BERT (one run for the suite)."""
    return mined(bert_por, "--mode", "search", "--loops", "6", "--patience", "2")
