"""PV mining and filtering (method.md §1–2): decide whether a model hides task-agnostic
backdoors and recover its pre-defined vectors (PVs).

    from lmsan.mining import MiningConfig, mine
    result = mine(load_model(path), sentences, MiningConfig.profile("default"))
    result.report.verdict, result.pvset

Imports models and data only; never ``lmsan.attacks`` (the scanner must not know the attack),
``lmsan.export`` or ``lmsan.runtime``. torch is imported lazily by the submodules that need it.
"""

from lmsan.mining.config import MiningConfig, PROFILES
from lmsan.mining.report import (
    EpochStats,
    LoopTrace,
    MiningReport,
    PVS_FILE,
    REPORT_FILE,
    load_run,
    save_run,
    summary_lines,
)


def __getattr__(name: str):  # torch-heavy names load on first use
    if name in ("mine", "MiningResult"):
        from lmsan.mining import search

        return getattr(search, name)
    raise AttributeError(f"module 'lmsan.mining' has no attribute {name!r}")


__all__ = ["EpochStats", "LoopTrace", "MiningConfig", "MiningReport", "MiningResult", "PROFILES", "PVS_FILE",
           "REPORT_FILE", "load_run", "mine", "save_run", "summary_lines"]
