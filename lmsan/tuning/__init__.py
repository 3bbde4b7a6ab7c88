"""Prompt-tuning a frozen backbone for downstream tasks (method.md §6): P-tuning v2 and P-tuning.

``tasks`` and ``config`` are stdlib + ``lmsan.data`` only and load eagerly; the names that need
torch (``PromptTuned``, ``tune``, ``evaluate``, ``save_task``, ``load_task``, ...) are imported
on first use, so ``lmsan-tune --help`` and ``--list-tasks`` never load torch. Imports models and
data; never mining, export or runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

from lmsan.tuning.config import TuningConfig
from lmsan.tuning.tasks import TASKS, Task, TaskData, TokenSet, file_task_data, get_task, task_data

_LAZY = {
    "METHODS": "lmsan.tuning.model",
    "PromptTuned": "lmsan.tuning.model",
    "TunedTask": "lmsan.tuning.train",
    "evaluate": "lmsan.tuning.train",
    "resolve_verbalizer": "lmsan.tuning.train",
    "tune": "lmsan.tuning.train",
    "TASK_FORMAT": "lmsan.tuning.store",
    "load_task": "lmsan.tuning.store",
    "read_task_manifest": "lmsan.tuning.store",
    "save_task": "lmsan.tuning.store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmsan.tuning' has no attribute {name!r}")


__all__ = ["TASKS", "Task", "TaskData", "TokenSet", "TuningConfig", "file_task_data", "get_task", "task_data",
           *_LAZY]
