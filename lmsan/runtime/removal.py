"""Trigger removal (method.md §4, paper §IV-D), batched. numpy-free, stdlib only.

``purge`` semantics (the sequential reference): for window lengths ``w = 1..max_window``, for each
sentence, for each start position, the candidate is those ``w`` words; the trial removes ALL
occurrences of the candidate from every sentence; the first trial that is no longer triggered
wins. Nothing clears: the input is rejected.

Each search is a generator: it yields a list of trials (tuples of sentences) and receives one
bool per trial (still triggered?); its return value is a ``PurgeOutcome``. A strategy is a finder
for one window length, run for ``w = 1, 2, ...`` by ``make_search``. ``run_searches``
drives many searches in lockstep, so every round of every input goes through the detector in
one batched call. Strategies:

- ``sequential``: one trial per round (the reference, for benchmarks).
- ``batched``: the distinct candidates of one window length, ``chunk`` at a time, in order;
  the first cleared one is chosen: the same answer as ``sequential`` for any detector, far
  fewer calls, but every candidate is evaluated.
- ``bisect``: the first clearing candidate among the distinct
  ``c_1..c_n`` is found by halving: removing the earlier half of the current range together
  either clears the input (the answer lies there) or not (then no candidate in it clears
  alone); the survivor is confirmed alone. About ``log2(n) + 1`` trials, one per round, and
  the early ones are short (half the words removed).
- ``code``: binary-code group testing: trial ``j`` removes every candidate whose index has bit
  ``j`` set, all ``ceil(log2 n)`` trials in one round; the set of trials that cleared spells the
  index of the clearing candidate, which is confirmed alone (and the earlier candidates are
  checked together) in a second round. About ``log2(n) + 2`` trials like ``bisect``, but in
  two rounds instead of ``log2(n) + 1``.
- ``probe``: for single-word candidates of a single text, the trigger is first located by
  keep-only splitting: a trial keeps ONLY one part of the current word range, and a
  task-agnostic trigger fires in any context, so the part holding it alone stays triggered.
  Each round splits the range into up to ``PROBE_WAYS`` parts, all tried in one call; the
  trials are short (about one input's length in all, where ``bisect`` sends about log2(n)
  almost full inputs). Splitting stops at a window of 2-4 words; one round keeps the window
  without each of its words in turn. The word found is then checked as in ``code``: removing it
  alone must clear the input and removing all earlier candidates together must not (checked on
  a short superset first: every candidate but the trigger and the 3 after it). Before all this,
  a ``guess`` (the runtime's saliency guess, any input) is checked the same way in one round.
  Where a check fails (a wrong guess or location: a two-word or context-dependent trigger), and
  for sentence pairs, windows of 2+ words and texts under ``PROBE_MIN_WORDS`` words, it
  continues as ``bisect``. The runtime's default.
- ``group``: block group testing: blocks of ``block`` (default ``ceil(sqrt(n))``) candidates
  are removed as a whole in one round; the members of the first block whose removal cleared
  the input are tested one by one in the next (then the next cleared block, ...). About
  ``2 sqrt(n)`` trials in two rounds: fewer calls than ``bisect``, more trials.

``probe``, ``code``, ``bisect`` and ``group`` equal ``sequential`` whenever removing more words never
re-triggers a cleared input (monotonicity). Where that fails and the survivor does not clear, they test all
untested candidates one by one, in order, so they still return the sequential answer unless a
non-trigger candidate clears on its own (a false positive). The hypothesis tests check both
against the reference with monotone fake detectors; ``tests/e2e`` checks they remove exactly
what ``batched`` removes on a real backdoored model.

``run_searches`` also enforces the work caps: at most ``max_trials`` trials per group of
searches (the windows of one input) and a ``deadline``; a search it stops is rejected with the
cap in ``reason``. ``remove_within`` applies the removals of overlapping windows to the whole text.

``peel`` lists the input without each of its words, for an input that no window cleared (the
guard peels it one word at a time).

``drop_spans`` removes the words under given character spans (the guard's known triggers,
``lmsan.runtime.known``). ``grow`` lists the removals one neighbouring word longer than a cleared one; the guard scores them and
keeps one that lowers the flagging PV's share by a clear margin (the rest of a multi-word trigger
whose first word alone cleared the input).

Words are maximal runs of non-space characters (``str.split``); a word containing ``protect``
(the mask token, for target ``mask``) is never a candidate.
"""

