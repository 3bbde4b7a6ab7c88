"""Evaluation helpers: the paper's attack metrics and the ONION baseline defense.

``metrics`` (ACC, ASR, weighted ASR, trigger insertion) and ``onion`` / ``ngram`` (ONION and its
n-gram language model) need numpy only; ``mlm`` (a masked-LM pseudo-perplexity scorer) imports
torch when used. Used by ``benchmarks/``; the scanner, exporter and runtime never import it.
"""

from lmsan.eval.metrics import (
    AttackScores,
    MetricsError,
    accuracy,
    asr,
    attack_scores,
    flipped,
    insert_into_pair,
    insert_trigger,
)
from lmsan.eval.ngram import NgramScorer
from lmsan.eval.onion import Onion, PerplexityScorer, trigger_detection

__all__ = [
    "AttackScores",
    "MetricsError",
    "NgramScorer",
    "Onion",
    "PerplexityScorer",
    "accuracy",
    "asr",
    "attack_scores",
    "flipped",
    "insert_into_pair",
    "insert_trigger",
    "trigger_detection",
]
