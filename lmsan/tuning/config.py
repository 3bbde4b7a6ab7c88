"""``TuningConfig``: every knob of one prompt-tuning run (method.md §6), and its method presets.

A value: build it with ``TuningConfig.preset(task, method, **overrides)`` (the method's
defaults) or ``from_dict``; change it with ``replace()``. Fields the method decides (``target``,
sizes left at 0) are resolved at construction, so a saved config is explicit. Stdlib,
lmsan.errors and ``lmsan.tuning.tasks`` only (no torch).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from lmsan.errors import ConfigError
from lmsan.tuning.tasks import TASKS, Task, get_task

METHODS = ("prefix", "prompt")  # = lmsan.tuning.model.METHODS (kept here so configs need no torch)
HEADS = ("linear", "verbalizer")
TARGETS = ("cls", "mask", "tokens")  # = lmsan.tuning.model.TARGETS
# Per-method defaults (docs/tuning.md has the accuracies they were chosen on).
# prefix: P-tuning v2, 16 key/value prefix rows per layer and a linear head on [CLS].
# prompt: P-tuning, 8 prompt vectors and the backbone's MLM head at [MASK] scored on the
#         verbaliser words; a backbone without an MLM head needs head="linear". Input-embedding
#         prompts need a larger step than prefixes: with 4 vectors at 5e-3 the verbaliser run on
#         sms-spam stayed at chance (tiny BERT), 8 at 3e-2 reached 0.84.
PRESETS: dict[str, dict[str, Any]] = {
    "prefix": {"length": 16, "lr": 5e-3, "epochs": 10, "head": "linear", "target": "cls"},
    "prompt": {"length": 8, "lr": 3e-2, "epochs": 10, "head": "verbalizer", "target": "mask"},
}


@dataclass(frozen=True)
class TuningConfig:
    """One prompt-tuning run. A value: use ``replace()``, never mutate.

    Attributes:
        task: registered task name (``lmsan.tuning.tasks.TASKS``), or with ``data`` the name of
            the task from that file (any other name).
        data: the user's labelled examples (``lmsan.tuning.tasks.file_task_data``: a
            ``.csv``/``.tsv``/``.jsonl`` file with text and label columns), or None for a
            registered task. Its label count is known once it is read, so a verbaliser's word
            count is checked then.
        method: ``prefix`` (P-tuning v2: per-layer key/value prefixes) or ``prompt`` (P-tuning:
            continuous prompt tokens in a ``[CLS] <p_1..p_P> [MASK] text`` template).
        length: ``P``, prefix rows (``prefix``; method.md: 8–128) or prompt vectors (``prompt``).
        target: position the head reads: ``cls`` (``prefix``) or ``mask`` (``prompt``), or
            ``tokens`` (every position: a token task, ``prefix`` only); ``None`` resolves to
            ``tokens`` for a token task, else the method's.
        head: ``linear`` (a trainable ``Linear(d, C)``) or ``verbalizer`` (the backbone's frozen MLM
            head scored at ``[MASK]`` on one word per label; needs ``target = mask``).
        verbalizer: one word per label for ``head = verbalizer``; ``None`` takes the task's
            first word set that the tokenizer holds as single tokens.
        lr: AdamW learning rate (method.md: 2e-3–1e-2).
        weight_decay: AdamW weight decay on the trainable parameters.
        epochs: passes over the training set.
        batch_size: examples per step (method.md: 32).
        max_length: tokens per input (a pair counts both segments), special tokens included; the
            run uses ``min(max_length, model maximum - template tokens)``.
        train_size: training examples (sentences for a token task); 0 resolves to the task's
            default (a file task's: every example its test split leaves, once the file is read).
        test_size: held-out test examples; 0 resolves to the task's default (a file task's: a
            fifth of its examples, at most 400, once read).
        seed: seeds the prompt and head initialisation and the batch order.
        data_seed: seeds the train / test split (kept apart so that runs with other training
            seeds are scored on the same test set).
    """

    task: str = "sms-spam"
    method: Literal["prefix", "prompt"] = "prefix"
    length: int = 16
    target: Literal["cls", "mask", "tokens"] | None = None
    head: Literal["linear", "verbalizer"] = "linear"
    verbalizer: tuple[str, ...] | None = None
    lr: float = 5e-3
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 32
    max_length: int = 64
    train_size: int = 0
    test_size: int = 0
    seed: int = 0
    data_seed: int = 0
    data: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str):
            raise ConfigError(f"task must be a str; got {self.task!r}")
        task = get_task(self.task) if self.data is None else self._file_task()
        _choice("method", self.method, METHODS)
        _choice("head", self.head, HEADS)
        if self.target is None:
            object.__setattr__(self, "target", "tokens" if task.kind == "tokens" else PRESETS[self.method]["target"])
        _choice("target", self.target, TARGETS)
        for name in ("length", "epochs", "batch_size", "max_length"):
            _int(name, getattr(self, name), minimum=1)
        for name in ("train_size", "test_size", "seed", "data_seed"):
            _int(name, getattr(self, name), minimum=0)
        if self.max_length < 8:
            raise ConfigError(f"max_length must be >= 8; got {self.max_length}")
        _float("lr", self.lr, positive=True)
        _float("weight_decay", self.weight_decay, positive=False)
        _check_token_task(task, self.method, self.target, self.head)
        if self.method == "prefix" and self.target == "mask":
            raise ConfigError("method prefix reads [CLS] (target cls); use method prompt for a [MASK] head")
        if self.head == "verbalizer" and self.target != "mask":
            raise ConfigError("head verbalizer scores the MLM head at [MASK]: it needs method prompt (target mask)")
        if self.verbalizer is not None:
            self._check_verbalizer(task.num_labels if self.data is None else None)
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value == 0:
                object.__setattr__(self, name, getattr(task, name))
            elif value < task.num_labels:
                raise ConfigError(f"{name} must be >= {task.num_labels} (one per label of {task.name}); got {value}")

    def _file_task(self) -> Task:
        """A stand-in for the task from ``data``, a sequence task whose labels and default sizes
        (0) are known once the file is read."""
        if not isinstance(self.data, str) or not self.data.strip():
            raise ConfigError(f"data must be a path to labelled examples; got {self.data!r}")
        if not self.task.strip() or self.task in TASKS:
            raise ConfigError(f"a task from data needs its own name, not {self.task!r} (registered tasks: "
                              f"{', '.join(TASKS)})")
        return Task(self.task, f"labelled examples from {self.data}", (), (), False, 0, 0)

    def _check_verbalizer(self, labels: int | None) -> None:
        words = self.verbalizer
        if not isinstance(words, tuple) or not all(isinstance(w, str) for w in words):
            raise ConfigError(f"verbalizer must be a tuple of words; got {words!r}")
        if self.head != "verbalizer":
            raise ConfigError("verbalizer words need head verbalizer (the linear head has no words)")
        if labels is not None and len(words) != labels:
            raise ConfigError(f"verbalizer has {len(words)} word(s) for the {labels} labels of {self.task}")
        if any(not w.strip() or w != w.strip() or " " in w for w in words):
            raise ConfigError(f"verbalizer words must be single non-empty words; got {list(words)}")
        if len(set(words)) != len(words):
            raise ConfigError(f"verbalizer words must be distinct; got {list(words)}")

    # ---- value plumbing -------------------------------------------------------------------
    @classmethod
    def preset(cls, task: str, method: str = "prefix", **overrides: Any) -> "TuningConfig":
        """Return ``method``'s defaults (``PRESETS``) for ``task`` with ``overrides`` applied.

        Raises:
            ConfigError: unknown task, method or override key, or an invalid value.
        """
        _choice("method", method, METHODS)
        defaults = dict(PRESETS[method])
        if overrides.get("data") is None and get_task(task).kind == "tokens":
            defaults.pop("target")  # a token task's head reads every position
        return cls.from_dict({**defaults, "task": task, "method": method, **overrides})

    def replace(self, **changes: Any) -> "TuningConfig":
        """Return a copy with ``changes`` (validated; unknown keys raise ``ConfigError``)."""
        _check_keys(changes)
        return replace(self, **_tuples(changes))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready mapping of every field (the verbaliser as a list; ``data`` only for
        a file task, so a registered task's mapping, and what is keyed by it, stays as it was)."""
        data = asdict(self)
        if data["verbalizer"] is not None:
            data["verbalizer"] = list(data["verbalizer"])
        if data["data"] is None:
            del data["data"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TuningConfig":
        """Build from a mapping; an unknown key raises ``ConfigError`` naming it.

        A ``lmsan_version`` key (what ``to_json`` stamps in) is accepted and ignored.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a tuning config must be a mapping, got {type(data).__name__}")
        data = {key: value for key, value in data.items() if key != "lmsan_version"}
        _check_keys(data)
        return cls(**_tuples(data))

    def to_json(self) -> str:
        """JSON text with sorted keys and the lmsan version stamped in."""
        from lmsan import __version__

        return json.dumps({**self.to_dict(), "lmsan_version": __version__}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "TuningConfig":
        """Inverse of ``to_json``.

        Raises:
            ConfigError: not JSON, not an object, or an invalid config.
        """
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"tuning config is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    """JSON gives the verbaliser as a list; the config holds a tuple."""
    if isinstance(data.get("verbalizer"), list):
        return {**data, "verbalizer": tuple(data["verbalizer"])}
    return data


def _check_token_task(task: Any, method: str, target: str, head: str) -> None:
    """A token task (``kind = tokens``) goes with target ``tokens``, method ``prefix`` and a linear head.

    Raises:
        ConfigError: any other combination.
    """
    if task.kind != "tokens":
        if target == "tokens":
            raise ConfigError(f"target tokens is for token-classification tasks; {task.name} is a sequence task")
        return
    if target != "tokens":
        raise ConfigError(f"{task.name} tags every word: its head reads every position (target tokens), not {target}")
    if method != "prefix":
        raise ConfigError(f"token classification ({task.name}) needs method prefix (P-tuning v2), not {method}")
    if head != "linear":
        raise ConfigError(f"token classification ({task.name}) needs a linear head, not a verbalizer")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}; got {value!r}")


def _float(name: str, value: Any, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite float; got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{name} must be {'> 0' if positive else '>= 0'}; got {value!r}")


def _check_keys(data: dict[str, Any]) -> None:
    known = {f.name for f in fields(TuningConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ConfigError(f"unknown tuning config key {unknown[0]!r}{more}")


__all__ = ["HEADS", "METHODS", "PRESETS", "TARGETS", "TuningConfig"]