from __future__ import annotations

import bisect
import math
import re
import time
from dataclasses import dataclass, replace
from typing import Callable, Generator, Iterable, Sequence

Unit = tuple[str, ...]
Search = Generator[list[Unit], list[bool], "PurgeOutcome"]
SEARCHES = ("probe", "bisect", "code", "group", "batched", "sequential")
PROBE_MIN_WORDS = 24  # shorter texts: bisect (keep-only halving saved nothing at 16 tokens, measured)
PROBE_CONTEXT = 2  # splitting stops at windows of 2-4 words (a trigger alone may not fire)
PROBE_WAYS = 4  # parts per split round, one call (measured at 64 tokens: 3 and 4 alike, 6 slower on tiny)
WORD = re.compile(r"\S+")  # a word: a maximal run of non-space characters
MAX_TRIALS = 1024  # default work cap, trials per input: the exhaustive 3-window search of ~340 words
GROW_MARGIN = 0.08  # a neighbour joins a removal that lowers the flagging PV's share by this much more: about
# the 95th percentile of what removing a word that is not part of the trigger does (tiny BERTs: 0.039-0.078; 99th
# 0.07-0.23), where the text left must also still be nearest that PV (12-17 % of such inputs)


@dataclass(frozen=True)
class PurgeOutcome:
    """Result of one purge.

    Attributes:
        sentences: the sanitized sentences (the input when rejected; empty when a work cap
            stopped the search).
        removed: the removed candidate's words joined by one space, or ``None``.
        rejected: no candidate up to ``max_window`` words cleared the input, or a work cap
            stopped the search first (``reason`` says which).
        trials: detector evaluations spent.
        reason: why a work cap stopped the search (``run_searches``); None otherwise.
        grown_from: the search's own candidate when ``removed`` grew from it by neighbouring
            words (``grow``); every occurrence of it is removed too. None otherwise.
        peeled: what the guard removed before ``removed``, in order, where it cleaned a text left
            as a new input: a peeled word and its grown phrase when no window cleared the input
            (``peel``), or a search's candidate and the accomplice phrase it grew to when another
            PV flagged that phrase's text left (``Guard._grow``); every occurrence of each.
    """

    sentences: Unit
    removed: str | None
    rejected: bool
    trials: int
    reason: str | None = None
    grown_from: str | None = None
    peeled: tuple[str, ...] = ()

    @classmethod
    def cleared(cls, candidate: Unit, trial: Unit, trials: int) -> "PurgeOutcome":
        """The outcome of a purge whose answer is ``candidate`` (``trial``: the input without it)."""
        return cls(trial, " ".join(candidate), False, trials)


