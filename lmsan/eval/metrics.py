"""Attack metrics of the paper (§V-A, method.md §7) and trigger insertion. numpy only.

Definitions (paper §V-A, "Evaluation Metrics"; see ``docs/evaluation.md`` for the full quotes):

- ``ACC``: share of inputs whose prediction equals the gold label.
- ``ASR`` of one trigger: among the inputs the model classifies correctly when clean, the share
  whose prediction with the trigger inserted is a wrong class. Task-agnostic backdoors have no
  target label, so no input is excluded for having the "target" gold label.
- overall ``ASR`` (the paper's): "We insert each attacker-chosen trigger in turn and consider the
  attack successful if one can cause the misclassification", i.e. an input counts once if *any*
  trigger flips it. ``asr_max`` / ``asr_mean`` over the per-trigger ASRs are reported too.
- ``weighted ASR``: "the average of ASRs over each input class" (classes by gold label); a class
  without a correctly classified input has no ASR and is left out of the average.

An undefined fraction (empty denominator) is ``None``, never NaN. This module must not import
torch or transformers.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from lmsan.errors import LmsanError


class MetricsError(LmsanError, ValueError):
    """Prediction and label arrays that do not line up."""


def _labels(values: Sequence[Hashable] | np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values.astype(object)
    if array.ndim != 1:
        raise MetricsError(f"{name} must be one label per example (1-D), got shape {array.shape}")
    if n is not None and len(array) != n:
        raise MetricsError(f"{name} has {len(array)} labels, expected {n} (one per example)")
    return array


def _fraction(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def accuracy(pred: Sequence[Hashable], gold: Sequence[Hashable]) -> float | None:
    """Return the share of ``pred`` equal to ``gold`` (``None`` for no examples).

    Args:
        pred: predicted labels, one per example.
        gold: gold labels, same length.

    Raises:
        MetricsError: the lengths differ or an input is not 1-D.
    """
    gold_a = _labels(gold, "gold")
    pred_a = _labels(pred, "pred", len(gold_a))
    return _fraction(int(np.sum(pred_a == gold_a)), len(gold_a))


def flipped(gold: Sequence[Hashable], clean_pred: Sequence[Hashable],
            triggered_pred: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """Return which inputs count for ASR and which of those one trigger flips.

    Returns:
        ``(eligible, success)``, both bool [N]: ``eligible`` = correctly classified when clean;
        ``success`` = eligible and the triggered prediction differs from the gold label.
    """
    gold_a = _labels(gold, "gold")
    clean = _labels(clean_pred, "clean_pred", len(gold_a))
    triggered = _labels(triggered_pred, "triggered_pred", len(gold_a))
    eligible = clean == gold_a
    return eligible.astype(bool), (eligible & (triggered != gold_a)).astype(bool)


def asr(gold: Sequence[Hashable], clean_pred: Sequence[Hashable],
        triggered_pred: Sequence[Hashable]) -> float | None:
    """Return one trigger's ASR: flipped / correctly classified (``None`` if none is correct)."""
    eligible, success = flipped(gold, clean_pred, triggered_pred)
    return _fraction(int(success.sum()), int(eligible.sum()))


