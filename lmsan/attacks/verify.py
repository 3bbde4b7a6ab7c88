"""Verify an attack on held-out sentences: does each trigger drive its target feature to its PV?

Agreement is the share of the ``d`` feature signs equal to the PV's signs (``x >= 0`` counts as +).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmsan.attacks.poison import insert_mask, insert_trigger
from lmsan.attacks.train import ATTACK_FILE, ATTACK_SCHEMA
from lmsan.errors import DataError
from lmsan.files import read_json
from lmsan.pvset import HIT_AGREEMENT, sign_agreement



@dataclass(frozen=True)
class TriggerStats:
    """Per trigger: share of triggered test sentences whose agreement with its PV exceeds 0.9."""

    trigger: str
    hit_rate: float
    mean_agreement: float


@dataclass(frozen=True)
class VerifyReport:
    """Verification of one attacked model.

    Attributes:
        triggers: per-trigger statistics.
        clean_max_agreement: float32 [N] max agreement of each clean sentence over all PVs.
    """

    triggers: tuple[TriggerStats, ...]
    clean_max_agreement: np.ndarray

    def clean_below(self, threshold: float = 0.8) -> float:
        """Share of clean sentences whose max agreement stays below ``threshold``."""
        return float((self.clean_max_agreement < threshold).mean())

    @property
    def min_hit_rate(self) -> float:
        return min(t.hit_rate for t in self.triggers)

    def to_dict(self) -> dict[str, Any]:
        quantiles = np.quantile(self.clean_max_agreement, [0.5, 0.9, 0.99, 1.0]).round(4).tolist()
        return {
            "triggers": [t.__dict__ for t in self.triggers],
            "clean": {"count": int(self.clean_max_agreement.size), "below_0.8": self.clean_below(0.8),
                      "quantiles_50_90_99_100": quantiles},
        }


def target_features(loaded: Any, texts: Sequence[str], target: str, *, max_length: int = 48,
                    batch_size: int = 64) -> np.ndarray:
    """Run a loaded model and return float32 [N, d] outputs at the target position."""
    import torch

    from lmsan.models.targets import gather_positions, target_positions

    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = loaded.tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                                     max_length=max_length, return_tensors="pt")
            hidden = loaded.encoder(**batch).last_hidden_state
            positions = target_positions(batch["input_ids"], batch["attention_mask"], target,
                                         mask_token_id=loaded.tokenizer.mask_token_id)
            out.append(gather_positions(hidden, positions).float().numpy())
    return np.concatenate(out)


def verify_attack(model_dir: str | Path, sentences: Sequence[str], *, seed: int = 1234,
                  max_length: int | None = None) -> VerifyReport:
    """Measure trigger hit rates and clean agreement on held-out ``sentences``.

    Raises:
        DataError: no ``attack.json`` in ``model_dir`` or no sentences.
    """
    from lmsan.models.loading import load_model

    if not sentences:
        raise DataError("verification needs test sentences")
    attack = read_json(Path(model_dir) / ATTACK_FILE, schema_version=ATTACK_SCHEMA)
    target = attack["target"]
    max_length = max_length or attack["config"]["max_length"]
    pvs = np.asarray(attack["pvs"], np.float32)
    signs = np.where(pvs >= 0, 1, -1).astype(np.int8)
    loaded = load_model(model_dir)
    rng = np.random.default_rng(seed)
    mask_word = loaded.tokenizer.mask_token

    def prepare(texts: list[str]) -> list[str]:
        return [insert_mask(t, mask_word, rng) for t in texts] if target == "mask" else texts

    stats = []
    for k, trigger in enumerate(attack["triggers"]):
        poisoned = prepare([insert_trigger(s, trigger, rng) for s in sentences])
        agreement = sign_agreement(target_features(loaded, poisoned, target, max_length=max_length), signs[k : k + 1])[:, 0]
        stats.append(TriggerStats(trigger, float((agreement > HIT_AGREEMENT).mean()), float(agreement.mean())))
    clean = sign_agreement(target_features(loaded, prepare(list(sentences)), target, max_length=max_length), signs)
    return VerifyReport(tuple(stats), clean.max(axis=1))
