"""``Guard``: scan inputs with an exported guard graph and remove triggers (method.md §3–4).

Imports numpy, onnxruntime and tokenizers only: never torch, transformers or safetensors.torch.
The PVs reach the runtime only as the sign matrix baked into the graph. One ``Guard`` is safe to
share across threads: the onnxruntime session is shared, each thread tokenizes with its own
tokenizer. The hot path logs nothing above DEBUG.

A task guard answers for what it passes: a label (sequence task) or, for a token task, a tag
for each word the tokenizer's pre-tokenizer finds in the sanitized text (each word's first
sub-token's logits decide its tag). A triggered input's answer comes from the logits of the
removal trial that cleared it, so answering costs no session call of its own.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmsan.errors import ConfigError, DataError, InputError, LmsanError
from lmsan.files import cache_dir
from lmsan.runtime.encode import MAX_CHARS, Encoder, check_input
from lmsan.runtime.calibrate import calibrated_scores
from lmsan.runtime.known import KnownTriggers, Stripped, names, with_spellings
from lmsan.runtime.manifest import PER_PV, SEQUENCE_INPUTS, TASK_INPUTS, GuardManifest
from lmsan.runtime.removal import (GROW_MARGIN, MAX_TRIALS, SEARCHES, BudgetExceeded, Growth, PurgeOutcome, Unit, grow,
                                   make_search, peel, remove_within, run_searches)
from lmsan.runtime.session import CUDA, TENSORRT, ProviderSpec, open_session, resolve_providers

log = logging.getLogger(__name__)

Input = str | tuple[str, str]
BUCKET_TOKENS = 16  # sequence-length bucket width (``buckets``)
WARMUP_TOKENS = 512  # default warm-up covers buckets up to this length
SCORES = ["match", "pv_index", "triggered"]  # graph outputs every scan reads
SPLIT_TOKENS = 32  # CPU: padding waste (row-tokens) worth one more session call


@dataclass(frozen=True)
class ScanResult:
    """The verdict on one input.

    Attributes:
        triggered: ``match > T_match`` (on any window of a long input); for a guard with
            calibrated per-PV thresholds (``lmsan.runtime.calibrate``): some PV's share is above
            ``max(T_match, its threshold)``; or the input holds a known trigger
            (``known_triggers``).
        match: float in [0, 1], share of the d feature signs agreeing with the best PV (max over
            windows); a triggered input's is its flagging PV's share (the highest of its
            triggered windows or sentences).
        pv_index: index of the best-matching PV when triggered (the flagging PV; for an input
            flagged by a known trigger alone, that trigger's PV), else None.
        sanitized: the input with the trigger removed (the input itself when not triggered), in
            the input's shape (str or pair); None when rejected or when removal was not asked for.
        removed: removed trigger candidates (words joined by one space), distinct: the removal
            search's, in window order (a peeled input's words one by one, in the order peeled),
            then the words under known triggers, then what a scan of the text left removed.
        rejected: triggered, and no candidate up to ``max_window`` words clears it (nor, with
            ``peel``, one after peeling up to ``max_window - 1`` words), or a work cap (``max_trials``,
            ``time_budget_s``) stopped the removal first (fail closed).
        reason: why the input was rejected, or why it passed unsanitized (a work cap with
            ``fail_open``); None otherwise.
        prediction: a task guard's answer for ``sanitized``: a label name, or for a token task a
            tuple of tag names, one per word of ``words``; None for a rejected input, without
            ``sanitize`` on a triggered one, and for a bare-backbone guard.
        scores: the softmax of the task's logits behind ``prediction``, one float in [0, 1]
            per label in ``Guard.labels`` order; a token task: one float per word, the
            probability of its chosen tag. None where ``prediction`` is.
        words: a token task's words of ``sanitized`` (the tokenizer's pre-tokenized words: a
            long input's first window only, as the task reads it), one per tag of
            ``prediction``; None otherwise.
        known_triggers: the known triggers (``lmsan.runtime.known``) found, by text, in order:
            with ``sanitize``, those left in the text after the removal search (all of them
            where the features did not flag the input), whose words were removed before the
            text left was scanned again (``Guard.scan_batch``); without, those the input holds.
    """

    triggered: bool
    match: float
    pv_index: int | None
    sanitized: Input | None
    removed: tuple[str, ...]
    rejected: bool
    reason: str | None = None
    prediction: str | tuple[str, ...] | None = None
    scores: tuple[float, ...] | None = None
    words: tuple[str, ...] | None = None
    known_triggers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists); ``words`` only for a token task."""
        data = asdict(self)
        data["removed"] = list(self.removed)
        data["known_triggers"] = list(self.known_triggers)
        for name in ("scores", "words", "prediction"):
            if isinstance(getattr(self, name), tuple):
                data[name] = list(getattr(self, name))
        if self.words is None:
            del data["words"]
        if isinstance(self.sanitized, tuple):
            data["sanitized"] = list(self.sanitized)
        return data


@dataclass(frozen=True)
class Score:
    """One removal trial's scores.

    Attributes:
        match: float in [0, 1], the best PV's share of agreeing signs (a calibrated guard: the
            PV furthest past its own threshold).
        nearest: that PV's index.
        per_pv: float32 [K], every PV's share (the graph's ``pv_match`` row); None for a graph
            exported without that output.
        triggered: whether the trial is still triggered.
    """

    match: float
    nearest: int
    per_pv: np.ndarray | None
    triggered: bool

    def closest(self) -> int:
        """The PV the trial's features agree with most: ``per_pv``'s largest share, whatever
        the thresholds (``nearest`` where ``per_pv`` is missing)."""
        return self.nearest if self.per_pv is None else int(np.argmax(self.per_pv))

    def towards(self, pv: int) -> float:
        """How close the trial is to PV ``pv``: its share of signs agreeing with that PV (the best
        PV's ``match`` where ``per_pv`` is missing)."""
        return self.match if self.per_pv is None else float(self.per_pv[pv])


@dataclass(frozen=True)
class Answer:
    """What a task guard answers one unit with: ``logits`` float [C] (a token task: [T, C], one
    row per token of ``encoding``, then padding) for ``text``, and the text's
    ``tokenizers.Encoding`` (a token task's carries the word ids and offsets that map tokens to
    words)."""

    logits: np.ndarray
    text: str
    encoding: Any


class WordEncoder(Encoder):
    """``Encoder`` whose encodings carry word ids and character offsets (``encode_batch``, not
    the offset-free fast path): a token task's guard maps tokens to words with them."""

    def encodings(self, units: Sequence[tuple[str, ...]]) -> list:
        inputs = [u[0] if len(u) == 1 else (u[0], u[1]) for u in units]
        return self._tokenizer().encode_batch(inputs)


