"""Downstream tasks for prompt-tuning, built from the offline corpora (``lmsan.data``).

Five tasks, each with label names, default verbaliser words and train/test sizes that keep CPU
training to seconds on the tiny models:

* ``sms-spam``: ham / spam SMS messages;
* ``polarity``: negative / positive movie-review sentences (Pang & Lee);
* ``bbcnews``: the 5 BBC News topics, from an article's title and first sentence;
* ``bbc-pair``: a text pair: does this BBC News headline belong to the article that opens with this
  sentence? (``different`` / ``same`` article; mismatched leads come from any other article);
* ``oanc-pos``: token classification (``kind = "tokens"``): a coarse part-of-speech tag for every
  word of an OANC sentence (Penn Treebank tags mapped by ``COARSE_TAGS``), the offline stand-in
  for the paper's CoNLL NER (POR-NER attacks every token position).

A task can also come from the user's own labelled examples (``file_task_data``): a ``.csv`` /
``.tsv`` / ``.jsonl`` file that ``lmsan.data.load_labelled`` reads, split stratified (each label
keeps its share of the file in both sets).

Registry sequence splits are balanced (equal examples per label, the first labels taking any
remainder), token splits are random; all are disjoint (``bbc-pair`` draws train and test pairs
from disjoint article pools) and a pure function of the seed. Stdlib and ``lmsan.data`` only: no
torch, no transformers.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Callable, Sequence

from lmsan.data import LabelledSet, load_labelled
from lmsan.data.clean import dedup_key, normalize_text, split_sentences, word_count
from lmsan.data.labelled import build_labelled
from lmsan.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

# bbcnews input: the title plus the first body sentence (bbc_text always keeps one sentence).
BBC_TASK_WORDS = 30
# bbc-pair lead sentences: this many words.
PAIR_WORDS = (6, 40)
# bbc-pair: share of the articles (per topic) whose sentences form the training pairs.
PAIR_TRAIN_SHARE = 0.7
KINDS = ("sequence", "tokens")  # a label per input / a label per word
# A file task's default test split: a fifth of its examples, at most this many.
FILE_TEST_SHARE, FILE_TEST_MAX = 0.2, 400
# oanc-pos: sentences of this many words (a tagger line of the OANC file is one sentence).
POS_WORDS = (5, 40)
# oanc-pos: Penn Treebank tag -> coarse tag; any other tag is X (POS, LS, SYM, UH, FW, ...).
COARSE_TAGS: dict[str, str] = {
    **dict.fromkeys(("NN", "NNS"), "NOUN"), **dict.fromkeys(("NNP", "NNPS"), "PROPN"),
    **dict.fromkeys(("VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "MD"), "VERB"),
    **dict.fromkeys(("JJ", "JJR", "JJS"), "ADJ"), **dict.fromkeys(("RB", "RBR", "RBS", "WRB"), "ADV"),
    **dict.fromkeys(("PRP", "PRP$", "WP", "WP$", "EX"), "PRON"), **dict.fromkeys(("DT", "PDT", "WDT"), "DET"),
    **dict.fromkeys(("IN", "TO", "RP"), "ADP"), "CC": "CONJ", "CD": "NUM",
    **dict.fromkeys((",", ".", ":", '"', "``", "''", "(", ")", "-LRB-", "-RRB-", "$", "#"), "PUNCT"),
}
POS_TAGS = ("NOUN", "PROPN", "VERB", "ADJ", "ADV", "PRON", "DET", "ADP", "CONJ", "NUM", "PUNCT", "X")
_BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "``": '"', "''": '"'}  # PTB escapes


@dataclass(frozen=True)
class Task:
    """One classification task.

    Attributes:
        name: registry name (``--task``).
        description: one line for ``--list-tasks``.
        label_names: ``C`` class names in label order.
        verbalizers: candidate verbaliser word sets, each one word per label in label order. The
            first set whose every word is a single token of the backbone's vocabulary is used
            (``lmsan.tuning.train.resolve_verbalizer``): tiny RoBERTa's BPE has no single ``yes``.
        pairs: inputs are text pairs.
        train_size: default training examples (sentences for a token task).
        test_size: default held-out test examples.
        kind: ``sequence`` (one label per input) or ``tokens`` (one label per word: token
            classification; no verbaliser, no pairs).
    """

    name: str
    description: str
    label_names: tuple[str, ...]
    verbalizers: tuple[tuple[str, ...], ...]
    pairs: bool
    train_size: int
    test_size: int
    kind: str = "sequence"

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass(frozen=True)
class TokenSet:
    """A token-classification set: ``N`` sentences of words, one tag per word.

    Attributes:
        words: ``N`` sentences, each a tuple of words (no spaces inside a word).
        tags: ``N`` tuples of ints in ``[0, C)``, one per word, indexing ``label_names``.
        label_names: ``C`` tag names.
        source: where the set came from.
    """

    words: tuple[tuple[str, ...], ...]
    tags: tuple[tuple[int, ...], ...]
    label_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if len(self.words) != len(self.tags):
            raise DataError(f"{self.source}: {len(self.words)} sentences but {len(self.tags)} tag rows")
        for index, (words, tags) in enumerate(zip(self.words, self.tags)):
            if len(words) != len(tags) or not words:
                raise DataError(f"{self.source}: sentence {index} has {len(words)} words and {len(tags)} tags")
            if any(not 0 <= t < len(self.label_names) for t in tags):
                raise DataError(f"{self.source}: sentence {index} has a tag outside [0, {len(self.label_names)})")

    def __len__(self) -> int:
        return len(self.words)

    @property
    def texts(self) -> tuple[str, ...]:
        """Each sentence as text: its words joined by one space (what a guard is given)."""
        return tuple(" ".join(words) for words in self.words)

    text_pairs = None  # token tasks read single texts

    def counts(self) -> dict[str, int]:
        """Return ``{tag name: number of words}``, in tag order."""
        totals = {name: 0 for name in self.label_names}
        for row in self.tags:
            for t in row:
                totals[self.label_names[t]] += 1
        return totals


@dataclass(frozen=True)
class TaskData:
    """A task's training and test sets (disjoint; balanced for sequence tasks; from ``seed``)."""

    task: Task
    train: LabelledSet | TokenSet
    test: LabelledSet | TokenSet
    seed: int


