"""``PVSet``: the mined pre-defined vectors (PVs) and the prompts that produced them.

Stored as ``pvs.safetensors`` (tensors) with a JSON metadata header. numpy and
``safetensors.numpy`` only: the torch-free runtime reads this file too.
"""

from __future__ import annotations

import json
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmsan.errors import PVSetError
from lmsan.files import atomic_write

PVSET_FORMAT = "lmsan.pvset/1"
TARGETS = ("cls", "mask", "token", "last")


@dataclass(frozen=True)
class KnownTrigger:
    """Text that produces a PV: the trigger the miner confirmed for it (method.md §5).

    Attributes:
        text: the trigger decoded, for people (e.g. ``"cf"``).
        token_ids: the trigger's token ids in the model's tokenizer, the exact span the miner
            inserted (the guard matches these, not ``text``).
        hit_rate: share in [0, 1] of evaluation sentences that, with the trigger inserted once,
            sign-agree > ``HIT_AGREEMENT`` with the PV.
    """

    text: str
    token_ids: tuple[int, ...]
    hit_rate: float

    def __post_init__(self) -> None:
        ids = tuple(self.token_ids)
        if not isinstance(self.text, str) or not ids or not all(
                isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise PVSetError(f"a known trigger needs text and non-negative token ids, got {self.text!r} {ids!r}")
        rate = self.hit_rate
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate <= 1.0:
            raise PVSetError(f"a known trigger's hit rate must be in [0, 1], got {rate!r}")
        object.__setattr__(self, "token_ids", tuple(int(i) for i in ids))
        object.__setattr__(self, "hit_rate", float(rate))

    def to_dict(self) -> dict:
        return {"text": self.text, "token_ids": list(self.token_ids), "hit_rate": round(self.hit_rate, 4)}

    @classmethod
    def from_dict(cls, data: dict) -> "KnownTrigger":
        if not isinstance(data, dict) or not isinstance(data.get("token_ids"), list):
            raise PVSetError(f"a known trigger must be an object with token_ids, got {data!r}")
        return cls(data.get("text"), tuple(data["token_ids"]), data.get("hit_rate"))


@dataclass(frozen=True, eq=False)
class PVSet:
    """A set of ``K`` PVs for one model and target position (method.md §2).

    Attributes:
        vectors: float32 [K, d], candidate PVs in the model's output units. ``K = 0`` is a valid
            (clean) set.
        prompts: float32 [K, l_sp, d_emb] soft prompts that produced each PV, or ``None``.
        seeds: int64 [K], fuzz-loop seed of each PV.
        target: position the PVs live at: ``cls``, ``mask``, ``token`` or ``last``.
        model_sha256: SHA-256 fingerprint of the model's weights (see ``lmsan.models``), or "".
        triggers: K entries: each PV's confirmed trigger (``KnownTrigger``), or None where the
            miner found no text that reaches the confirmation hit rate (and in sets mined
            before the field). The guard removes these spans wherever they occur.
    """

    vectors: np.ndarray
    prompts: np.ndarray | None = None
    seeds: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    target: str = "cls"
    model_sha256: str = ""
    triggers: tuple[KnownTrigger | None, ...] = ()

    def __post_init__(self) -> None:
        vectors = np.asarray(self.vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise PVSetError(f"PV vectors must be 2-D [K, d], got shape {vectors.shape}")
        seeds = np.asarray(self.seeds, dtype=np.int64).reshape(-1)
        if seeds.size == 0 and vectors.shape[0]:
            seeds = np.full(vectors.shape[0], -1, dtype=np.int64)
        if seeds.shape[0] != vectors.shape[0]:
            raise PVSetError(f"{seeds.shape[0]} seeds for {vectors.shape[0]} PVs")
        prompts = self.prompts
        if prompts is not None:
            prompts = np.asarray(prompts, dtype=np.float32)
            if prompts.ndim != 3 or prompts.shape[0] != vectors.shape[0]:
                raise PVSetError(f"prompts must be [K={vectors.shape[0]}, l_sp, d_emb], got {prompts.shape}")
        if self.target not in TARGETS:
            raise PVSetError(f"unknown target {self.target!r}; expected one of {', '.join(TARGETS)}")
        if not np.all(np.isfinite(vectors)):
            raise PVSetError("PV vectors contain NaN or infinity")
        triggers = tuple(self.triggers) or (None,) * vectors.shape[0]
        if len(triggers) != vectors.shape[0] or not all(t is None or isinstance(t, KnownTrigger) for t in triggers):
            raise PVSetError(f"triggers must hold one KnownTrigger or None per PV ({vectors.shape[0]}), "
                             f"got {len(triggers)} entries")
        object.__setattr__(self, "vectors", vectors)
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "triggers", triggers)

    @property
    def size(self) -> int:
        """Number of PVs ``K``."""
        return int(self.vectors.shape[0])

    @property
    def width(self) -> int:
        """Feature width ``d``."""
        return int(self.vectors.shape[1])

    @property
    def signs(self) -> np.ndarray:
        """int8 [K, d] in {-1, +1}; zero counts as +1 (method.md §3)."""
        return np.where(self.vectors >= 0, 1, -1).astype(np.int8)

    def append(self, vector: np.ndarray, *, seed: int, prompt: np.ndarray | None = None,
               trigger: KnownTrigger | None = None) -> "PVSet":
        """Return a new set with one more PV (``vector`` float32 [d], ``prompt`` [l_sp, d_emb],
        its confirmed ``trigger`` if any).

        A PV without a prompt (found by the trigger sweep, ``seed`` -1) in a set with prompts gets
        an all-zero prompt row, and so do earlier prompt-less PVs when a prompt arrives.
        """
        vectors = np.concatenate([self.vectors, np.asarray(vector, np.float32)[None]], axis=0)
        prompts = self.prompts
        if prompt is not None or prompts is not None:
            shape = (prompts if prompts is not None else np.asarray(prompt)).shape[-2:]
            new = np.zeros((1, *shape), np.float32) if prompt is None else np.asarray(prompt, np.float32)[None]
            old = prompts if prompts is not None else np.zeros((self.size, *shape), np.float32)
            prompts = np.concatenate([old, new])
        return PVSet(vectors, prompts, np.append(self.seeds, seed), self.target, self.model_sha256,
                     (*self.triggers, trigger))

    @classmethod
    def empty(cls, width: int, *, target: str = "cls", model_sha256: str = "") -> "PVSet":
        """Return a clean set (``K = 0``) of width ``d``."""
        return cls(np.zeros((0, width), np.float32), None, np.zeros(0, np.int64), target, model_sha256)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the set atomically as safetensors with JSON metadata."""
        from safetensors.numpy import save_file

        tensors = {"vectors": self.vectors, "seeds": self.seeds}
        if self.prompts is not None:
            tensors["prompts"] = self.prompts
        metadata = {"format": PVSET_FORMAT, "target": self.target, "model_sha256": self.model_sha256}
        if any(self.triggers):
            metadata["triggers"] = json.dumps([t.to_dict() if t else None for t in self.triggers])
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PVSet":
        """Read a set written by ``save``; raise ``PVSetError`` naming the file on any problem."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise PVSetError(f"PV set not found: {path}")
        try:
            with safe_open(str(path), framework="np") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as exc:  # safetensors raises several unrelated types on bad files
            raise PVSetError(f"not a valid PV-set file: {path} ({exc})") from exc
        if metadata.get("format") != PVSET_FORMAT:
            raise PVSetError(f"{path} is not an lmsan PV set (format {metadata.get('format')!r})")
        if "vectors" not in tensors:
            raise PVSetError(f"{path} holds no 'vectors' tensor")
        try:
            return cls(
                tensors["vectors"],
                tensors.get("prompts"),
                tensors.get("seeds", np.zeros(0, np.int64)),
                metadata.get("target", "cls"),
                metadata.get("model_sha256", ""),
                _triggers(metadata.get("triggers")),
            )
        except PVSetError as exc:
            raise PVSetError(f"{exc} ({path})") from exc

    def to_json(self) -> dict:
        """Summary for reports: target, K, d, seeds, the PVs as lists and their known triggers."""
        return {
            "target": self.target,
            "size": self.size,
            "width": self.width,
            "seeds": self.seeds.tolist(),
            "vectors": self.vectors.round(6).tolist(),
            "model_sha256": self.model_sha256,
            "triggers": [t.to_dict() if t else None for t in self.triggers],
        }


def _triggers(raw: str | None) -> tuple[KnownTrigger | None, ...]:
    """The ``triggers`` metadata entry parsed (JSON list, one object or null per PV); () if absent."""
    if raw is None:
        return ()
    try:
        entries = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise PVSetError(f"malformed triggers metadata: {exc}") from exc
    if not isinstance(entries, list) or not entries:
        raise PVSetError(f"triggers metadata must be a non-empty list, got {entries!r:.40}")
    return tuple(None if entry is None else KnownTrigger.from_dict(entry) for entry in entries)


HIT_AGREEMENT = 0.9  # a triggered output "hits" its PV when its sign agreement exceeds this (method.md §5)
MATCH_THRESHOLD = 0.8  # T_match: the guard flags an output whose sign agreement with a PV exceeds this (method.md §3)


def sign_agreement(features: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Share of sign agreements of each feature row with each PV sign row.

    Args:
        features: float [B, d], outputs at the target position.
        signs: int8 [K, d] in {-1, +1}.

    Returns:
        float32 [B, K] in [0, 1].
    """
    feature_signs = np.where(np.asarray(features) >= 0, 1.0, -1.0).astype(np.float32)
    d = feature_signs.shape[1]
    return ((d + feature_signs @ signs.astype(np.float32).T) / (2 * d)).astype(np.float32)


__all__ = ["HIT_AGREEMENT", "KnownTrigger", "MATCH_THRESHOLD", "PVSet", "PVSET_FORMAT", "TARGETS", "sign_agreement"]
