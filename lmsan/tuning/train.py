"""Train a ``PromptTuned`` task on a frozen backbone, and score it (method.md §6).

AdamW on the prompt (and the linear head) only, cross-entropy, the backbone frozen and in eval
mode throughout (no dropout), everything seeded by ``TuningConfig.seed``. A token task
(``Task.kind == "tokens"``) encodes each sentence as its words joined by spaces and labels the
first sub-token of each word (the fast tokenizer's ``word_ids``: the same words the runtime guard
tags); the other positions are ignored (-100) by the loss. Imports torch and transformers (via
the model) and ``lmsan.eval.metrics``; never mining, export or runtime.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from lmsan.errors import ConfigError, DataError
from lmsan.eval.metrics import token_f1
from lmsan.tuning.config import TuningConfig
from lmsan.tuning.model import PromptTuned, mlm_head_of
from lmsan.tuning.tasks import Task, TaskData

log = logging.getLogger(__name__)

ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")  # positions start at pad_token_id + 1
EVAL_BATCH = 64
IGNORE = -100  # label of positions the token loss skips (specials, padding, later sub-tokens)


@dataclass
class TunedTask:
    """What ``tune`` returns.

    Attributes:
        model: the trained ``PromptTuned`` (eval mode, on the backbone's device).
        task: the task definition.
        config: the run's config.
        verbalizer_words: the words scored at ``[MASK]`` (``head = verbalizer``), else ``None``.
        max_length: the token limit inputs were truncated to (template tokens excluded).
        metrics: ``train_accuracy`` / ``test_accuracy`` (floats in [0, 1]; per word for a token
            task, which also has ``test_f1``, the macro-F1 over tags), ``chance`` (share of the
            largest test label or tag), sizes, ``loss_per_epoch`` (mean cross-entropy) and ``wall_s``.
    """

    model: PromptTuned
    task: Task
    config: TuningConfig
    verbalizer_words: tuple[str, ...] | None
    max_length: int
    metrics: dict[str, Any] = field(default_factory=dict)


def model_max_tokens(loaded: Any) -> int:
    """Longest sequence (special tokens included) the backbone accepts."""
    config = loaded.model.config
    positions = int(config.max_position_embeddings)
    if config.model_type in ROBERTA_LIKE:
        positions -= int(config.pad_token_id or 0) + 1
    limit = getattr(loaded.tokenizer, "model_max_length", None)
    return int(min(positions, limit)) if isinstance(limit, int) and limit < 1_000_000 else positions


def token_limit(loaded: Any, model: PromptTuned, max_length: int) -> int:
    """``min(max_length, model maximum - template tokens)``: the tokenizer's truncation length.

    Raises:
        ConfigError: the template leaves fewer than 8 tokens for the input.
    """
    limit = min(max_length, model_max_tokens(loaded) - model.reserved_tokens)
    if limit < 8:
        raise ConfigError(f"{loaded.source} takes {model_max_tokens(loaded)} tokens; a template of "
                          f"{model.reserved_tokens} leaves {limit} for the input (need >= 8): shorten the prompt")
    return limit


def word_token(tokenizer: Any, word: str) -> int | None:
    """The single vocabulary id of ``word`` as it appears after a space, else ``None``."""
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    return int(ids[0]) if len(ids) == 1 else None


def resolve_verbalizer(tokenizer: Any, task: Task, words: Sequence[str] | None = None) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Map verbaliser words to token ids: ``words`` if given, else the task's first set that fits.

    Returns:
        ``(words, ids)``, one per label.

    Raises:
        ConfigError: not one given word per label, a given word is not one token of the vocabulary,
            or no task word set fits (a task from the user's data has none).
    """
    if words is not None:
        if len(words) != task.num_labels:
            raise ConfigError(f"verbalizer has {len(words)} word(s) for the {task.num_labels} labels of {task.name} "
                              f"({', '.join(task.label_names)})")
        ids = [word_token(tokenizer, w) for w in words]
        bad = [w for w, i in zip(words, ids) if i is None]
        if bad:
            raise ConfigError(f"verbalizer word(s) {bad} are not single tokens of this tokenizer; choose others")
        if len(set(ids)) != len(ids):
            raise ConfigError(f"verbalizer words {list(words)} share a token id")
        return tuple(words), tuple(int(i) for i in ids)
    if not task.verbalizers:
        raise ConfigError(f"{task.name} has no verbalizer words: pass one per label ({', '.join(task.label_names)}) "
                          "with --verbalizer, or use a linear head")
    for candidate in task.verbalizers:
        ids = [word_token(tokenizer, w) for w in candidate]
        if all(i is not None for i in ids) and len(set(ids)) == len(ids):
            return tuple(candidate), tuple(int(i) for i in ids)
    sets = "; ".join(",".join(c) for c in task.verbalizers)
    raise ConfigError(f"none of {task.name}'s verbalizer word sets ({sets}) is single tokens of this tokenizer: "
                      "pass your own words, or use a linear head")


def mlm_head_stored(loaded: Any) -> bool | None:
    """Whether the backbone's weight files hold its MLM head (``cls.*`` / ``lm_head.*`` tensors).

    ``AutoModelForMaskedLM`` fills a head missing from the files with random weights, which a
    verbaliser must not score. Returns ``None`` when it cannot tell (a hub model, no head loaded).
    """
    head = mlm_head_of(loaded.model)
    source = Path(str(loaded.source)).expanduser()
    if head is None or not source.is_dir() or not loaded.weight_sha256:
        return None
    name = next(n for n, child in loaded.model.named_children() if child is head)
    from safetensors import safe_open

    for file_name in loaded.weight_sha256:
        if not file_name.endswith(".safetensors"):
            return None
        with safe_open(str(source / file_name), framework="pt") as handle:
            if any(key.startswith(name + ".") for key in handle.keys()):
                return True
    return False


class Encoded:
    """A tokenized set, padded per batch (right padding).

    Attributes:
        ids: ``N`` lists of token ids (special tokens included, truncated).
        types: ``N`` lists of token type ids, or ``None`` when the tokenizer gives none.
    """

    def __init__(self, tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None, *, max_length: int) -> None:
        encoded = tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True,
                            max_length=max_length)
        self.encoding = encoded  # the fast tokenizer's BatchEncoding (word_ids)
        self.ids: list[list[int]] = encoded["input_ids"]
        self.types: list[list[int]] | None = encoded.get("token_type_ids")
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices: Sequence[int], device: Any) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` (/ ``token_type_ids``) int64 [B, T_max of the batch]."""
        width = max(len(self.ids[i]) for i in indices)
        ids = torch.full((len(indices), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(indices), width), dtype=torch.long)
        types = torch.zeros((len(indices), width), dtype=torch.long) if self.types is not None else None
        for row, i in enumerate(indices):
            n = len(self.ids[i])
            ids[row, :n] = torch.tensor(self.ids[i])
            mask[row, :n] = 1
            if types is not None:
                types[row, :n] = torch.tensor(self.types[i])
        out = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if types is not None:
            out["token_type_ids"] = types.to(device)
        return out


class TokenEncoded(Encoded):
    """A tokenized token-classification set: ``Encoded`` of the sentences (words joined by one
    space) and where each word starts.

    Attributes:
        starts: ``N`` lists, one token index per word: its first sub-token (-1: truncated away).
        tags: ``N`` lists of tag ids, one per word (``None`` when unlabelled).

    Raises:
        DataError: the tokenizer splits a sentence into other words than the task's (a word with
            spaces or punctuation inside; ``lmsan.tuning.tasks.tagged_sentences`` keeps none).
    """

    def __init__(self, tokenizer: Any, words: Sequence[Sequence[str]], tags: Sequence[Sequence[int]] | None, *,
                 max_length: int) -> None:
        super().__init__(tokenizer, [" ".join(w) for w in words], None, max_length=max_length)
        self.tags = [list(t) for t in tags] if tags is not None else None
        self.starts = [word_starts(self.encoding.word_ids(i), len(w), truncated=len(self.ids[i]) >= max_length,
                                   index=i) for i, w in enumerate(words)]

    def labels(self, indices: Sequence[int], width: int, device: Any) -> torch.Tensor:
        """int64 [B, width]: each word's tag at its first sub-token, ``IGNORE`` elsewhere."""
        out = torch.full((len(indices), width), IGNORE, dtype=torch.long)
        for row, i in enumerate(indices):
            for start, tag in zip(self.starts[i], self.tags[i]):
                if start >= 0:
                    out[row, start] = tag
        return out.to(device)


def word_starts(word_ids: Sequence[int | None], words: int, *, truncated: bool, index: int = 0) -> list[int]:
    """The first token of each of ``words`` words, from a fast tokenizer's ``word_ids`` (-1: a
    word truncated away).

    Raises:
        DataError: the tokenizer found more words, or (not ``truncated``) fewer.
    """
    starts = [-1] * words
    for token, word in enumerate(word_ids):
        if word is None:
            continue
        if word >= words:
            raise DataError(f"sentence {index}: the tokenizer splits it into more than its {words} words")
        if starts[word] < 0:
            starts[word] = token
    if not truncated and -1 in starts:
        raise DataError(f"sentence {index}: the tokenizer finds {starts.index(-1)} of its {words} words")
    return starts


def _device(model: PromptTuned) -> torch.device:
    return model.prompt.device


@torch.no_grad()
def predict(model: PromptTuned, encoded: Encoded, *, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Logits float [N, C] for every encoded input, in order (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(encoded), batch_size):
        logits, _ = model(**encoded.batch(range(start, min(start + batch_size, len(encoded))), _device(model)))
        out.append(logits.float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.num_labels)


@torch.no_grad()
def predict_tags(model: PromptTuned, encoded: TokenEncoded, *, batch_size: int = EVAL_BATCH) -> list[list[int | None]]:
    """A token task's tag id for every word of every sentence (``None``: truncated away)."""
    was_training = model.training
    model.eval()
    out: list[list[int | None]] = []
    for start in range(0, len(encoded), batch_size):
        rows = range(start, min(start + batch_size, len(encoded)))
        logits, _ = model(**encoded.batch(rows, _device(model)))  # [B, T, C]
        best = logits.argmax(dim=-1).cpu().tolist()
        out += [[best[r][t] if t >= 0 else None for t in encoded.starts[i]] for r, i in enumerate(rows)]
    model.train(was_training)
    return out


def evaluate_tokens(model: PromptTuned, tokenizer: Any, words: Sequence[Sequence[str]], tags: Sequence[Sequence[int]],
                    *, max_length: int = 64, batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """A token task's per-word ``accuracy`` and macro-``f1`` over tags (floats in [0, 1]); a word
    truncated away counts as wrong.

    Raises:
        DataError: no sentences, or lengths that differ.
    """
    if not words or len(words) != len(tags):
        raise DataError(f"evaluate_tokens needs N > 0 sentences with N tag rows; got {len(words)} and {len(tags)}")
    predicted = predict_tags(model, TokenEncoded(tokenizer, words, None, max_length=max_length), batch_size=batch_size)
    pairs = [(p, g) for row, gold in zip(predicted, tags) for p, g in zip(row, gold)]
    return {"accuracy": sum(p == g for p, g in pairs) / len(pairs), "f1": token_f1(predicted, tags) or 0.0}


def evaluate(model: PromptTuned, tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None,
             labels: Sequence[int], *, max_length: int = 64, batch_size: int = EVAL_BATCH) -> float:
    """Accuracy (float in [0, 1]) of ``model`` on labelled texts (or text pairs).

    Args:
        model: a trained ``PromptTuned``.
        tokenizer: the backbone's tokenizer.
        texts: ``N`` inputs (first segments of pairs).
        pairs: ``N`` second segments, or ``None``.
        labels: ``N`` ints in ``[0, C)``.
        max_length: token limit per input (``TunedTask.max_length``).

    Raises:
        DataError: no texts, or lengths that differ.
    """
    if not texts or len(texts) != len(labels) or (pairs is not None and len(pairs) != len(texts)):
        raise DataError(f"evaluate needs N > 0 texts with N labels (and pairs); got {len(texts)} texts, "
                        f"{len(labels)} labels")
    logits = predict(model, Encoded(tokenizer, texts, pairs, max_length=max_length), batch_size=batch_size)
    return float((logits.argmax(dim=1) == torch.tensor(list(labels))).float().mean())


def tune(loaded: Any, data: TaskData, config: TuningConfig, *, progress: bool = True,
         on_epoch: Callable[[int, float], None] | None = None) -> TunedTask:
    """Prompt-tune a task on a frozen backbone and score it on the train and test sets.

    Args:
        loaded: ``lmsan.models.LoadedModel``; with ``head = verbalizer`` loaded with
            ``with_mlm_head=True`` from weights that store the MLM head.
        data: the task's train and test sets (``task_data``).
        config: the run's knobs; ``config.task`` must be ``data.task.name``.
        progress: draw a tqdm bar on stderr (hidden off a TTY).
        on_epoch: called after each epoch with ``(epoch, mean loss)``.

    Returns:
        The trained model with its metrics.

    Raises:
        ConfigError: task mismatch, an unusable verbaliser or MLM head, a template too long.
    """
    if config.task != data.task.name:
        raise ConfigError(f"config is for task {config.task!r}, the data for {data.task.name!r}")
    started = time.perf_counter()
    words, ids = None, None
    if config.head == "verbalizer":
        if mlm_head_stored(loaded) is False:
            raise ConfigError(f"{loaded.source} stores no MLM head, so a verbaliser would score random weights: "
                              "use a linear head (--head linear)")
        words, ids = resolve_verbalizer(loaded.tokenizer, data.task, config.verbalizer)
    device = next(loaded.model.parameters()).device
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(config.seed)
        model = PromptTuned(loaded, method=config.method, length=config.length, num_labels=data.task.num_labels,
                            target=config.target, verbalizer=ids)
    model.to(device).eval()  # eval throughout: the backbone runs without dropout
    limit = token_limit(loaded, model, config.max_length)
    tokens = data.task.kind == "tokens"
    if tokens:
        train: Encoded = TokenEncoded(loaded.tokenizer, data.train.words, data.train.tags, max_length=limit)
    else:
        train = Encoded(loaded.tokenizer, data.train.texts, data.train.text_pairs, max_length=limit)
        labels = torch.tensor(data.train.labels, dtype=torch.long, device=device)
    optimizer = torch.optim.AdamW(model.trainable(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    steps = -(-len(train) // config.batch_size)
    losses: list[float] = []
    from tqdm import tqdm

    bar = tqdm(total=config.epochs * steps, desc=f"tune {config.task} ({config.method})", unit="step",
               disable=None if progress else True, leave=False, dynamic_ncols=True)
    try:
        for epoch in range(config.epochs):
            order = torch.randperm(len(train), generator=generator).tolist()
            total = 0.0
            for start in range(0, len(order), config.batch_size):
                rows = order[start: start + config.batch_size]
                inputs = train.batch(rows, device)
                logits, _ = model(**inputs)
                if tokens:  # logits [B, T, C]; only each word's first sub-token is labelled
                    gold = train.labels(rows, inputs["input_ids"].shape[1], device)
                    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), gold.flatten(),
                                                             ignore_index=IGNORE)
                else:
                    loss = torch.nn.functional.cross_entropy(logits.float(), labels[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach().item() * len(rows)
                bar.update(1)
            losses.append(total / len(train))
            bar.set_postfix_str(f"loss {losses[-1]:.4f}", refresh=False)
            log.debug("epoch %d loss %.4f", epoch + 1, losses[-1])
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
    finally:
        bar.close()
    metrics = {
        **scores(model, loaded.tokenizer, data, limit),
        "train_size": len(data.train), "test_size": len(data.test), "epochs": config.epochs,
        "loss_per_epoch": [round(x, 6) for x in losses],
        "wall_s": round(time.perf_counter() - started, 2),
    }
    f1 = f", test F1 {metrics['test_f1']:.3f}" if tokens else ""
    log.info("tuned %s (%s, P=%d): train acc %.3f, test acc %.3f%s (chance %.3f), wall_s=%.1f", config.task,
             config.method, config.length, metrics["train_accuracy"], metrics["test_accuracy"], f1, metrics["chance"],
             metrics["wall_s"])
    return TunedTask(model=model, task=data.task, config=config, verbalizer_words=words, max_length=limit,
                     metrics=metrics)


def scores(model: PromptTuned, tokenizer: Any, data: TaskData, max_length: int) -> dict[str, float]:
    """``train_accuracy``, ``test_accuracy`` and ``chance`` (share of the largest test label); a
    token task's accuracies are per word, plus ``test_f1`` (macro over tags)."""
    train, test = data.train, data.test
    counts = test.counts()
    chance = max(counts.values()) / sum(counts.values())
    if data.task.kind == "tokens":
        on_train = evaluate_tokens(model, tokenizer, train.words, train.tags, max_length=max_length)
        on_test = evaluate_tokens(model, tokenizer, test.words, test.tags, max_length=max_length)
        return {"train_accuracy": on_train["accuracy"], "test_accuracy": on_test["accuracy"],
                "test_f1": on_test["f1"], "chance": chance}
    return {
        "train_accuracy": evaluate(model, tokenizer, train.texts, train.text_pairs, train.labels,
                                   max_length=max_length),
        "test_accuracy": evaluate(model, tokenizer, test.texts, test.text_pairs, test.labels, max_length=max_length),
        "chance": chance,
    }


__all__ = ["Encoded", "IGNORE", "TokenEncoded", "TunedTask", "evaluate", "evaluate_tokens", "model_max_tokens",
           "mlm_head_stored", "predict", "predict_tags", "resolve_verbalizer", "scores", "token_limit", "tune",
           "word_starts", "word_token"]