TASKS: dict[str, Task] = {
    "sms-spam": Task("sms-spam", "SMS messages: ham or spam (SMS Spam Collection)", ("ham", "spam"),
                     (("no", "yes"), ("normal", "spam"), ("good", "bad")), False, 400, 400),
    "polarity": Task("polarity", "movie-review sentences: negative or positive (Pang & Lee)",
                     ("negative", "positive"), (("bad", "good"), ("negative", "positive")), False, 800, 400),
    "bbcnews": Task("bbcnews", "BBC News topic from the title and first sentence (5 topics)",
                    ("business", "entertainment", "politics", "sports", "tech"),
                    (("business", "entertainment", "politics", "sports", "technology"),
                     ("money", "film", "government", "football", "computer")), False, 800, 400),
    "bbc-pair": Task("bbc-pair", "a BBC News headline and a lead sentence: from the same article or not (pairs)",
                     ("different", "same"), (("no", "yes"), ("different", "same")), True, 800, 400),
    "oanc-pos": Task("oanc-pos", "coarse part-of-speech tag of every word of an OANC sentence (token "
                     "classification; the offline stand-in for CoNLL NER)", POS_TAGS, (), False, 1500, 400,
                     kind="tokens"),
}


def get_task(name: str) -> Task:
    """Return the registered task ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[name]


def task_data(name: str, *, train_size: int | None = None, test_size: int | None = None,
              seed: int = 0, source: str | None = None) -> TaskData:
    """Load a task's disjoint training and test sets: balanced for a registered task, stratified
    for one from ``source``.

    Args:
        name: registry name (``TASKS``), or the name of the task from ``source``.
        train_size: training examples, sentences for a token task (default: the task's).
        test_size: test examples (default: the task's).
        seed: the shuffle seed; the same seed always gives the same sets.
        source: the user's labelled examples (``file_task_data``); None for a registered task.

    Raises:
        ConfigError: unknown task or a size < the number of labels.
        DataError: the corpus cannot be loaded, or holds too few examples (of a label).
    """
    if source is not None:
        return file_task_data(name, source, train_size=train_size or 0, test_size=test_size or 0, seed=seed)
    task = get_task(name)
    sizes = {"train": task.train_size if train_size is None else train_size,
             "test": task.test_size if test_size is None else test_size}
    for split, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < task.num_labels:
            raise ConfigError(f"{split} size must be an int >= {task.num_labels} (one per label) for {name}; "
                              f"got {size!r}")
    train, test = _BUILDERS[name](task, sizes, seed)
    logger.info("task %s: %d train / %d test examples (seed %d)", name, len(train), len(test), seed)
    return TaskData(task=task, train=train, test=test, seed=seed)


def file_task_data(name: str, source: str, *, train_size: int = 0, test_size: int = 0, seed: int = 0) -> TaskData:
    """A sequence task from the user's own labelled examples.

    Args:
        name: the task's name (``task.json`` records it; not a registered task's name).
        source: a ``.csv``/``.tsv``/``.jsonl`` file (or ``hf:NAME[:CONFIG][@SPLIT]``) that
            ``lmsan.data.load_labelled`` reads: a text column (``text`` or ``sentence``; for
            pairs ``text_a`` and ``text_b``, as lmsan-guard reads them, or ``sentence1`` and
            ``sentence2``) and a label column (``label``, ``labels``, ``class`` or
            ``category``); labels are named by their values, in numeric or alphabetical order.
            Repeated rows are dropped.
        train_size: training examples; 0: every example the test split leaves.
        test_size: held-out test examples; 0: a fifth (``FILE_TEST_SHARE``), at most
            ``FILE_TEST_MAX``, at least one per label.
        seed: the split seed; the same seed always gives the same sets.

    Raises:
        ConfigError: ``name`` is a registered task's.
        DataError: the file cannot be read as labelled examples, or holds too few for the sizes.
    """
    if name in TASKS:
        raise ConfigError(f"{name!r} is a registered task; name a task from your own data otherwise")
    data = load_labelled(source)
    classes = data.num_labels
    test = test_size or min(FILE_TEST_MAX, max(classes, int(len(data) * FILE_TEST_SHARE)))
    train = train_size or len(data) - test
    if train < classes or test < classes or train + test > len(data):
        raise DataError(f"{source}: {len(data)} distinct examples of {classes} labels cannot give {train} training "
                        f"and {test} test examples with each label in both")
    train_set, test_set = stratified_split(data, {"train": train, "test": test}, seed=seed)
    task = Task(name, f"labelled examples from {source}", data.label_names, (), data.text_pairs is not None,
                train, test)
    logger.info("task %s: %d train / %d test examples from %s (seed %d)", name, train, test, source, seed)
    return TaskData(task=task, train=train_set, test=test_set, seed=seed)


def stratified_split(data: LabelledSet, sizes: dict[str, int], *, seed: int) -> list[LabelledSet]:
    """Cut disjoint subsets in the order of ``sizes``, each holding every label in about its share
    of ``data`` (largest remainders round; at least one example per label); a subset as large as
    all that the earlier ones left takes all of it.

    Each label's examples are shuffled with ``Random(seed)``; each subset is shuffled again.

    Raises:
        DataError: a label has fewer examples than the subsets need.
    """
    counts = data.counts().values()
    shares = [count / len(data) for count in counts]
    return _split_by_label(data, sizes, seed,
                           lambda size, left: left if size == sum(left) else _proportional(size, shares))


def _proportional(total: int, shares: list[float]) -> list[int]:
    """``total`` (>= ``len(shares)``) split in proportion to ``shares``: each part at least 1,
    the largest remainders rounding up, the largest parts giving back any excess."""
    exact = [total * share for share in shares]
    parts = [max(1, int(x)) for x in exact]
    by_remainder = sorted(range(len(parts)), key=lambda k: exact[k] - int(exact[k]), reverse=True)
    for k in by_remainder[:max(0, total - sum(parts))]:
        parts[k] += 1
    while sum(parts) > total:
        parts[max(range(len(parts)), key=lambda k: parts[k])] -= 1
    return parts


def _quotas(total: int, classes: int) -> list[int]:
    """``total`` split into ``classes`` near-equal parts, the first ones taking the remainder."""
    return [total // classes + (1 if c < total % classes else 0) for c in range(classes)]


def balanced_split(data: LabelledSet, sizes: dict[str, int], *, seed: int) -> list[LabelledSet]:
    """Cut disjoint subsets with equal examples per label, in the order of ``sizes``.

    Each label's examples are shuffled with ``Random(seed)``; each subset is shuffled again.

    Raises:
        DataError: a label has fewer examples than the subsets need.
    """
    return _split_by_label(data, sizes, seed, lambda size, left: _quotas(size, data.num_labels))


def _split_by_label(data: LabelledSet, sizes: dict[str, int], seed: int,
                    quotas: Callable[[int, list[int]], list[int]]) -> list[LabelledSet]:
    """Shuffle each label's examples with ``Random(seed)``, then cut the subsets of ``sizes`` in
    order: ``quotas(size, left)`` examples of each label (``left``: per label, the examples the
    earlier subsets did not take), each subset shuffled again.

    Raises:
        DataError: a quota below 1 or above what is left of its label.
    """
    rng = random.Random(seed)
    by_label: list[list[int]] = [[] for _ in data.label_names]
    for index, label in enumerate(data.labels):
        by_label[label].append(index)
    for members in by_label:
        rng.shuffle(members)
    starts = [0] * data.num_labels
    subsets = []
    for size in sizes.values():
        left = [len(members) - start for members, start in zip(by_label, starts)]
        chosen: list[int] = []
        for label, quota in enumerate(quotas(size, left)):
            if not 1 <= quota <= left[label]:
                raise DataError(f"{data.source}: label {data.label_names[label]!r} has {len(by_label[label])} "
                                f"examples; the splits need more ({', '.join(f'{k}={v}' for k, v in sizes.items())})")
            chosen.extend(by_label[label][starts[label]: starts[label] + quota])
            starts[label] += quota
        rng.shuffle(chosen)
        subsets.append(data.select(chosen))
    return subsets


def _registry(task: Task, sizes: dict[str, int], seed: int) -> tuple[LabelledSet, LabelledSet]:
    data = load_labelled(task.name)
    if data.label_names != task.label_names:
        raise DataError(f"{task.name}: the corpus has labels {data.label_names}, expected {task.label_names}")
    train, test = balanced_split(data, sizes, seed=seed)
    return train, test


def tagged_sentences(lines: Sequence[str], *,
                     words: tuple[int, int] = POS_WORDS) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """``(words, coarse tags)`` of each distinct ``word/TAG ...`` line that a tokenizer keeps word for word.

    A line is kept when it has ``words[0]..words[1]`` tokens, at least one of them alphabetic, and
    every token (PTB bracket escapes undone) is all letters, all digits, or one punctuation
    character: a BERT or byte-level BPE pre-tokenizer then splits the words joined by spaces into
    exactly these words, so a tag per word is a tag per pre-tokenized word at run time. (Lines
    with clitics like ``n't`` / ``'s``, ``1,000``, ``U.S.`` or ``&slash;`` are dropped.) An
    ambiguous tag (``VBG|NN``) counts as its first part.
    """
    low, high = words
    out, seen = [], set()
    for line in lines:
        pairs = [token.rpartition("/") for token in line.split()]
        tokens = tuple(_BRACKETS.get(word, word) for word, _, _ in pairs)
        if not low <= len(tokens) <= high or tokens in seen or not all(_plain_word(t) for t in tokens):
            continue
        if not any(t.isalpha() for t in tokens) or any(not sep for _, sep, _ in pairs):
            continue
        seen.add(tokens)
        out.append((tokens, tuple(COARSE_TAGS.get(tag.split("|")[0], "X") for _, _, tag in pairs)))
    return out


def _plain_word(word: str) -> bool:
    return word.isalpha() or word.isdigit() or (len(word) == 1 and not word.isalnum() and not word.isspace())


def _oanc_pos(task: Task, sizes: dict[str, int], seed: int) -> tuple[TokenSet, TokenSet]:
    """Disjoint random train / test sentences of the OANC tagged file (``tagged_sentences``)."""
    from lmsan.data.fetcher import fetch
    from lmsan.data.local import read_text

    rows = tagged_sentences(read_text(fetch("oanc")).splitlines())
    needed = sum(sizes.values())
    if needed > len(rows):
        raise DataError(f"oanc-pos: {len(rows)} usable sentences, the splits need {needed}")
    random.Random(seed).shuffle(rows)
    index = {name: i for i, name in enumerate(task.label_names)}
    sets, start = [], 0
    for split, size in sizes.items():
        chosen = rows[start: start + size]
        start += size
        sets.append(TokenSet(words=tuple(w for w, _ in chosen), tags=tuple(tuple(index[t] for t in tags)
                                                                          for _, tags in chosen),
                             label_names=task.label_names, source=f"oanc-pos:{split}"))
    return sets[0], sets[1]


def _bbc_articles() -> list:
    from lmsan.data import corpora
    from lmsan.data.fetcher import fetch

    return corpora.bbc_articles(fetch("bbcnews"))


def _bbcnews(task: Task, sizes: dict[str, int], seed: int) -> tuple[LabelledSet, LabelledSet]:
    from lmsan.data.corpora import bbc_text

    articles = _bbc_articles()
    data = build_labelled([bbc_text(a, max_words=BBC_TASK_WORDS) for a in articles], [a.topic for a in articles],
                          source="bbcnews", label_names=task.label_names)
    train, test = balanced_split(data, sizes, seed=seed)
    return train, test


def _headline_pairs(articles: list) -> dict[str, list[tuple[str, str]]]:
    """``{topic: [(title, lead sentence), ...]}`` of distinct articles whose lead has ``PAIR_WORDS`` words."""
    low, high = PAIR_WORDS
    topics: dict[str, list[tuple[str, str]]] = {}
    seen: set[str] = set()  # the corpus repeats some stories: a repeated title or lead is dropped
    for article in articles:
        sentences = split_sentences(article.body)
        title = normalize_text(article.title)
        lead = normalize_text(sentences[0]) if sentences else ""
        keys = {"t" + dedup_key(title), "l" + dedup_key(lead)}
        if title and lead and low <= word_count(lead) <= high and not keys & seen:
            seen.update(keys)
            topics.setdefault(article.topic, []).append((title, lead))
    return topics


def _bbc_pairs(task: Task, sizes: dict[str, int], seed: int) -> tuple[LabelledSet, LabelledSet]:
    """Article pools split per topic (train / test), then balanced headline / lead-sentence pairs."""
    rng = random.Random(seed)
    topics = _headline_pairs(_bbc_articles())
    pools: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for topic in sorted(topics):
        articles = topics[topic]
        rng.shuffle(articles)
        cut = round(len(articles) * PAIR_TRAIN_SHARE)
        pools["train"].extend(articles[:cut])
        pools["test"].extend(articles[cut:])
    out = [_draw_pairs(pools[split], size, rng, split=split, names=task.label_names) for split, size in sizes.items()]
    return out[0], out[1]


def _draw_pairs(pool: list[tuple[str, str]], size: int, rng: random.Random, *, split: str,
                names: tuple[str, ...]) -> LabelledSet:
    """``size`` distinct (title, lead) pairs: half (label 1) from one article, half from two."""
    positives, negatives = _quotas(size, 2)[::-1]
    if positives > len(pool) or len(pool) < 2:
        raise DataError(f"bbc-pair {split}: {len(pool)} articles in the pool, {positives} same-article pairs asked for")
    rows = [(title, lead, 1) for title, lead in rng.sample(pool, positives)]
    seen = {(title, lead) for title, lead, _ in rows}
    tries = 0
    while len(rows) < size:
        tries += 1
        if tries > 50 * size + 1000:
            raise DataError(f"bbc-pair {split}: cannot draw {negatives} distinct mismatched pairs from the pool")
        (title, _), (_, lead) = rng.sample(pool, 2)
        if (title, lead) not in seen:
            seen.add((title, lead))
            rows.append((title, lead, 0))
    rng.shuffle(rows)
    return LabelledSet(texts=tuple(r[0] for r in rows), labels=tuple(r[2] for r in rows), label_names=names,
                       source=f"bbc-pair:{split}", text_pairs=tuple(r[1] for r in rows))


_BUILDERS: dict[str, Callable[[Task, dict[str, int], int], tuple[LabelledSet | TokenSet, LabelledSet | TokenSet]]] = {
    "sms-spam": _registry,
    "polarity": _registry,
    "bbcnews": _bbcnews,
    "bbc-pair": _bbc_pairs,
    "oanc-pos": _oanc_pos,
}

__all__ = ["COARSE_TAGS", "KINDS", "POS_TAGS", "TASKS", "Task", "TaskData", "TokenSet", "balanced_split",
           "file_task_data", "get_task", "stratified_split", "tagged_sentences", "task_data"]
