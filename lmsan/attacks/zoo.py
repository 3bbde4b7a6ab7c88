"""Cache attacked models under ``$LMSAN_CACHE/attacked`` keyed by base model, config and data."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Sequence

from lmsan import __version__
from lmsan.attacks.config import AttackConfig
from lmsan.attacks.train import ATTACK_FILE, run_attack
from lmsan.files import cache_dir


def attacked_model(base: str | Path, config: AttackConfig, sentences: Sequence[str], *,
                   progress: bool = False) -> Path:
    """Return the directory of ``base`` attacked with ``config`` on ``sentences``, cached."""
    key_text = json.dumps([str(base), config.to_dict(), list(sentences), __version__], sort_keys=True)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    tag = "clean" if not config.trigger_loss else config.kind
    path = cache_dir("attacked") / f"{Path(base).name}-{tag}-{key}"
    if (path / ATTACK_FILE).is_file():
        return path
    staging = path.with_name(path.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    run_attack(base, sentences, config, staging, progress=progress)
    if path.exists():
        shutil.rmtree(staging, ignore_errors=True)
    else:
        staging.rename(path)
    return path