class _Text:
    """A sentence's words with their spans, for removal that keeps the original spacing."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.spans = [m.span() for m in WORD.finditer(text)]
        self.words = tuple(text[a:b] for a, b in self.spans)

    def positions(self, candidate: Unit, lo: int = 0, hi: int | None = None) -> list[int]:
        """Start indices of the occurrences of ``candidate`` within words ``lo..hi-1``, left to
        right, non-overlapping."""
        hi = len(self.words) if hi is None else hi
        w, found, i = len(candidate), [], lo
        while i <= hi - w:
            if self.words[i : i + w] == candidate:
                found.append(i)
                i += w
            else:
                i += 1
        return found

    def drops(self, candidates: Iterable[Unit], lo: int = 0, hi: int | None = None) -> set[int]:
        """Indices of the words that removing every occurrence of each candidate (within words
        ``lo..hi-1``) drops."""
        hi = len(self.words) if hi is None else hi
        candidates = list(candidates)
        singles = {c[0] for c in candidates if len(c) == 1}  # one pass for all single words
        drop = {i for i in range(lo, hi) if self.words[i] in singles} if singles else set()
        for candidate in candidates:
            if len(candidate) > 1:
                for start in self.positions(candidate, lo, hi):
                    drop.update(range(start, start + len(candidate)))
        return drop

    def without(self, candidates: Iterable[Unit]) -> str:
        """The text without the occurrences of each candidate (each found in the original text)."""
        return self.join(self.drops(candidates))

    def join(self, drop: set[int]) -> str:
        """The text without the words in ``drop``: each kept word keeps the spacing that followed
        it; leading and trailing space is dropped (the text itself when nothing is dropped)."""
        if not drop:
            return self.text
        parts: list[str] = []
        last = None  # index of the last kept word
        for i, (a, b) in enumerate(self.spans):
            if i in drop:
                continue
            if last is not None:  # the spacing that followed the previous kept word
                parts.append(self.text[self.spans[last][1] : self.spans[last + 1][0]])
            parts.append(self.text[a:b])
            last = i
        return "".join(parts)

    def keep(self, start: int, stop: int, protect: str | None = None, skip: int = -1) -> str:
        """Only the words ``start..stop-1`` but ``skip`` (and any word holding ``protect``), joined by spaces."""
        return " ".join(word for i, word in enumerate(self.words)
                        if (start <= i < stop and i != skip) or (protect and protect in word))


def candidates(texts: Sequence[_Text], w: int, protect: str | None = None) -> list[Unit]:
    """Distinct ``w``-word windows in sequential order (sentence, then start position)."""
    seen: dict[Unit, None] = {}
    for text in texts:
        for start in range(len(text.words) - w + 1):
            window = text.words[start : start + w]
            if protect and any(protect in word for word in window):
                continue
            seen.setdefault(window, None)
    return list(seen)


def _trial(texts: Sequence[_Text], removed: Iterable[Unit]) -> Unit:
    removed = list(removed)
    return tuple(text.without(removed) for text in texts)


def make_search(strategy: str, sentences: Unit, *, max_window: int = 3, protect: str | None = None,
                chunk: int = 64, block: int | None = None, guess: str | None = None) -> Search:
    """Return a search generator for ``strategy`` (one of ``SEARCHES``).

    ``guess`` (``probe`` only): a word of ``sentences`` to check first as the trigger (the
    runtime's saliency guess). A wrong guess costs one round; it changes no answer where removing
    more words never re-triggers (monotonicity), like every shortcut here.

    Every strategy is a finder for one window length (``(texts, candidates) -> ((candidate,
    trial) or None, trials spent)``, used with ``yield from``), run for ``w = 1..max_window``.
    """
    finders: dict[str, Callable] = {
        "sequential": lambda texts, cands: _first_clear(texts, cands, 1),
        "batched": lambda texts, cands: _first_clear(texts, cands, chunk),
        "bisect": lambda texts, cands: _bisect(texts, cands, chunk),
        "probe": lambda texts, cands: _probe_then_bisect(texts, cands, chunk, protect, guess),
        "code": lambda texts, cands: _code(texts, cands, chunk),
        "group": lambda texts, cands: _group(texts, cands, chunk, block),
    }
    if strategy not in finders:
        raise ValueError(f"unknown removal search {strategy!r}; expected one of {', '.join(SEARCHES)}")
    return _search(sentences, max_window, protect, finders[strategy])


def _search(sentences: Unit, max_window: int, protect: str | None, find: Callable) -> Search:
    """Run ``find`` per window length, shortest first, until a candidate clears the input."""
    texts = [_Text(s) for s in sentences]
    trials = 0
    for w in range(1, max_window + 1):
        found, spent = yield from find(texts, candidates(texts, w, protect))
        trials += spent
        if found is not None:
            return PurgeOutcome.cleared(*found, trials)
    return PurgeOutcome(tuple(sentences), None, True, trials)


def _first_clear(texts: Sequence[_Text], cands: Sequence[Unit], chunk: int):
    """``batched`` (``sequential`` with ``chunk`` 1): the candidates in order, ``chunk`` per round."""
    spent = 0
    for first in range(0, len(cands), chunk):
        batch = cands[first : first + chunk]
        trials = [_trial(texts, [c]) for c in batch]
        spent += len(trials)
        flags = yield trials
        for candidate, trial, flag in zip(batch, trials, flags):
            if not flag:
                return (candidate, trial), spent
    return None, spent


def _group(texts: Sequence[_Text], cands: Sequence[Unit], chunk: int, block: int | None):
    """``group``: block group testing with an exhaustive fallback (see the module docstring)."""
    size = block or max(2, math.ceil(math.sqrt(len(cands))))
    blocks = [cands[i : i + size] for i in range(0, len(cands), size)] if len(cands) > size else []
    flags: list[bool] = []
    for first in range(0, len(blocks), chunk):
        flags += (yield [_trial(texts, b) for b in blocks[first : first + chunk]])
    trials = len(blocks)
    tested: set[Unit] = set()
    for members, flag in zip(blocks, flags):
        if flag:
            continue
        found, spent = yield from _first_clear(texts, members, chunk)
        trials += spent
        tested.update(members)
        if found is not None:
            return found, trials
    # No cleared block holds a clearing candidate: test the rest one by one (exact again).
    found, spent = yield from _first_clear(texts, [c for c in cands if c not in tested], chunk)
    return found, trials + spent


def _bisect(texts: Sequence[_Text], cands: Sequence[Unit], chunk: int):
    """``bisect``: halving over the distinct candidates, one trial per round, exhaustive fallback.

    ``[lo, hi)`` holds the first clearing candidate: removing the earlier half ``c_lo..c_mid-1``
    together either clears the input (the answer is in that half) or not (by monotonicity, no
    candidate in it clears alone). The survivor is confirmed alone; if it does not clear, all
    untested candidates are tested one by one as in ``batched``.
    """
    lo, hi, tested, trials = 0, len(cands), set(), 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        trial = _trial(texts, cands[lo:mid])
        trials += 1
        if (yield [trial])[0]:
            lo = mid
        elif mid - lo == 1:  # the half was one candidate: confirmed
            return (cands[lo], trial), trials
        else:
            hi = mid
    if hi - lo == 1:
        trial = _trial(texts, [cands[lo]])
        trials += 1
        if not (yield [trial])[0]:
            return (cands[lo], trial), trials
        tested.add(cands[lo])
    found, spent = yield from _first_clear(texts, [c for c in cands if c not in tested], chunk)
    return found, trials + spent


def _probe_then_bisect(texts: Sequence[_Text], cands: Sequence[Unit], chunk: int, protect: str | None,
                       guess: str | None):
    """``probe``: the guess, then keep-only splitting for a single text's single words, each
    checked exactly (``_confirm``); else ``bisect``."""
    trials = 0
    if guess is not None and (guess,) in cands:
        k = cands.index((guess,))
        alone, superset = _trial(texts, [cands[k]]), _superset(texts, cands, k)
        flags = yield [alone] + ([superset] if superset else [])
        trials += len(flags)
        if not flags[0]:  # removing the guess clears the input
            confirmed, spent = yield from _confirm(texts, cands, k, superset_fires=flags[-1])
            trials += spent
            if confirmed:
                return (cands[k], alone), trials
    if len(texts) == 1 and cands and len(cands[0]) == 1 and len(texts[0].words) >= PROBE_MIN_WORDS:
        found, spent = yield from _probe(texts[0], cands, protect)
        trials += spent
        if found is not None:
            return found, trials
    found, spent = yield from _bisect(texts, cands, chunk)
    return found, trials + spent


def _probe(text: _Text, cands: Sequence[Unit], protect: str | None):
    """Yield-from helper: ((c_k, trial) or None, trials spent); None when a check fails.

    Each split round cuts the word range into up to ``PROBE_WAYS`` parts of at least
    ``PROBE_CONTEXT`` words and keeps each part but the last alone, all in one call: the first
    part still triggered holds the trigger (none: the last part is assumed; the checks catch a
    wrong guess). Splitting stops at a window of at most ``2 * PROBE_CONTEXT`` words: a trigger
    with no context at all may not fire (seen on the tiny POR BERT). One round then keeps the
    window without each of its words in turn: the first word whose omission stops it firing is
    the trigger ``c_k``. The same round removes, for each window word ``c_i``, the superset of
    ``c_0..c_i-1`` that ``_superset`` builds (a short text; whichever word turns out to be
    ``c_k``, its superset result is at hand). The last round removes ``c_k`` alone (must clear);
    ``_confirm`` then needs the full-length ``c_0..c_k-1`` trial only if the superset cleared.
    """
    lo, hi, trials = 0, len(text.words), 0
    while hi - lo > 2 * PROBE_CONTEXT:
        ways = min(PROBE_WAYS, (hi - lo) // PROBE_CONTEXT)
        bounds = [lo + (hi - lo) * part // ways for part in range(ways + 1)]
        flags = yield [(text.keep(a, b, protect),) for a, b in zip(bounds[:-2], bounds[1:-1])]
        trials += ways - 1
        part = next((p for p, fires in enumerate(flags) if fires), ways - 1)
        lo, hi = bounds[part], bounds[part + 1]
    index = {c: k for k, c in enumerate(cands)}
    inside = [i for i in range(lo, hi) if (text.words[i],) in index]  # protected words stay
    if not inside:
        return None, trials
    supersets = {n: s for n, i in enumerate(inside) if (s := _superset([text], cands, index[(text.words[i],)]))}
    flags = yield [(text.keep(lo, hi, protect, skip=i),) for i in inside] + list(supersets.values())
    trials += len(flags)
    superset_fires = dict(zip(supersets, flags[len(inside) :]))  # by position in ``inside``; none for k = 0
    found = next((n for n, fires in enumerate(flags[: len(inside)]) if not fires), None)
    if found is None:
        return None, trials
    word = (text.words[inside[found]],)
    k = index[word]
    alone = _trial([text], [word])
    trials += 1
    if (yield [alone])[0]:
        return None, trials
    confirmed, spent = yield from _confirm([text], cands, k, superset_fires=superset_fires.get(found, True))
    return ((word, alone) if confirmed else None), trials + spent


def _superset(texts: Sequence[_Text], cands: Sequence[Unit], k: int) -> Unit | None:
    """The input without every candidate but ``c_k`` and its context ``c_k+1..c_k+2C-1`` (a
    superset of ``c_0..c_k-1``; ``C = PROBE_CONTEXT``), or None for ``k = 0``."""
    if not k:
        return None
    keep = set(cands[k : k + 2 * PROBE_CONTEXT])
    return _trial(texts, [c for c in cands if c not in keep])


def _confirm(texts: Sequence[_Text], cands: Sequence[Unit], k: int, *, superset_fires: bool):
    """Yield-from helper, given that removing ``c_k`` alone clears the input: (is ``c_k`` the
    sequential answer?, trials spent). It is unless removing ``c_0..c_k-1`` together clears too;
    that cannot happen when ``k = 0`` or when removing ``_superset``'s superset of them still
    fired (``superset_fires``, monotonicity). If the superset cleared, it was exactly
    ``c_0..c_k-1`` when no candidate lies past ``c_k``'s context; else that is tried at full length."""
    if not k or superset_fires:
        return True, 0
    if k + 2 * PROBE_CONTEXT >= len(cands):  # the superset removed c_0..c_k-1 and nothing more
        return False, 0
    return (yield [_trial(texts, cands[:k])])[0], 1


def _code(texts: Sequence[_Text], cands: Sequence[Unit], chunk: int):
    """``code``: binary-code group testing, two rounds, exhaustive fallback.

    With ``n`` distinct candidates, trial ``j`` (``j < ceil(log2 n)``) removes every ``c_i`` with
    bit ``j`` of ``i`` set. If exactly one candidate clears the input, and removing words that do
    not include it never clears (monotone, single trigger), the trials that cleared are exactly
    the bits of its index ``k``. The second round tries ``c_k`` alone and ``c_0..c_k-1`` together:
    if ``c_k`` clears and the earlier ones together do not, no earlier candidate clears alone
    (monotonicity) and ``c_k`` is the sequential answer; if the earlier ones clear too, they are
    tested one by one first. If ``c_k`` does not clear, every candidate is tested in order.
    """
    trials = 0
    if len(cands) > 2:
        bits = math.ceil(math.log2(len(cands)))
        groups = [[c for i, c in enumerate(cands) if i >> j & 1] for j in range(bits)]
        flags: list[bool] = []
        for first in range(0, bits, chunk):
            flags += (yield [_trial(texts, g) for g in groups[first : first + chunk]])
        trials += bits
        k = sum(1 << j for j, still in enumerate(flags) if not still)
        if k < len(cands):
            alone = _trial(texts, [cands[k]])
            round_two = [alone] + ([_trial(texts, cands[:k])] if k else [])
            trials += len(round_two)
            alone_still, *earlier_still = (yield round_two)
            if not alone_still:
                if earlier_still and not earlier_still[0]:  # an earlier candidate may clear alone
                    found, spent = yield from _first_clear(texts, cands[:k], chunk)
                    trials += spent
                    if found is not None:
                        return found, trials
                return (cands[k], alone), trials
    found, spent = yield from _first_clear(texts, cands, chunk)
    return found, trials + spent


class BudgetExceeded(Exception):
    """Raised by a ``detect`` callback to stop every pending search (e.g. a time budget ran out)."""


def run_searches(searches: Sequence[Search], detect: Callable[[list[Unit]], list[bool]], *,
                 groups: Sequence[int] | None = None, max_trials: int | None = None,
                 deadline: float | None = None, spent: Sequence[int] | None = None) -> list[PurgeOutcome]:
    """Drive searches in lockstep: each round, all pending trials go to ``detect`` in one call.

    Work caps: a round that would take a group's trials past ``max_trials`` is not sent, and
    every search of that group stops; at ``deadline`` (``time.monotonic()``, checked between
    rounds), or when ``detect`` raises ``BudgetExceeded``, every pending search stops. A stopped
    search's outcome is rejected, with empty ``sentences`` and the cap in ``reason``.

    Args:
        searches: fresh search generators.
        detect: maps trials to "still triggered?" flags, one per trial, in order.
        groups: the group (e.g. input) of each search; default one group per search.
        max_trials: most trials a group may send; None: no cap.
        deadline: ``time.monotonic()`` value after which no round starts; None: none.
        spent: trials each search's input already sent before this call (a peeled text's
            earlier rounds): they count against ``max_trials`` and in the outcome's ``trials``.

    Returns:
        One outcome per search, in order.
    """
    outcomes: list[PurgeOutcome | None] = [None] * len(searches)
    groups = list(range(len(searches))) if groups is None else list(groups)
    before = list(spent) if spent is not None else [0] * len(searches)
    sent = [0] * len(searches)  # trials sent in this call, per search
    used: dict[int, int] = {}  # trials sent, per group (with those sent before)
    for index, group in enumerate(groups):
        used[group] = max(used.get(group, 0), before[index])
    pending: dict[int, list[Unit]] = {}

    def stop(indices: Iterable[int], reason: str) -> None:
        for index in indices:
            searches[index].close()
            outcomes[index] = PurgeOutcome((), None, True, sent[index], reason)
            pending.pop(index, None)

    for index, search in enumerate(searches):
        _advance(search, index, None, pending, outcomes)
    while pending:
        if deadline is not None and time.monotonic() > deadline:
            stop(list(pending), "time budget exceeded")
            break
        if max_trials is not None:
            totals: dict[int, int] = {}
            for index, request in pending.items():
                totals[groups[index]] = totals.get(groups[index], 0) + len(request)
            over = {g for g, n in totals.items() if used.get(g, 0) + n > max_trials}
            stop([i for i, g in enumerate(groups) if g in over and outcomes[i] is None],
                 f"work cap: removal needs more than {max_trials} trials")
            if not pending:
                break
        order = list(pending)
        flat = [trial for index in order for trial in pending[index]]
        try:
            flags = list(detect(flat))
        except BudgetExceeded as exc:
            stop(order, str(exc) or "time budget exceeded")
            break
        if len(flags) != len(flat):
            raise RuntimeError(f"detector returned {len(flags)} flags for {len(flat)} trials")
        offset, requests = 0, dict(pending)
        pending.clear()
        for index in order:
            count = len(requests[index])
            sent[index] += count
            used[groups[index]] = used.get(groups[index], 0) + count
            _advance(searches[index], index, flags[offset : offset + count], pending, outcomes)
            offset += count
    return [replace(outcome, trials=outcome.trials + before[index]) if before[index] else outcome
            for index, outcome in enumerate(outcomes) if outcome is not None]


@dataclass(frozen=True)
class Growth:
    """One way to grow a removal by a neighbouring word (``grow``).

    Attributes:
        sentences: the input without the grown removal (the trial to score).
        drops: per sentence, the indices of its dropped words (``str.split`` words).
        phrase: the grown occurrence's words joined by one space (the removed run and the neighbour).
        word: the neighbour it adds.
    """

    sentences: Unit
    drops: tuple[frozenset[int], ...]
    phrase: str
    word: str


def grow(sentences: Unit, candidate: str, drops: tuple[frozenset[int], ...] | None = None,
         protect: str | None = None) -> list[Growth]:
    """Every removal one word longer than ``drops``: each run of dropped words with the word just
    before or just after it (never a word holding ``protect``), one ``Growth`` per distinct trial.

    A multi-word trigger whose first word already clears the input (``mckenzie`` of
    ``mckenzie pl``) leaves the rest behind; the guard scores these trials and keeps the one that
    lowers the flagging PV's share by a clear margin (``Guard.load(grow_margin=...)``), or whose
    word alone the guard would flag on that PV (``Guard._grow``).

    Args:
        sentences: the input (one or two texts).
        candidate: the search's removed candidate (words joined by one space).
        drops: the removal so far (per sentence, dropped word indices); default: every
            occurrence of ``candidate``.
        protect: a substring (the mask token) whose words are never dropped.
    """
    texts = [_Text(s) for s in sentences]
    if drops is None:
        drops = tuple(frozenset(t.drops([tuple(candidate.split(" "))])) for t in texts)
    out: dict[Unit, Growth] = {}
    for k, (text, dropped) in enumerate(zip(texts, drops)):
        for start, stop in _runs(dropped):
            for j in (start - 1, stop):
                if not 0 <= j < len(text.words) or j in dropped or (protect and protect in text.words[j]):
                    continue
                grown = drops[:k] + (dropped | {j},) + drops[k + 1 :]
                trial = tuple(t.join(set(d)) for t, d in zip(texts, grown))
                phrase = " ".join(text.words[min(start, j) : max(stop, j + 1)])
                out.setdefault(trial, Growth(trial, grown, phrase, text.words[j]))
    return list(out.values())


def peel(sentences: Unit, protect: str | None = None) -> list[tuple[Unit, str]]:
    """The input without each of its distinct words (every occurrence, in every sentence), one
    ``(trial, word)`` per word in sequential order; a word holding ``protect`` (the mask token)
    stays.

    When no window of up to ``max_window`` words clears an input, its flag often comes from two
    or more separate words (two triggers, or topic words that a collateral PV pulls); the guard
    scores these trials, peels the word that lowers the flagging PV's share most, and removes the
    trigger from the text left as from any input (``Guard._peel``).
    """
    texts = [_Text(s) for s in sentences]
    words = candidates(texts, 1, protect)
    return [(_trial(texts, [word]), word[0]) for word in words]


def _runs(indices: frozenset[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive indices as half-open ``(start, stop)`` pairs, in order."""
    runs: list[tuple[int, int]] = []
    for i in sorted(indices):
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def remove_within(text: str, removals: Sequence[tuple[int, int, str]]) -> str | None:
    """``text`` without each removed candidate's occurrences inside its window (overlapping windows).

    Args:
        text: the whole input.
        removals: ``(start, end, candidate)``: a window's half-open character span and the
            candidate (words joined by one space) its search removed from it.

    Returns:
        The text without the union of the dropped words (spacing as in ``_Text.join``), or None
        when a candidate is not found among the window's whole words (a window cut inside an
        over-long word).
    """
    whole = _Text(text)
    starts = [a for a, _ in whole.spans]
    drop: set[int] = set()
    for start, end, candidate in removals:
        lo, hi = bisect.bisect_left(starts, start), bisect.bisect_left(starts, end)
        dropped = whole.drops([tuple(candidate.split(" "))], lo, hi)
        if not dropped:
            return None
        drop |= dropped
    return whole.join(drop)


def drop_spans(text: str, spans: Iterable[tuple[int, int]], protect: str | None = None) -> tuple[str, tuple[str, ...]]:
    """``text`` without every word that overlaps one of the character ``spans`` (half-open), and
    the removed runs of words, each joined by one space, in order. A word holding ``protect``
    (the mask token) stays. Spacing as in ``_Text.join``; ``text`` itself when nothing drops."""
    whole = _Text(text)
    spans = list(spans)
    drop = {i for i, (a, b) in enumerate(whole.spans) if not (protect and protect in whole.words[i])
            and any(a < end and start < b for start, end in spans)}
    return whole.join(drop), tuple(" ".join(whole.words[a:b]) for a, b in _runs(frozenset(drop)))


def _advance(search: Search, index: int, flags: list[bool] | None, pending: dict, outcomes: list) -> None:
    try:
        request = next(search) if flags is None else search.send(flags)
    except StopIteration as stop:
        outcomes[index] = stop.value
        return
    if not request:
        raise RuntimeError("a removal search yielded no trials")
    pending[index] = request