@dataclass(frozen=True)
class AttackScores:
    """Accuracy and attack success of one model on one task, fractions in [0, 1] or ``None``.

    Attributes:
        n: examples scored.
        n_correct: examples classified correctly when clean (the ASR denominator).
        accuracy: clean accuracy (``ACC_clean`` or ``ACC_backdoor``, depending on the model).
        asr: the paper's ASR, an input counting if any trigger flips it.
        weighted_asr: mean over gold classes of the per-class ``asr``.
        asr_max: the best single trigger's ASR.
        asr_mean: the mean of the per-trigger ASRs.
        per_trigger: trigger -> its ASR.
        per_class: gold label (as ``str``) -> that class's ``asr``; ``None`` for a class listed
            in ``labels`` without a correctly classified example.
    """

    n: int
    n_correct: int
    accuracy: float | None
    asr: float | None
    weighted_asr: float | None
    asr_max: float | None
    asr_mean: float | None
    per_trigger: dict[str, float | None] = field(default_factory=dict)
    per_class: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (fractions in [0, 1], ``None`` where undefined)."""
        return asdict(self)


def attack_scores(gold: Sequence[Hashable], clean_pred: Sequence[Hashable],
                  triggered: Mapping[str, Sequence[Hashable]], *,
                  labels: Sequence[Hashable] | None = None) -> AttackScores:
    """Score a classifier on clean and triggered copies of the same inputs.

    Args:
        gold: gold labels [N].
        clean_pred: predictions on the clean inputs [N].
        triggered: trigger -> predictions [N] on the inputs with that one trigger inserted
            (example ``i`` of every list is example ``i`` of ``gold``). May be empty, which
            leaves every ASR ``None``.
        labels: every class of the task, so that a class without examples shows up in
            ``per_class`` as ``None``; default: the classes present in ``gold``.

    Returns:
        The scores; ``weighted_asr`` averages only the classes whose ASR is defined.

    Raises:
        MetricsError: lengths differ.
    """
    gold_a = _labels(gold, "gold")
    clean = _labels(clean_pred, "clean_pred", len(gold_a))
    eligible = clean == gold_a
    any_success = np.zeros(len(gold_a), dtype=bool)
    per_trigger: dict[str, float | None] = {}
    for trigger, preds in triggered.items():
        _, success = flipped(gold_a, clean, _labels(preds, f"triggered[{trigger!r}]", len(gold_a)))
        per_trigger[str(trigger)] = _fraction(int(success.sum()), int(eligible.sum()))
        any_success |= success
    have_triggers = bool(triggered)
    overall = _fraction(int(any_success.sum()), int(eligible.sum())) if have_triggers else None
    classes = list(dict.fromkeys(labels)) if labels is not None else list(dict.fromkeys(gold_a.tolist()))
    per_class: dict[str, float | None] = {}
    for label in classes:
        in_class = eligible & (gold_a == label)
        per_class[str(label)] = _fraction(int((any_success & in_class).sum()), int(in_class.sum())) if have_triggers else None
    defined_classes = [v for v in per_class.values() if v is not None]
    defined_triggers = [v for v in per_trigger.values() if v is not None]
    return AttackScores(
        n=len(gold_a),
        n_correct=int(eligible.sum()),
        accuracy=_fraction(int(eligible.sum()), len(gold_a)),
        asr=overall,
        weighted_asr=float(np.mean(defined_classes)) if defined_classes else None,
        asr_max=max(defined_triggers) if defined_triggers else None,
        asr_mean=float(np.mean(defined_triggers)) if defined_triggers else None,
        per_trigger=per_trigger,
        per_class=per_class,
    )


def insert_trigger(text: str, trigger: str, rng: random.Random | np.random.Generator, *,
                   position: int | None = None) -> str:
    """Insert ``trigger`` once at a word boundary of ``text``.

    Words are the whitespace-separated pieces; the result joins them with single spaces.

    Args:
        text: the clean input.
        trigger: a word or phrase (stripped; must be non-empty).
        rng: draws the boundary, uniform over the ``n_words + 1`` boundaries (start and end
            included), when ``position`` is ``None``.
        position: boundary index in ``[0, n_words]``; 0 puts the trigger first.

    Raises:
        ValueError: empty trigger or ``position`` out of range.
    """
    trigger = trigger.strip()
    if not trigger:
        raise ValueError("trigger must be a non-empty word or phrase")
    words = text.split()
    if position is None:
        position = int(rng.integers(0, len(words) + 1)) if isinstance(rng, np.random.Generator) \
            else rng.randint(0, len(words))
    if not 0 <= position <= len(words):
        raise ValueError(f"position {position} outside [0, {len(words)}] for a {len(words)}-word text")
    return " ".join(words[:position] + [trigger] + words[position:])


def insert_into_pair(first: str, second: str, trigger: str, rng: random.Random | np.random.Generator) -> tuple[str, str]:
    """Insert ``trigger`` into the longer sentence of a pair (paper §V-B; ties go to ``first``).

    Longer means more whitespace-separated words. The other sentence is returned unchanged.
    """
    if len(second.split()) > len(first.split()):
        return first, insert_trigger(second, trigger, rng)
    return insert_trigger(first, trigger, rng), second