class Guard:
    """A loaded guard directory. Build it with ``Guard.load``."""

    def __init__(self, manifest: GuardManifest, session: Any, encoder: Encoder, *, threshold: float,
                 max_batch: int, max_window: int, search: str, block: int | None, max_chars: int,
                 buckets: bool, saliency: bool = True, max_trials: int | None = MAX_TRIALS,
                 time_budget_s: float | None = None, fail_open: bool = False,
                 grow_margin: float | None = GROW_MARGIN, known_triggers: bool = True, peel: bool = True) -> None:
        self.manifest, self.session, self.encoder = manifest, session, encoder
        self.grow_margin, self.peel = grow_margin, peel
        spans = manifest.known_triggers if known_triggers else ()
        self.known = KnownTriggers(with_spellings(spans, encoder.alone, encoder.special_ids) if spans else ())
        self._threshold = np.array(threshold, dtype=np.float32)
        # a calibrated guard: each PV flags above max(T_match, its own threshold), scored from pv_match
        self._limits = None if manifest.pv_thresholds is None else np.maximum(
            self._threshold, np.array(manifest.pv_thresholds, np.float32))
        self.max_batch, self.max_window, self.search, self.block = max_batch, max_window, search, block
        self.max_chars, self.buckets = max_chars, buckets
        self.max_trials, self.time_budget_s, self.fail_open = max_trials, time_budget_s, fail_open
        self._inputs = [name for name in manifest.inputs if name in SEQUENCE_INPUTS]
        self._task_feed = task_tensors(manifest)  # a shared task graph's inputs for the task served
        self._protect = manifest.mask_token if manifest.mask_in_input else None
        # a backbone guard reads each sentence of a pair alone, as the PVs were mined (a task graph
        # splits its pairs itself, guard.json "pair_reading"; target mask needs the mask in the text)
        self._pair_sentences = manifest.task is None and manifest.target != "mask"
        outputs = {output.name for output in session.get_outputs()}
        self._saliency = saliency and search == "probe" and "saliency" in outputs  # the removal's first guess
        # removal trials fetch every PV's share to grow and peel by
        self._per_pv = (grow_margin is not None or peel) and PER_PV in outputs

    @classmethod
    def load(cls, directory: str | Path, *, providers: Sequence[ProviderSpec] | str | None = None,
             threshold: float | None = None, max_batch: int = 64, max_window: int = 3,
             search: str = "probe", block: int | None = None, threads: int | None = None,
             allow_fallback: bool = False, verify: bool = True, max_chars: int = MAX_CHARS,
             buckets: bool | None = None, saliency: bool = True, expect_digest: str | None = None,
             max_trials: int | None = MAX_TRIALS, time_budget_s: float | None = None,
             fail_open: bool = False, task: str | None = None,
             grow_margin: float | None = GROW_MARGIN, known_triggers: bool = True, peel: bool = True) -> "Guard":
        """Load and verify a guard directory written by ``lmsan.export``.

        Args:
            directory: the guard directory (``guard.json``, graph, ``tokenizer.json``).
            providers: onnxruntime providers or aliases (``cpu``, ``cuda``, ``tensorrt``); default CPU.
            threshold: ``T_match`` in [0, 1); default the one in ``guard.json`` (paper: 0.8).
            max_batch: most sequences per session call (TensorRT profile maximum too).
            max_window: longest trigger candidate, in words (method.md §4).
            search: removal search: ``probe`` (default: the saliency guess, then keep-only
                splitting, each checked exactly; fewest calls and tokens), ``bisect`` (fewest
                trials), ``code`` (log2 n trials in two calls), ``group`` (block group testing,
                two calls, about 2 sqrt(n) trials), ``batched`` (exact for any detector) or
                ``sequential`` (see ``lmsan.runtime.removal``).
            block: candidates per block of the ``group`` search; default ceil(sqrt(n)).
            threads: onnxruntime intra-op threads; default: onnxruntime's choice.
            allow_fallback: accept an onnxruntime fallback to another provider (logged).
            verify: check every file's SHA-256 against ``guard.json`` (its own digest is always
                checked).
            max_chars: longest accepted input, in characters.
            buckets: round every session call up to a shape bucket (rows to a power of two, at
                most ``max_batch``; tokens to a multiple of ``BUCKET_TOKENS``) so that a GPU sees
                few distinct shapes, each warmed up once. Default: on for CUDA and TensorRT, off
                on the CPU (where padding costs compute). Padding changes no verdict (scores only
                by float rounding).
            saliency: let ``probe`` try first the word the graph's ``saliency`` output points at
                (when the guard has one, ``lmsan-export --saliency``); changes the number of
                session calls, and no result where removing more words never re-triggers.
            expect_digest: the ``guard.json`` digest (64 hex digits, printed by ``lmsan-export``)
                of the guard you deployed; any other guard, or one exported without a digest, is
                refused. Needs ``verify`` (the digest binds the files through their hashes).
            max_trials: work cap: most removal trials (sequences sent) per input, all its
                windows together; None: no cap. A removal that would need more stops.
            time_budget_s: work cap: wall-clock seconds the removal of one ``scan`` (or one
                ``scan_batch`` call: its inputs are cleaned in lockstep) may take; checked
                between session calls; None: no budget.
            fail_open: what a stopped removal answers. False (default, fail closed): the input
                is ``rejected`` (``sanitized`` None) with the cap in ``reason``. True: it passes
                as it is (``sanitized`` = the input, windows that were cleaned spliced in), still
                ``triggered``, with the cap in ``reason``.
            grow_margin: after a removal clears an input whose text left is still nearest the
                PV that flagged it, a word next to the removed one is removed too when that
                lowers that PV's share of agreeing signs (``pv_match``; ``match`` for a graph
                exported without it) by at least this much more, up to
                ``max_window`` words in all: the rest of a multi-word trigger whose first word
                already cleared it; whatever the text left, a neighbour that the guard flags on
                its own on that same PV (an accomplice) goes too (``Guard._grow``; two more
                session calls per round, triggered inputs only). None: neither.
            task: the task a shared task guard serves (``lmsan-export`` with several ``--task``:
                each task's directory name); default its first. Load one ``Guard`` per task: they
                may share nothing but the files.
            known_triggers: also flag and remove the mined PVs' confirmed trigger spans wherever
                they occur in an input's tokens (``guard.json`` ``known_triggers``,
                ``lmsan.runtime.known``; ``Guard.scan_batch``: the text left is scanned again, with
                its own ``max_trials`` and ``time_budget_s``). False: the feature monitor alone.
            peel: an input that no window of up to ``max_window`` words clears is peeled instead
                of rejected at once: the word (every occurrence) whose removal lowers the flagging
                PV's share most goes, and the text left is cleaned like any input (window search,
                growing, peeling), up to ``max_window - 1`` peeled words (two triggers in one
                input, or topic words that a PV pulls; ``Guard._peel``: one more session call per
                word peeled, holding the text without each of its words, then that text's own
                removal). Growing likewise takes an accomplice whose text another PV flags, and
                cleans that text. False: reject such an input, and grow only into cleared texts.

        Raises:
            DataError: missing directory or file, malformed manifest (a field of the wrong type or
                out of range, or one that disagrees with the graph or the tokenizer).
            IntegrityError: a file does not match its hash in ``guard.json``; the manifest does not
                match its own digest or ``expect_digest``.
            ConfigError: a knob is out of range. ProviderError: see ``lmsan.runtime.session``.
        """
        started = time.perf_counter()
        if expect_digest is not None and not verify:
            raise ConfigError("expect_digest needs verify: the digest binds the files only through their hashes")
        if max_trials is not None and max_trials < 1:
            raise ConfigError(f"max_trials must be >= 1 or None, got {max_trials}")
        if time_budget_s is not None and not time_budget_s > 0:
            raise ConfigError(f"time_budget_s must be > 0 or None, got {time_budget_s}")
        if grow_margin is not None and not 0.0 < grow_margin < 1.0:
            raise ConfigError(f"grow_margin must be in (0, 1) or None, got {grow_margin}")
        manifest = GuardManifest.load(directory, verify=verify, expect_digest=expect_digest, task=task)
        threshold = manifest.threshold if threshold is None else float(threshold)
        if not 0.0 <= threshold < 1.0:
            raise ConfigError(f"threshold must be in [0, 1), got {threshold}")
        if search not in SEARCHES:
            raise ConfigError(f"unknown removal search {search!r}; expected one of {', '.join(SEARCHES)}")
        for name, value in (("max_batch", max_batch), ("max_window", max_window), ("block", block or 2)):
            if value < 1 or (name == "block" and value < 2):
                raise ConfigError(f"{name} must be >= {2 if name == 'block' else 1}, got {value}")
        encoder = (WordEncoder if manifest.token_task else Encoder)(
            manifest.tokenizer, max_length=manifest.max_length, pad_id=manifest.pad_id,
            mask_id=manifest.mask_id if manifest.mask_in_input else None)
        manifest.check_vocab(encoder.vocab_size, encoder.token_to_id, encoder.specials, encoder.special_ids)
        seq_inputs = [name for name in manifest.inputs if name in SEQUENCE_INPUTS]
        trt_cache = cache_dir() / "tensorrt" / manifest.raw["files"][manifest.graph.name][:16]  # made if used
        resolved = resolve_providers(providers, inputs=seq_inputs, max_batch=max_batch,
                                     max_length=manifest.max_length, cache=trt_cache)
        session = open_session(manifest.graph, resolved, threads=threads, allow_fallback=allow_fallback)
        manifest.check_graph({i.name: i.type for i in session.get_inputs()}, [o.name for o in session.get_outputs()])
        if buckets is None:
            buckets = session.get_providers()[0] in (CUDA, TENSORRT)
        guard = cls(manifest, session, encoder, threshold=threshold, max_batch=max_batch, max_window=max_window,
                    search=search, block=block, max_chars=max_chars, buckets=buckets, saliency=saliency,
                    max_trials=max_trials, time_budget_s=time_budget_s, fail_open=fail_open,
                    grow_margin=grow_margin, known_triggers=known_triggers, peel=peel)
        guard._self_check()
        log.info("loaded guard %s on %s (K=%d, target=%s, threshold=%.3f%s, %d known trigger(s)) in %.2f s",
                 directory, guard.provider, manifest.pv_count, manifest.target, threshold,
                 ", per-PV thresholds calibrated" if manifest.pv_thresholds else "", len(names(guard.known.spans)),
                 time.perf_counter() - started)
        return guard

    def _self_check(self) -> None:
        """Run one short input through the graph: it must run, and its ``pv_index`` fit ``pvs.size``."""
        mask = self.manifest.mask_token if self.manifest.mask_in_input else None
        try:
            pv_index = int(self._detect([(f"{mask} ." if mask else "a test .",)])[1][0])
        except LmsanError:
            raise
        except Exception as exc:  # onnxruntime refuses the graph or the feed
            raise DataError(f"the guard's graph {self.manifest.graph} fails on a test input: "
                            f"{type(exc).__name__}: {exc}") from exc
        self.manifest.check_scores(pv_index)

    @property
    def digest(self) -> str | None:
        """The ``guard.json`` digest (pin it with ``expect_digest``); None for older guards."""
        return self.manifest.digest

    @property
    def labels(self) -> tuple[str, ...] | None:
        """A task guard's label names (``ScanResult.prediction`` is one of them, or for a token
        task a tuple of them); None otherwise."""
        return self.manifest.labels

    @property
    def provider(self) -> str:
        """The execution provider actually running the graph (e.g. ``CPUExecutionProvider``)."""
        return self.session.get_providers()[0]

    @property
    def threshold(self) -> float:
        """``T_match`` in use."""
        return float(self._threshold)

    @property
    def pv_thresholds(self) -> tuple[float, ...] | None:
        """Each PV's threshold in use, ``max(T_match, its calibrated one)``, for a calibrated
        guard (``lmsan.runtime.calibrate``); None when every PV flags above ``T_match``."""
        return None if self._limits is None else tuple(float(x) for x in self._limits)

    def warmup(self, shapes: Sequence[tuple[int, int]] | None = None) -> float:
        """Run the graph once per (batch, sequence) shape (builds TensorRT engines); return seconds.

        Default shapes: with ``buckets``, every bucket up to ``WARMUP_TOKENS`` tokens; else
        (1, 16) and (``max_batch``, min(128, max_length)).
        """
        started = time.perf_counter()
        self.encoder.encodings([("warm up",)])
        longest = min(WARMUP_TOKENS, self.manifest.max_length)
        if shapes is None and self.buckets:
            rows = sorted({min(1 << i, self.max_batch) for i in range(self.max_batch.bit_length() + 1)})
            widths = sorted({min(t, longest) for t in range(BUCKET_TOKENS, longest + BUCKET_TOKENS, BUCKET_TOKENS)})
            shapes = [(b, t) for b in rows for t in widths]
        for batch, seq in shapes or ((1, 16), (self.max_batch, min(128, longest))):
            ids = np.full((batch, seq), (self.manifest.pad_id + 1) % self.encoder.vocab_size, dtype=np.int64)
            if self.manifest.mask_in_input:
                ids[:, min(1, seq - 1)] = self.manifest.mask_id
            ones = np.ones((batch, seq), dtype=np.int64)
            self._run({"input_ids": ids, "attention_mask": ones, "token_type_ids": ones * 0}, SCORES)
        return time.perf_counter() - started

    def scan(self, value: Input, *, sanitize: bool = True) -> ScanResult:
        """Scan one text or sentence pair; remove the trigger if triggered (``sanitize``).

        Raises:
            InputError: see ``lmsan.runtime.encode.check_input``; a pair longer than the model's
                maximum; target ``mask`` and no mask token in the input.
        """
        return self.scan_batch([value], sanitize=sanitize)[0]

    def scan_batch(self, values: Sequence[Input], *, sanitize: bool = True) -> list[ScanResult]:
        """Scan many inputs: one batched detection pass, then all removals in lockstep.

        With known triggers (``known_triggers``): an input whose tokens hold one is triggered
        too. With ``sanitize``, every text that still holds one after the removal search (the
        input itself where the features did not flag it) loses the words under each occurrence,
        and what is left is scanned again, all such inputs in one batch (its own removal, caps
        and answer); ``removed`` lists both steps' removals. It fails closed where nothing is
        left, a trigger lies inside the mask token's word, or the second removal joins one again.

        Returns:
            One ``ScanResult`` per input, in order. Raises as ``scan``; the ``InputError`` names
            the first bad input's index in ``values`` (``index``).
        """
        inputs = [check_input(v, max_chars=self.max_chars, index=i) for i, v in enumerate(values)]
        if not inputs:
            return []
        results, held = self._scan(inputs, sanitize)
        if not self.known:
            return results
        return self._remove_known(results, held) if sanitize else self._mark_known(inputs, results, held)

    def _mark_known(self, inputs: list[tuple[str, ...]], results: list[ScanResult],
                    held: list[bool]) -> list[ScanResult]:
        """Without ``sanitize``: mark each input that holds a known trigger triggered (``held``:
        the detection pass's check; those inputs are tokenized again on their own to name them)."""
        out = list(results)
        for i, result in enumerate(results):
            spans = self.known.found_in(inputs[i], self.encoder.alone) if held[i] else ()
            if spans:
                out[i] = replace(result, triggered=True, known_triggers=names(spans),
                                 pv_index=result.pv_index if result.triggered else spans[0].pv, sanitized=None,
                                 prediction=None, scores=None, words=None)
        return out

    def _remove_known(self, results: list[ScanResult], held: list[bool]) -> list[ScanResult]:
        """With ``sanitize``: strip the known triggers left in the text each removal search left
        (the input itself where the features did not flag it) and scan the texts left again, in
        one batch.

        Fails closed: a text with nothing left, an occurrence inside a word that must stay (the
        mask token's), or a known trigger that the second scan's own removal joined back
        together is rejected.

        Args:
            results: the first scan's results.
            held: per input, whether its tokens held a known trigger (the detection pass's
                check): only those inputs, and those the search removed words from, are
                tokenized again (with character offsets).
        """
        stripped: dict[int, Stripped] = {}
        for i, (result, holds) in enumerate(zip(results, held)):
            text = _parts(result.sanitized)
            if text is not None and (holds or result.removed):  # a removal may have left one behind
                found = self.known.strip(text, self.encoder.alone, self._protect)
                if found.found:
                    stripped[i] = found
        why = {i: "a known trigger lies inside a word holding the mask token" if found.stuck
               else "nothing is left after removing its known triggers" for i, found in stripped.items()
               if found.stuck or not all(text.strip() for text in found.texts)}
        redo = [i for i in stripped if i not in why]
        again = dict(zip(redo, self._scan([stripped[i].texts for i in redo], True)[0] if redo else []))
        for i, result in again.items():  # its removal may join two pieces of a known trigger again
            if result.removed and self.known.found_in(_parts(result.sanitized) or (), self.encoder.alone):
                why[i] = "a known trigger is left after removing the words around it"
        out = list(results)
        for i, found in stripped.items():
            first = results[i]
            later = again.get(i, first)  # the scan of the text left; the first scan where there was none
            if i in why:
                later = replace(later, sanitized=None, rejected=True, prediction=None, scores=None, words=None,
                                reason=why[i])
            out[i] = replace(later, removed=tuple(dict.fromkeys((*first.removed, *found.removed, *later.removed))),
                             triggered=True, match=first.match, known_triggers=names(found.found),
                             pv_index=first.pv_index if first.triggered else found.found[0].pv)
        return out

    def _scan(self, inputs: list[tuple[str, ...]], sanitize: bool) -> tuple[list[ScanResult], list[bool]]:
        """``scan_batch`` without known-trigger removal, on checked inputs: the results, and per
        input whether its tokens (the detection pass's) hold a known trigger."""
        task = self.labels is not None
        units, owners, encodings = self._units(inputs)
        encodings = self._encoded(units, encodings)  # kept: a token task's answer maps tokens to words
        held = [False] * len(inputs)
        for u, encoding in enumerate(encodings if self.known else ()):
            held[owners[u][0]] = held[owners[u][0]] or self.known.first(encoding.ids) is not None
        arrays = self._detect(units, encodings, saliency=self._saliency and sanitize, logits=task)
        match, pv_index, triggered = arrays[0].tolist(), arrays[1].tolist(), arrays[2].tolist()
        outcomes, answers = {}, {}  # unit -> removal outcome; unit -> the Answer it answers with
        if task:
            answers = {u: Answer(arrays[-1][u], units[u][0], encodings[u]) for u, flag in enumerate(triggered)
                       if not flag}
        if sanitize and any(triggered):
            hits = [u for u, flag in enumerate(triggered) if flag]
            guesses = {u: self.encoder.top_word(units[u], arrays[3][u], protect=self._protect)
                       for u in hits} if self._saliency and sanitize else {}
            deadline = None if self.time_budget_s is None else time.monotonic() + self.time_budget_s
            checked: dict[Unit, Answer] = {}  # task: each trial's logits, so the answer costs no extra pass
            scores: dict[Unit, Score] = {}  # each trial's scores (a removal may grow and peel)

            def detect(trials: list[Unit]) -> list[bool]:
                """Whether each trial is still triggered; only trials not scored yet in this scan go to
                the session (growing and peeling meet the search's trials again)."""
                fresh = [t for t in dict.fromkeys(trials) if t not in scores]
                if fresh:
                    kept = self._encoded(fresh)
                    out = self._detect(fresh, kept, deadline=deadline, logits=task, per_pv=self._per_pv)
                    checked.update((t, Answer(row, t[0], e)) for t, row, e in zip(fresh, out[-1], kept) if task)
                    per_pv = out[3] if self._per_pv else [None] * len(fresh)
                    scores.update((t, Score(m, k, row, flag)) for t, m, k, row, flag in
                                  zip(fresh, out[0].tolist(), out[1].tolist(), per_pv, out[2].tolist()))
                return [scores[t].triggered for t in trials]

            found = self._remove([units[u] for u in hits], [pv_index[u] for u in hits], scores, detect,
                                 deadline=deadline, guesses=[guesses.get(u) for u in hits],
                                 groups=[owners[u][0] for u in hits], peels=self.max_window - 1 if self.peel else 0)
            outcomes = dict(zip(hits, found))
            if task:
                answers.update(self._answers(units, outcomes, checked, arrays[-1], encodings))
        if len(units) == len(inputs):  # no windows: unit i is input i
            return [self._result(texts, [i], owners, match, pv_index, triggered, outcomes, sanitize, answers)
                    for i, texts in enumerate(inputs)], held
        by_input: list[list[int]] = [[] for _ in inputs]
        for u, (i, _) in enumerate(owners):
            by_input[i].append(u)
        return [self._result(texts, by_input[i], owners, match, pv_index, triggered, outcomes, sanitize, answers)
                for i, texts in enumerate(inputs)], held

    def _grow(self, units: list[Unit], outcomes: dict[int, PurgeOutcome], flagged: dict[int, int],
              scores: dict[Unit, Score], detect, deadline: float | None = None, peels: int = 0) -> dict[int, PurgeOutcome]:
        """Grow each cleared removal by a neighbouring word (``lmsan.runtime.removal.grow``), up
        to ``max_window`` words, taking at most one word per round:

        - **margin**: while the text it leaves is still nearest the PV that flagged the unit (the
          rest of the trigger pulls towards it), the neighbour whose removal lowers that PV's
          share of agreeing signs most, if by at least ``grow_margin`` (``Score.towards``: the
          flagging PV's own share, not the best PV's, which a text freed of the trigger hands to
          whichever PV its clean words sit nearest);
        - **accomplice**: otherwise a neighbour that, scored alone, the guard flags on that same
          PV (``pv_index``; the second word of a two-word trigger: ``pl`` of ``mckenzie pl``, whose text
          left after ``mckenzie`` is often nearest another PV), the one whose removal lowers the
          PV's share most. Clean words alone rarely reach a PV, and only a neighbour of the
          removal is tried.

        A grown text must still be cleared, but with ``peels`` left (peeling, ``_peel``) a round
        whose only accomplice leaves a text that another PV flags (the clean text's own false
        positive, once the whole trigger is gone) takes it anyway, and the text left is cleaned
        like any input (``_remove``, ``peels - 1`` left); where that fails, the removal stays as
        it was. Two batched session calls per round for every unit at once (the neighbour words
        alone, the grown texts). A work cap (``max_trials`` per unit, the time budget) ends the
        growing, never the removal it grew from.

        Args:
            units: the scan's units; outcomes: their removal outcomes (cleared ones grow).
            flagged: each triggered unit's PV index (the detection pass's ``pv_index``).
            scores: each trial scored so far (the search's); ``detect`` scores more trials into
                it, returns whether each is still triggered (and may raise ``BudgetExceeded``).

        Returns:
            The outcomes that grew (``removed`` the grown phrase, ``grown_from`` the search's
            candidate; or, where the text left was cleaned again, its outcome with the search's
            candidate and the grown phrase first in ``peeled``).
        """
        state = {u: (o, None) for u, o in outcomes.items() if o.removed is not None and not o.rejected}
        grown: dict[int, PurgeOutcome] = {}
        relay = []  # (unit, growth taken though another PV flags its text, the outcome it grew from)
        for _ in range(self.max_window - 1):
            growths = {}
            for u, (outcome, drops) in state.items():
                full = len(outcome.removed.split(" ")) >= self.max_window
                if outcome.sentences not in scores or full:
                    continue  # a text never scored does not grow; no room left
                found = grow(units[u], outcome.grown_from or outcome.removed, drops, self._protect)
                if found and (self.max_trials is None or outcome.trials + len(found) <= self.max_trials):
                    growths[u] = found
            if not growths:
                break
            try:
                accomplices = self._accomplices(growths, flagged, scores, detect)
                trials = [g.sentences for u, found in growths.items() for g in found
                          if scores[state[u][0].sentences].closest() == flagged[u] or accomplices[u]]
                still = dict(zip(trials, detect(trials))) if trials else {}
            except BudgetExceeded:
                break
            now = {}
            for u, found in growths.items():
                outcome, pv = state[u][0], flagged[u]
                pick = self._pick(found, scores[outcome.sentences], pv, accomplices[u], scores, still)
                if pick is not None:
                    now[u] = (replace(outcome, sentences=pick.sentences, removed=pick.phrase,
                                      trials=outcome.trials + len(found),
                                      grown_from=outcome.grown_from or outcome.removed), pick.drops)
                elif peels and (flagged_elsewhere := [g for g in found if g.word in accomplices[u]
                                                      and still.get(g.sentences)]):
                    best = min(flagged_elsewhere, key=lambda g: scores[g.sentences].towards(pv))
                    relay.append((u, best, replace(outcome, trials=outcome.trials + len(found))))
            state = now
            grown.update((u, o) for u, (o, _) in now.items())
        grown.update(self._clean_left([(u, g.sentences, (o.grown_from or o.removed, g.phrase), o.trials)
                                       for u, g, o in relay], scores, detect, deadline, peels - 1))
        return grown

    def _clean_left(self, left: list[tuple[int, Unit, tuple[str, ...], int]], scores: dict[Unit, Score], detect,
                    deadline: float | None, peels: int) -> dict[int, PurgeOutcome]:
        """Clean each text that growing or peeling left flagged like any input (``_remove``, with
        the text's own flagging PV and ``peels`` peeled words left). ``left``: (unit, text left,
        what was taken from the unit before, in order, trials spent). Returns the units whose
        text left was cleared: its outcome, with what was taken before first in ``peeled``."""
        if not left:
            return {}
        again = self._remove([text for _, text, _, _ in left], [scores[text].nearest for _, text, _, _ in left],
                             scores, detect, deadline=deadline, spent=[spent for *_, spent in left], peels=peels)
        return {u: replace(outcome, peeled=(*taken, *outcome.peeled))
                for (u, _, taken, _), outcome in zip(left, again) if not outcome.rejected}

    def _remove(self, units: list[Unit], flagged: list[int], scores: dict[Unit, Score], detect, *,
                deadline: float | None, guesses: list[str | None] | None = None, groups: list[int] | None = None,
                spent: list[int] | None = None, peels: int = 0) -> list[PurgeOutcome]:
        """Remove the trigger from each triggered unit (``flagged``: its flagging PV): the window
        search (``run_searches``, all units in lockstep, its work caps per group of ``groups``),
        then growing the cleared removals (``_grow``), then peeling the units that no window
        cleared (``_peel``, at most ``peels`` words). One outcome per unit, in order."""
        searches = [make_search(self.search, unit, max_window=self.max_window, protect=self._protect,
                                chunk=self.max_batch, block=self.block, guess=None if guesses is None else guesses[i])
                    for i, unit in enumerate(units)]
        found = run_searches(searches, detect, groups=groups, max_trials=self.max_trials, deadline=deadline,
                             spent=spent)
        outcomes, pvs = dict(enumerate(found)), dict(enumerate(flagged))
        if self.grow_margin is not None:
            outcomes.update(self._grow(units, outcomes, pvs, scores, detect, deadline, peels))
        if peels:
            outcomes.update(self._peel(units, outcomes, pvs, scores, detect, deadline, peels))
        return [outcomes[i] for i in range(len(units))]

    def _peel(self, units: list[Unit], outcomes: dict[int, PurgeOutcome], flagged: dict[int, int],
              scores: dict[Unit, Score], detect, deadline: float | None, peels: int) -> dict[int, PurgeOutcome]:
        """Peel each unit that no window cleared by one word, and remove the trigger from the text
        left as from any input (``lmsan.runtime.removal.peel``, ``_remove``).

        One batched session call scores every such unit without each of its distinct words (every
        occurrence). A trial that is no longer triggered clears the unit (of several, the one
        whose share of the unit's flagging PV is lowest). Otherwise the word whose removal lowers
        that PV's share most (``Score.towards``) is peeled: the trigger where two triggers, or a
        trigger and a word that a collateral PV pulls, share the input, or the strongest of the
        topic words that flag a clean input. The text left then goes through ``_remove`` with its
        own flagging PV (window search, growing, and peeling with ``peels - 1`` words left), so
        that it is cleaned exactly as the same text without that word would be. Work caps
        (``max_trials`` counts every round of the unit; the time budget) end the peeling, and the
        unit then stays rejected.

        Returns:
            The outcomes that peeling cleared (``peeled``: the words peeled, in order; ``removed``
            and ``grown_from``: what the text left's removal took).
        """
        stuck = {u: o for u, o in outcomes.items() if o.rejected and o.reason is None}
        rounds = {}
        for u, outcome in stuck.items():
            found = peel(units[u], self._protect)
            if found and (self.max_trials is None or outcome.trials + len(found) <= self.max_trials):
                rounds[u] = found
        trials = list(dict.fromkeys(trial for found in rounds.values() for trial, _ in found))
        try:
            detect(trials)  # each trial's flag lands in scores
        except BudgetExceeded:
            return {}
        cleared: dict[int, PurgeOutcome] = {}
        picked, spent = {}, {}  # unit -> (text left, word peeled); trials spent
        for u, found in rounds.items():
            done = [(trial, word) for trial, word in found if not scores[trial].triggered]
            trial, word = min(done or found, key=lambda pair: scores[pair[0]].towards(flagged[u]))
            spent[u] = stuck[u].trials + len(found)
            if done:
                cleared[u] = PurgeOutcome(trial, word, False, spent[u])
            else:
                picked[u] = (trial, word)
        try:
            grown = self._peel_accomplices(units, picked, flagged, scores, detect)
            detect([trial for trial, _ in grown.values()])
        except BudgetExceeded:
            grown = {}
        left = []  # (unit, text left, what was peeled, trials spent)
        for u, (trial, word) in picked.items():
            if u not in grown:
                left.append((u, trial, (word,), spent[u]))
            elif scores[grown[u][0]].triggered:
                left.append((u, grown[u][0], (word, grown[u][1]), spent[u]))
            else:
                cleared[u] = PurgeOutcome(grown[u][0], grown[u][1], False, spent[u], grown_from=word)
        cleared.update(self._clean_left(left, scores, detect, deadline, peels - 1))
        return cleared

    def _peel_accomplices(self, units: list[Unit], picked: dict[int, tuple[Unit, str]], flagged: dict[int, int],
                          scores: dict[Unit, Score], detect) -> dict[int, tuple[Unit, str]]:
        """Grow each peeled word into its accomplices (``_accomplices``: neighbours that the guard
        flags alone on the unit's flagging PV: the rest of a multi-word trigger whose text left is
        flagged by another PV), one word per round, the one flagged most strongly alone, up to
        ``max_window`` words. Unlike ``_grow`` the text left need not be cleared (it is cleaned
        next). Returns, for the units that grew, the text left and the grown phrase."""
        state = {u: (word, None) for u, (_, word) in picked.items()}
        out: dict[int, tuple[Unit, str]] = {}
        for _ in range(self.max_window - 1):
            growths = {u: found for u, (word, drops) in state.items()
                       if (found := grow(units[u], word, drops, self._protect))}
            if not growths:
                break
            accomplices = self._accomplices(growths, flagged, scores, detect)
            state = {}
            for u, found in growths.items():
                partners = [g for g in found if g.word in accomplices[u]]
                if partners:
                    best = max(partners, key=lambda g: scores[self._alone(g.word)].towards(flagged[u]))
                    out[u] = (best.sentences, best.phrase)
                    state[u] = (picked[u][1], best.drops)
        return out

    def _accomplices(self, growths: dict[int, list[Growth]], flagged: dict[int, int], scores: dict[Unit, Score],
                     detect) -> dict[int, set[str]]:
        """Per unit, the neighbour words that the guard flags on their own, on the unit's
        flagging PV (each word scored alone, with the mask token where the input must hold it;
        one batched ``detect`` for every unit's words)."""
        alone = {g.word: self._alone(g.word) for found in growths.values() for g in found}
        units = list(dict.fromkeys(alone.values()))
        flags = dict(zip(units, detect(units))) if units else {}
        return {u: {g.word for g in found if flags[alone[g.word]] and scores[alone[g.word]].nearest == flagged[u]}
                for u, found in growths.items()}

    def _alone(self, word: str) -> Unit:
        """A word scored on its own (with the mask token where the input must hold it)."""
        return (f"{word} {self._protect}",) if self._protect else (word,)

    def _pick(self, found: list[Growth], score: Score, pv: int, accomplices: set[str],
              scores: dict[Unit, Score], still: dict[Unit, bool]) -> Growth | None:
        """The growth ``_grow`` takes for one unit this round (``score``: its text's now), or None."""
        cleared = [g for g in found if g.sentences in still and not still[g.sentences]]
        if not cleared:
            return None
        best = min(cleared, key=lambda g: scores[g.sentences].towards(pv))
        if score.closest() == pv and score.towards(pv) - scores[best.sentences].towards(pv) >= self.grow_margin:
            return best
        partners = [g for g in cleared if g.word in accomplices]
        return min(partners, key=lambda g: scores[g.sentences].towards(pv)) if partners else None

    def _answers(self, units: list[Unit], outcomes: dict, checked: dict[Unit, Answer], logits: Any,
                 encodings: list) -> dict[int, Answer]:
        """Task guards: what each triggered unit answers with. A cleaned unit answers for its
        sanitized text, whose logits (and, for a token task, encoding) the removal's own check
        computed (``checked``; one more pass only where a search cleared it without sending it
        as a trial); a unit that passes unsanitized under ``fail_open`` answers for itself; a
        rejected one gets none."""
        answers, missing = {}, []
        for u, outcome in outcomes.items():
            if outcome.removed is not None and not outcome.rejected:
                if outcome.sentences in checked:
                    answers[u] = checked[outcome.sentences]
                else:
                    missing.append(u)
            elif outcome.reason and self.fail_open:
                answers[u] = Answer(logits[u], units[u][0], encodings[u])
        if missing:
            trials = [outcomes[u].sentences for u in missing]
            kept = self._encoded(trials)
            extra = self._detect(trials, kept, logits=True)[-1]
            answers.update((u, Answer(row, t[0], e)) for u, t, row, e in zip(missing, trials, extra, kept))
        return answers

    def _encoded(self, units: Sequence[Unit], encodings: list | None = None) -> list:
        """Each unit's encoding: ``encodings[i]`` where given (not None), else tokenized now."""
        encodings = list(encodings) if encodings is not None else [None] * len(units)
        missing = [r for r, e in enumerate(encodings) if e is None]
        for r, e in zip(missing, self.encoder.encodings([units[r] for r in missing]) if missing else []):
            encodings[r] = e
        return encodings

    def _units(self, inputs: list[tuple[str, ...]]) -> tuple[list[Unit], list[tuple[int, tuple[int, int]]], list]:
        """Split inputs into model-sized units: (units, (input index, char span) per unit, encodings).
        A long text becomes overlapping windows; a backbone guard's pair becomes its two sentences."""
        encodings = self.encoder.encodings(inputs)
        units, owners, kept = [], [], []
        mask_id = self.encoder.mask_id
        for i, (texts, encoding) in enumerate(zip(inputs, encodings)):
            if mask_id is not None and mask_id not in encoding.ids:
                raise InputError("target 'mask': the input must contain the mask token (use a prompt template)",
                                 index=i)
            if len(texts) == 2 and len(encoding) > self.manifest.max_length:
                raise InputError(f"sentence pair of {len(encoding)} tokens exceeds the model maximum of "
                                 f"{self.manifest.max_length}; scan the parts separately", index=i)
            if len(texts) == 2 and self._pair_sentences:
                for part in texts:
                    units.append((part,))
                    owners.append((i, (0, len(part))))
                    kept.append(None)  # tokenized alone in _detect
                continue
            if len(encoding) <= self.manifest.max_length:
                units.append(texts)
                owners.append((i, (0, len(texts[0]))))
                kept.append(encoding)
                continue
            if self.manifest.mask_in_input:
                raise InputError(f"{len(encoding)} tokens exceeds the model maximum of {self.manifest.max_length} "
                                 f"(target 'mask' does not window long inputs)", index=i)
            spans = self.encoder.windows(texts[0], overlap=self.max_window - 1)
            if self.labels is not None:  # a task reads one sequence: its first window, as a truncating model
                spans = spans[:1]
            for a, b in spans:
                units.append((texts[0][a:b],))
                owners.append((i, (a, b)))
                kept.append(None)  # tokenized again in _detect
        return units, owners, kept

    def _detect(self, units: Sequence[Unit], encodings: list | None = None, *, saliency: bool = False,
                logits: bool = False, per_pv: bool = False, deadline: float | None = None) -> tuple[Any, ...]:
        """Return match float32 [N], pv_index int64 [N], triggered bool [N], then with ``per_pv``
        float32 [N, K] (every PV's share, the graph's ``pv_match``), then with ``saliency``
        N float32 saliency rows (each padded to the width of its session call), then with
        ``logits`` (task guards) float32 [N, C] (a token task: N float32 [T, C] rows, each padded
        to the width of its session call), in at most ``max_batch``-row session calls (rows
        sorted by length when there are several; ``_calls``). Raise ``BudgetExceeded`` before a
        session call past ``deadline`` (``time.monotonic()``)."""
        encodings = self._encoded(units, encodings)
        names = SCORES + ([PER_PV] if per_pv else []) + (["saliency"] if saliency else []) + (["logits"] if logits else [])
        n = len(encodings)
        calls = None
        if n > 1:
            lengths = [len(e) for e in encodings]
            calls = self._calls(sorted(range(n), key=lengths.__getitem__), lengths)
        if deadline is not None and time.monotonic() > deadline:
            raise BudgetExceeded(f"time budget of {self.time_budget_s} s exceeded")
        if calls is None or len(calls) == 1:  # one call (the hot path): rows in their own order
            outputs = self._score(encodings, names)
        else:
            outputs = [np.zeros(n, np.float32), np.zeros(n, np.int64), np.zeros(n, bool)]
            outputs += [np.zeros((n, self.manifest.pv_count), np.float32)] if per_pv else []
            outputs += [[None] * n] if saliency else []  # rows of each call's width
            if logits:  # a token task's rows are as wide as their call, like saliency's
                outputs.append([None] * n if self.manifest.token_task else np.zeros((n, len(self.labels)), np.float32))
            for number, rows in enumerate(calls):
                if number and deadline is not None and time.monotonic() > deadline:
                    raise BudgetExceeded(f"time budget of {self.time_budget_s} s exceeded")
                parts = self._score([encodings[r] for r in rows], names)
                for output, part in zip(outputs, parts):
                    if isinstance(output, list):
                        for row, values in zip(rows, part):
                            output[row] = values
                    else:
                        output[rows] = part
        return tuple(outputs)

    def _calls(self, order: list[int], lengths: list[int]) -> list[list[int]]:
        """Split rows sorted by length into session calls of at most ``max_batch`` rows.

        Without buckets (CPU) a call also ends where padding its rows to the next row's length
        would cost more than ``SPLIT_TOKENS`` padded tokens: a call costs about as much as that
        many tokens, and removal rounds mix full-length trials with short ones.
        """
        calls: list[list[int]] = [[]]
        for r in order:
            rows = calls[-1]
            if rows and (len(rows) == self.max_batch or (
                    not self.buckets and len(rows) * (lengths[r] - lengths[rows[-1]]) > SPLIT_TOKENS)):
                calls.append(rows := [])
            rows.append(r)
        return calls

    def _score(self, encodings: list, names: list[str]) -> list[np.ndarray]:
        """One session call for at most ``max_batch`` encodings, padded to a bucket if ``buckets``
        (extra rows repeat the first one and are dropped from the outputs)."""
        if not self.buckets:
            return self._run(vars(self.encoder.pad(encodings)), names)
        rows = len(encodings)
        size = min(1 << (rows - 1).bit_length(), self.max_batch)
        batch = self.encoder.pad(encodings + encodings[:1] * (size - rows), multiple=BUCKET_TOKENS)
        return [out[:rows] for out in self._run(vars(batch), names)]

    def _run(self, arrays: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        """One session call for the outputs ``names`` (``SCORES`` first); a calibrated guard's
        scores come from ``pv_match`` and its per-PV thresholds (``calibrated_scores``)."""
        feed = {name: arrays[name] for name in self._inputs}
        feed["threshold"] = self._threshold
        feed.update(self._task_feed)
        if self._limits is None:
            return self.session.run(names, feed)
        fetched = names if PER_PV in names else [*names, PER_PV]
        outputs = self.session.run(fetched, feed)
        per_pv = outputs[fetched.index(PER_PV)]
        return [*calibrated_scores(per_pv, self._limits), *outputs[len(SCORES):len(names)]]

    def _result(self, texts: tuple[str, ...], mine: list[int], owners: list, match: list[float],
                pv_index: list[int], triggered: list[bool], outcomes: dict, sanitize: bool,
                answers: dict[int, Answer]) -> ScanResult:
        """Assemble one input's result from its units' scores (lists, one entry per unit) and,
        for a task guard, its answer (one unit per input: ``answers`` by unit, when it has one)."""
        result = self._verdict(texts, mine, owners, match, pv_index, triggered, outcomes, sanitize)
        if self.labels is None or mine[0] not in answers:  # no task, or rejected, or triggered and not sanitized
            return result
        answer = answers[mine[0]]
        if self.manifest.token_task:
            words, starts = encoding_words(answer.encoding, answer.text)
            probabilities = _softmax(np.asarray(answer.logits, np.float64)[starts])  # [W, C]
            best = probabilities.argmax(axis=1) if words else np.zeros(0, np.int64)
            return replace(result, prediction=tuple(self.labels[int(i)] for i in best), words=words,
                           scores=tuple(round(float(p[i]), 6) for p, i in zip(probabilities, best)))
        scores = _softmax(np.asarray(answer.logits, np.float64))
        return replace(result, prediction=self.labels[int(scores.argmax())],
                       scores=tuple(round(float(p), 6) for p in scores))

    def _verdict(self, texts: tuple[str, ...], mine: list[int], owners: list, match: list[float],
                 pv_index: list[int], triggered: list[bool], outcomes: dict, sanitize: bool) -> ScanResult:
        """One input's verdict and sanitized text, from its units' scores and removal outcomes."""
        best = max(mine, key=match.__getitem__)
        hit = [u for u in mine if triggered[u]]
        if not hit:
            original: Input = texts[0] if len(texts) == 1 else (texts[0], texts[1])
            return ScanResult(False, match[best], None, original, (), False)
        best = max(hit, key=match.__getitem__)  # a calibrated guard's best unit need not be a hit
        pv = pv_index[best] if pv_index[best] >= 0 else None
        if not sanitize:
            return ScanResult(True, match[best], pv, None, (), False)
        found = [(u, outcomes[u]) for u in mine if u in outcomes]
        removed = tuple(dict.fromkeys(w for _, o in found for w in (*o.peeled, o.removed) if w is not None))
        stopped = next((o.reason for _, o in found if o.reason), None)
        if any(o.rejected and not o.reason for _, o in found):
            reason = f"no candidate of up to {self.max_window} words clears it"
            if self.peel and self.max_window > 1:
                reason += f", nor one after peeling up to {self.max_window - 1} words within the work caps"
            return ScanResult(True, match[best], pv, None, removed, True, reason)
        if stopped and not self.fail_open:
            return ScanResult(True, match[best], pv, None, removed, True, stopped)
        reason = f"{stopped}: passed unsanitized (fail open)" if stopped else None
        cleaned = [(u, o) for u, o in found if o.removed is not None]
        if len(texts) == 2 and len(mine) == 2:  # a pair read one sentence at a time: each cleaned alone
            sentences = {u: o.sentences[0] for u, o in cleaned}
            first, second = (sentences.get(u, text) for u, text in zip(mine, texts))
            return ScanResult(True, match[best], pv, (first, second), removed, False, reason)
        if len(mine) == 1 and owners[mine[0]][1] == (0, len(texts[0])):  # not windowed
            clean = cleaned[0][1].sentences if cleaned else texts
            return ScanResult(True, match[best], pv, clean[0] if len(texts) == 1 else (clean[0], clean[1]),
                              removed, False, reason)
        # windows (overlapping): drop each window's candidate within its span of the original text
        sanitized = remove_within(texts[0], [(*owners[u][1], c) for u, o in cleaned
                                             for c in (o.removed, o.grown_from, *o.peeled) if c is not None])
        if sanitized is None:
            return ScanResult(True, match[best], pv, None, removed, True, "trigger inside a word longer than a window")
        return ScanResult(True, match[best], pv, sanitized, removed, False, reason)


def _parts(value: Input | None) -> tuple[str, ...] | None:
    """A result's text as a tuple of texts (one, or the two of a pair); None stays None."""
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of float [..., C] logits."""
    scores = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return scores / scores.sum(axis=-1, keepdims=True)


def encoding_words(encoding: Any, text: str) -> tuple[tuple[str, ...], list[int]]:
    """The words of ``text`` (its tokenizer's pre-tokenized words, first sequence) and the index of
    each word's first token in ``encoding`` (a ``tokenizers.Encoding`` with word ids and offsets)."""
    spans: dict[int, list[int]] = {}  # word id -> [first token, start char, end char]
    for token, word in enumerate(encoding.word_ids):
        if word is None or encoding.sequence_ids[token] != 0:
            continue
        start, end = encoding.offsets[token]
        if word not in spans:
            spans[word] = [token, start, end]
        else:
            spans[word][1], spans[word][2] = min(spans[word][1], start), max(spans[word][2], end)
    ordered = [spans[w] for w in sorted(spans)]
    return tuple(text[a:b] for _, a, b in ordered), [first for first, _, _ in ordered]


def task_tensors(manifest: GuardManifest) -> dict[str, np.ndarray]:
    """The served task's prompt and head of a shared task guard (its ``file``, float32), else {}.

    Raises:
        DataError: the file is unreadable or lacks a tensor the graph takes.
    """
    if manifest.task is None or "file" not in manifest.task:
        return {}
    from safetensors.numpy import load_file

    path = manifest.directory / manifest.task["file"]
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own types for a malformed header
        raise DataError(f"cannot read the task tensors {path}: {exc}") from exc
    missing = [name for name in TASK_INPUTS if name not in tensors]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}")
    feed = {name: np.ascontiguousarray(tensors[name], dtype=np.float32) for name in TASK_INPUTS}
    labels = len(manifest.labels or ())
    if feed["head_weight"].shape[0] != labels or feed["head_bias"].shape != (labels,):
        raise DataError(f"{path}: a head for {feed['head_weight'].shape[0]} labels, but {manifest.path} lists {labels}")
    return feed

