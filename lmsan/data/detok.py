"""Turn Penn-Treebank-style tokens back into running text, and read ``word/TAG`` corpora.

Used for the OANC tagged sentences and the (tokenised, lower-cased) Pang & Lee sentences.
Stdlib only.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from lmsan.data.clean import ABBREVIATIONS

# Tokens glued to the word before them ("word ," -> "word,").
_ATTACH_LEFT = frozenset(",.;:!?%)]}") | frozenset({"...", ".."})
# Tokens glued to the word after them ("( word" -> "(word").
_ATTACH_RIGHT = frozenset("([{$#")
# Clitics glued to the word before them: "do n't" -> "don't", "John 's" -> "John's".
_CLITICS = frozenset({"n't", "'s", "'re", "'ve", "'m", "'ll", "'d"})
# Escapes used by the tagged corpora.
_ESCAPES = {"&slash;": "/", "-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "``": '"', "''": '"'}
_WORDISH = re.compile(r"\w")
_ORDINALS = frozenset({"st", "nd", "rd", "th"})


def split_tagged(line: str) -> list[str]:
    """Return the words of one ``word/TAG word/TAG ...`` line, tags stripped.

    The tag is whatever follows the last ``/`` of a token, so ``and/or/CC`` gives ``and/or``;
    a token without ``/`` is kept whole.
    """
    return [token.rpartition("/")[0] or token for token in line.split()]


def _merge_tokens(tokens: Sequence[str]) -> list[str]:
    """Merge ``- -`` into ``--`` and runs of ``.`` into ``...``."""
    merged: list[str] = []
    for token in tokens:
        if merged and token == "-" and merged[-1] == "-":
            merged[-1] = "--"
        elif merged and token == "." and merged[-1] in (".", ".."):
            merged[-1] += "."
        else:
            merged.append(token)
    return merged


def _is_initial_or_abbrev(word: str) -> bool:
    return (len(word) == 1 and word.isalpha()) or word.lower() in ABBREVIATIONS


def _no_space_before(word: str, prev: str, before_prev: str) -> bool:
    """Say whether ``word`` hugs the token before it (quotes and hyphens are handled by the caller)."""
    if word in _ATTACH_LEFT or word.lower() in _CLITICS:
        return True
    if word == "'" and prev.endswith("s"):  # players ' -> players'
        return True
    if word.lower() in _ORDINALS and prev.isdigit():  # 10 th -> 10th
        return True
    # U . S -> U.S (an initial after an initial and its dot)
    return prev == "." and len(word) == 1 and word.isalpha() and len(before_prev) == 1 and before_prev.isalpha()


def detokenize(tokens: Iterable[str]) -> str:
    """Join tokens with spaces, except where English orthography puts none.

    Rules: no space before ``, . ; : ! ? % ) ]``, clitics (``n't``, ``'s``, ``'re``...) and
    ordinal suffixes after digits (``10 th``); no space after ``( [ $ #``; straight double quotes
    alternate open/close (PTB double backticks and double apostrophes become ``"``); a lone
    ``'`` after a word ending in ``s`` is a possessive; a single ``-`` between two words is a
    hyphen (``18 - month`` -> ``18-month``) while ``- -`` is a dash (`` -- ``); dotted
    initials are rebuilt (``U . S .`` -> ``U.S.``); ``1 . 5`` and ``1 , 000`` become ``1.5``
    and ``1,000``; ``&slash;`` becomes ``/`` glued on both sides.

    Args:
        tokens: words and punctuation, in order.

    Returns:
        One string without leading or trailing space.
    """
    words = _merge_tokens(list(tokens))
    out: list[str] = []
    glue_next = False
    quote_open = False
    for i, raw in enumerate(words):
        word = _ESCAPES.get(raw, raw)
        prev = words[i - 1] if i else ""
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if word == '"':
            opening = raw == "``" or (raw == '"' and not quote_open)
            no_space, quote_open = not opening, opening
            glue_after = opening
        elif raw in ("&slash;", "-") and _WORDISH.match(prev) and _WORDISH.match(nxt):
            no_space = glue_after = True  # and&slash;or, 18 - month
        elif (raw == "." or (raw == "," and len(nxt) == 3)) and prev.isdigit() and nxt.isdigit():
            no_space = glue_after = True  # 1 . 5 -> 1.5, 1 , 000 -> 1,000
        else:
            no_space = _no_space_before(word, prev, words[i - 2] if i > 1 else "")
            glue_after = word in _ATTACH_RIGHT
        if out and not (no_space or glue_next):
            out.append(" ")
        out.append(word)
        glue_next = glue_after
    return "".join(out).strip()


_CLOSERS = frozenset({".", ")", "]", "!", "?", "..."})


def _continues(sentence: list[str], tokens: list[str]) -> bool:
    """Say whether the token line ``tokens`` continues ``sentence`` rather than starting anew."""
    if all(t in _CLOSERS or (t == '"' and sentence.count('"') % 2) for t in tokens):
        return True  # a closing bracket, quote or the rest of an ellipsis
    if len(sentence) < 2 or sentence[-1] != ".":
        return False
    if _is_initial_or_abbrev(sentence[-2]):
        return True  # the U . / S . / Senate
    return sentence[-2].isdigit() and tokens[0][:1].isdigit()  # $ 1 . / 5 million


def join_fragments(lines: Iterable[list[str]]) -> list[list[str]]:
    """Re-join token lines that a tagger split at a non-final ``.``.

    The OANC file breaks a line at every ``.``, so ``the U.S. Senate`` arrives as ``the U .`` /
    ``S .`` / ``Senate ...`` and ``$1.5`` as ``$ 1 .`` / ``5 ...``. A line is appended to the one
    before when that one ends in an initial or known abbreviation plus ``.``, or in a number plus
    ``.`` and the line starts with a digit, or when the line holds only closing punctuation
    (``. ) ] ! ?``, or ``"`` closing an odd quote). A line that starts with ``"`` while the line
    before holds an odd number of quotes gives that quote back to it. A lone ``"`` line that
    closes nothing is carried to the start of the next line.

    Args:
        lines: token lists, one per input line; empty lists are skipped.

    Returns:
        Token lists, one per reconstructed sentence.
    """
    sentences: list[list[str]] = []
    carry: list[str] = []
    for tokens in lines:
        if not tokens:
            continue
        if sentences and not carry and _continues(sentences[-1], tokens):
            sentences[-1].extend(tokens)
        elif tokens == ['"']:
            carry = ['"']
        else:
            if not carry and tokens[0] == '"' and sentences and sentences[-1].count('"') % 2:
                sentences[-1].append('"')  # the previous sentence's closing quote
                tokens = tokens[1:]
            sentences.append(carry + list(tokens))
            carry = []
    return sentences
