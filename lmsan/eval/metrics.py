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

Token classification (the paper's NER, measured by its F1 drop; here ``oanc-pos``):

- ``token_f1``: macro-F1 over tags, every word of every sentence one example; a word without a
  prediction (``None``: truncated away, or dropped by a sanitizer) counts as a miss.
- ``tag_flip_rate``: the ASR of a token task: among sentences with at least one correctly tagged
  word when clean, the share where the trigger changes at least one of those words' tags (the
  trigger's own words left out: ``align_tags`` maps a triggered sentence's tags back onto the
  clean sentence's words).

An undefined fraction (empty denominator) is ``None``, never NaN. This module must not import
torch or transformers.
"""

from __future__ import annotations

import difflib
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


def _flat(rows: Sequence[Sequence[Hashable]], name: str) -> list[Hashable]:
    if isinstance(rows, str) or any(isinstance(row, str) for row in rows):
        raise MetricsError(f"{name} must be one sequence of tags per sentence")
    return [tag for row in rows for tag in row]


def _sentences(gold: Sequence[Sequence[Hashable]], other: Sequence[Sequence[Hashable]], name: str) -> None:
    if len(other) != len(gold) or any(len(o) != len(g) for o, g in zip(other, gold)):
        raise MetricsError(f"{name} must have one tag per gold word in each of the {len(gold)} sentences")


def token_f1(pred_tags: Sequence[Sequence[Hashable | None]], gold_tags: Sequence[Sequence[Hashable]], *,
             labels: Sequence[Hashable] | None = None) -> float | None:
    """Macro-F1 over tags of a token-classification run, every word one example.

    Per tag ``F1 = 2 TP / (2 TP + FP + FN)``; the macro average is over ``labels`` (default: every
    tag in ``gold_tags`` or ``pred_tags``), leaving out a tag that is neither gold nor predicted
    anywhere. A ``None`` prediction (no answer for that word) is a false negative of its gold tag.

    Args:
        pred_tags: per sentence, one predicted tag (or ``None``) per gold word.
        gold_tags: per sentence, the gold tags.
        labels: the tags to average over.

    Returns:
        F1 in [0, 1], or ``None`` without words.

    Raises:
        MetricsError: a sentence count or length that differs.
    """
    _sentences(gold_tags, pred_tags, "pred_tags")
    pred, gold = _flat(pred_tags, "pred_tags"), _flat(gold_tags, "gold_tags")
    if not gold:
        return None
    tags = list(dict.fromkeys(labels)) if labels is not None else list(dict.fromkeys(
        [t for t in gold + pred if t is not None]))
    scores = []
    for tag in tags:
        tp = sum(p == tag and g == tag for p, g in zip(pred, gold))
        fp = sum(p == tag and g != tag for p, g in zip(pred, gold))
        fn = sum(p != tag and g == tag for p, g in zip(pred, gold))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else None


def token_accuracy(pred_tags: Sequence[Sequence[Hashable | None]],
                   gold_tags: Sequence[Sequence[Hashable]]) -> float | None:
    """Share of words tagged correctly (``None`` counts as wrong); ``None`` without words."""
    _sentences(gold_tags, pred_tags, "pred_tags")
    return accuracy(_flat(pred_tags, "pred_tags"), _flat(gold_tags, "gold_tags"))


def align_tags(words: Sequence[str], tags: Sequence[Hashable], reference: Sequence[str]) -> list[Hashable | None]:
    """Map the tags of ``words`` (e.g. a triggered or sanitized sentence) onto ``reference`` (the
    clean sentence's words): a reference word takes the tag of the word it is matched with by the
    longest matching blocks (``difflib``), ``None`` where it has no match (it was dropped).
    Inserted words (a trigger) are left out.

    Raises:
        MetricsError: ``words`` and ``tags`` differ in length.
    """
    if len(words) != len(tags):
        raise MetricsError(f"{len(words)} words but {len(tags)} tags")
    out: list[Hashable | None] = [None] * len(reference)
    matcher = difflib.SequenceMatcher(a=list(reference), b=list(words), autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            out[block.a + k] = tags[block.b + k]
    return out


def tag_flip_rate(gold_tags: Sequence[Sequence[Hashable]], clean_tags: Sequence[Sequence[Hashable | None]],
                  triggered_tags: Sequence[Sequence[Hashable | None]]) -> float | None:
    """The ASR of a token task: share of sentences where a trigger changes an originally correct tag.

    A sentence counts (denominator) when at least one word is tagged correctly when clean; it is
    flipped when at least one such word is tagged otherwise with the trigger (``None``, no answer
    for that word, counts as otherwise).

    Args:
        gold_tags: per sentence, the gold tags.
        clean_tags: per sentence, the predictions on the clean sentence.
        triggered_tags: per sentence, the predictions on the triggered sentence mapped onto the
            clean words (``align_tags``; the trigger's own words left out).

    Returns:
        A fraction in [0, 1], or ``None`` when no sentence has a correct word.

    Raises:
        MetricsError: a sentence count or length that differs.
    """
    _sentences(gold_tags, clean_tags, "clean_tags")
    _sentences(gold_tags, triggered_tags, "triggered_tags")
    eligible = flipped_count = 0
    for gold, clean, triggered in zip(gold_tags, clean_tags, triggered_tags):
        correct = [i for i, (c, g) in enumerate(zip(clean, gold)) if c == g]
        if correct:
            eligible += 1
            flipped_count += any(triggered[i] != gold[i] for i in correct)
    return _fraction(flipped_count, eligible)


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
