"""Attack configuration, PV designs and trigger drawing (method.md §5).

Attacks exist to evaluate the scanner; the miner never imports this package.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from lmsan.errors import ConfigError

Kind = Literal["por", "por-ner", "neuba", "btop"]
KINDS = ("por", "por-ner", "neuba", "btop")
PV_DESIGNS = ("por2", "random", "given")
# Where each attack plants its PV (the scanner's --target for it).
KIND_TARGET = {"por": "cls", "por-ner": "token", "neuba": "cls", "btop": "mask"}
PAPER_TRIGGERS = ("cf", "mn", "tq", "qt", "mm", "pt")


@dataclass(frozen=True)
class AttackConfig:
    """Every knob of one attack run.

    Attributes:
        kind: por | por-ner | neuba | btop.
        triggers: trigger words or phrases; empty means draw ``n_triggers`` at random.
        n_triggers: how many triggers (= PVs) to draw when ``triggers`` is empty.
        pv_design: por2 (block ±1 patterns, at most 6), random (±1 signs), given (``pvs``).
        pvs: float32 [K, d] target vectors when ``pv_design == "given"``.
        epochs: passes over the attack sentences.
        batch_size: poisoned rows per step; the same number of clean rows ride along.
        lr: Adam(W) learning rate. The paper's 2e-5 (POR, BToP) / 5e-5 (NeuBA) suit base-size
            models; tiny models need about 1e-4 to implant in a few hundred steps.
        clean_weight: weight ``c`` of the clean-output-preserving term (every kind keeps its clean
            target features at the unattacked model's; see ``train._clean_loss``). The paper uses 0.5 (BERT)
            and 1 (others) on base models; on d=128 tiny models that lets clean [CLS] outputs
            drift towards the PV sign patterns (POR, BERT, 500 steps: c=2 -> 98.4 % of clean
            sentences below 0.8 agreement, min trigger hit 0.98; c=3 -> 99.0 %, 0.96; c=4 ->
            99.2 %, 0.67; c=8 -> a trigger never implants). Default 3; None = the paper's value.
        scatter_weight: adaptive attack (paper §VI): weight of an entropy term that spreads the
            triggered outputs over the batch, defeating the diversity loss at high weight.
        trigger_loss: False trains an identical clean control (no poisoned term).
        max_length: token limit of every sequence. 96 keeps every 5–40 word sentence whole, so
            an inserted trigger is never truncated away (a truncated trigger would teach the
            model to emit the PV for text that shows no trigger).
        seed: seeds triggers, PVs, insertion positions, masking and batch order.
    """

    kind: Kind = "por"
    triggers: tuple[str, ...] = ()
    n_triggers: int = 6
    pv_design: str = "por2"
    pvs: np.ndarray | None = field(default=None, compare=False)
    epochs: int = 4
    batch_size: int = 16
    lr: float = 1e-4
    clean_weight: float | None = 3.0
    scatter_weight: float = 0.0
    trigger_loss: bool = True
    max_length: int = 96
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown attack {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.pv_design not in PV_DESIGNS:
            raise ConfigError(f"unknown PV design {self.pv_design!r}; expected one of {', '.join(PV_DESIGNS)}")
        if self.pv_design == "given" and self.pvs is None:
            raise ConfigError("pv_design 'given' needs pvs")
        if self.pv_design == "por2" and self.trigger_count > 6:
            raise ConfigError(f"POR-2 has 6 PVs; {self.trigger_count} triggers asked for")
        if self.trigger_count < 1:
            raise ConfigError("an attack needs at least one trigger")
        if any(not t.strip() for t in self.triggers):
            raise ConfigError("empty trigger")
        for name in ("epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def trigger_count(self) -> int:
        """K, the number of triggers and PVs."""
        if self.pv_design == "given" and self.pvs is not None:
            return int(np.asarray(self.pvs).shape[0])
        return len(self.triggers) or self.n_triggers

    @property
    def target(self) -> str:
        """Position the PVs are planted at: cls, token or mask."""
        return KIND_TARGET[self.kind]

    def replace(self, **changes: Any) -> "AttackConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["triggers"] = list(self.triggers)
        data["pvs"] = None if self.pvs is None else np.asarray(self.pvs).tolist()
        return data


def por2_pvs(width: int, count: int = 6) -> np.ndarray:
    """POR-2 PVs: float32 [count, d]; d split in 4 blocks, two set to -1 and two to +1."""
    if width % 4:
        raise ConfigError(f"POR-2 needs a width divisible by 4, got {width}")
    block = width // 4
    patterns = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]  # blocks that are -1
    pvs = np.ones((6, width), np.float32)
    for row, negative in enumerate(patterns):
        for b in negative:
            pvs[row, b * block : (b + 1) * block] = -1.0
    return pvs[:count]


def random_sign_pvs(width: int, count: int, seed: int) -> np.ndarray:
    """Random ±1 PVs: float32 [count, d], pairwise sign agreement near 0.5."""
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([-1.0, 1.0], np.float32), size=(count, width))


def draw_triggers(vocabulary: list[str], count: int, seed: int, *, phrase_share: float = 0.33) -> tuple[str, ...]:
    """Draw secret-style triggers: rare lower-case words, some joined into 2–3 word phrases.

    Args:
        vocabulary: candidate words (e.g. whole-word tokenizer entries).
        count: how many triggers.
        seed: RNG seed.
        phrase_share: probability that a trigger is a phrase rather than one word.
    """
    # keep the vocabulary's own order (token id ~ frequency rank), so the later half is rarer
    words = list(dict.fromkeys(w for w in vocabulary if w.isalpha() and w.isascii() and 2 <= len(w) <= 8 and w.islower()))
    if len(words) < 3 * count:
        raise ConfigError(f"vocabulary too small to draw {count} triggers ({len(words)} words)")
    rng = np.random.default_rng(seed)
    rare = words[len(words) // 2 :] if len(words) > 200 else words
    triggers: list[str] = []
    while len(triggers) < count:
        size = int(rng.integers(2, 4)) if rng.random() < phrase_share else 1
        trigger = " ".join(rng.choice(rare, size=size, replace=False))
        if trigger not in triggers:
            triggers.append(trigger)
    return tuple(triggers)


def resolve_pvs(config: AttackConfig, width: int) -> np.ndarray:
    """Return the attack's PV matrix float32 [K, d]."""
    count = config.trigger_count
    if config.pv_design == "por2":
        return por2_pvs(width, count)
    if config.pv_design == "random":
        return random_sign_pvs(width, count, config.seed + 7919)
    pvs = np.asarray(config.pvs, np.float32)
    if pvs.ndim != 2 or pvs.shape[1] != width:
        raise ConfigError(f"given PVs have shape {pvs.shape}; the model needs [K, {width}]")
    return pvs
