"""Read, validate and verify ``guard.json`` (layout: ``lmsan.export.manifest``). Stdlib only.

Every field the runtime uses is checked for type and range, with a ``DataError`` naming the file.
The manifest's ``digest`` (SHA-256 of its canonical JSON without that field) must match its
content, so an edited threshold or input list is an ``IntegrityError``; manifests written before
the digest existed load with a WARNING, unless the caller pins a digest (``expect_digest``).
Every file the manifest lists must exist in the guard directory and hash to the recorded SHA-256;
names are plain file names (no paths), so a manifest cannot point outside its directory. What
needs the graph or the tokenizer (input names, pad and mask ids in the vocabulary, ``K``) is
checked by ``check_graph`` and ``check_vocab`` once those are open.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lmsan.errors import ConfigError, DataError, IntegrityError
from lmsan.files import json_digest, read_json, sha256_file
from lmsan.pvset import TARGETS
from lmsan.runtime.known import KnownSpan

log = logging.getLogger(__name__)

MANIFEST = "guard.json"
DIGEST = "digest"
GUARD_FORMAT = "lmsan.guard/1"
SCHEMA_VERSION = 1
SEQUENCE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # int64 [B, T]; token_type_ids optional
SCORE_OUTPUTS = ("match", "pv_index", "triggered")
PER_PV = "pv_match"  # float32 [B, K]: every PV's share (a calibrated guard needs it)
CALIBRATION = "calibration"  # guard.json: per-PV thresholds from clean inputs (lmsan.runtime.calibrate)
KNOWN_TRIGGERS = "known_triggers"  # guard.json: the mined PVs' confirmed trigger spans (lmsan.runtime.known)
TASK_INPUTS = ("prompt", "head_weight", "head_bias")  # float32; a shared task graph's task tensors
TASK_KINDS = ("sequence", "tokens")  # task.kind: one label per input / one label per word
TASK_MONITORS = ("bare", "task")  # task.monitor: the pass the PV monitor reads (lmsan.export.tasks.MONITORS)
MAX_LENGTH_LIMIT = 1 << 20  # tokens: far above any position table, low enough to catch garbage
_HEX64 = re.compile(r"[0-9a-f]{64}")


def check_digest_format(value: str) -> str:
    """Return a pinned digest in lower case; ``ConfigError`` unless it is 64 hex digits."""
    digest = str(value).strip().lower()
    if not _HEX64.fullmatch(digest):
        raise ConfigError(f"expected digest must be 64 hex digits (SHA-256), got {value!r}")
    return digest


@dataclass(frozen=True)
class GuardManifest:
    """The fields of ``guard.json`` the runtime uses (the full JSON stays in ``raw``).

    Attributes:
        directory: the guard directory.
        graph: path of the ONNX graph.
        tokenizer: path of ``tokenizer.json``.
        target: position the PVs live at (``cls``, ``token``, ``last``, ``mask``).
        threshold: default ``T_match`` in [0, 1).
        max_length: longest sequence (special tokens included) the model accepts.
        inputs: graph input names, ``threshold`` last.
        pad_id: padding token id. mask_token / mask_id: the mask token (``None`` if absent).
        pv_count: number of PVs ``K`` baked into the graph.
        labels: a task guard's label names (``task.labels``; the graph's ``logits`` [B, C], or a
            token task's [B, T, C], follow their order), or None for a bare-backbone guard.
        task: a task guard's ``task`` object (name, method, head position, ...), or None.
        pv_thresholds: float [K], each PV's own threshold from a calibration on clean inputs
            (``lmsan.runtime.calibrate``, ``guard.json`` ``calibration``), or None: every PV at
            ``T_match``. A PV flags an input when its share exceeds ``max(T_match, its threshold)``.
        known_triggers: the confirmed trigger spans of the PVs (``guard.json`` ``known_triggers``;
            empty for a guard exported before the field or from a PV set without them).
        digest: the manifest's own SHA-256 (``None`` for guards exported before it existed).
        raw: the parsed JSON.
    """

    directory: Path
    graph: Path
    tokenizer: Path
    target: str
    threshold: float
    max_length: int
    inputs: tuple[str, ...]
    pad_id: int
    mask_token: str | None
    mask_id: int | None
    pv_count: int
    digest: str | None
    raw: dict[str, Any]
    labels: tuple[str, ...] | None = None
    task: dict[str, Any] | None = None
    pv_thresholds: tuple[float, ...] | None = None
    known_triggers: tuple[KnownSpan, ...] = ()

    @property
    def path(self) -> Path:
        return self.directory / MANIFEST

    @property
    def token_task(self) -> bool:
        """Whether the guard answers a token task (``task.kind`` ``tokens``: a label per word)."""
        return self.task is not None and self.task.get("kind", "sequence") == "tokens"

    @property
    def monitor(self) -> str | None:
        """Which pass a task guard's monitor reads: ``bare`` (the backbone without the task's
        prompt, a second pass in the graph) or ``task`` (the task's own pass; also guards exported
        before the field existed); None for a bare-backbone guard."""
        return None if self.task is None else self.task.get("monitor", "task")

    @property
    def mask_in_input(self) -> bool:
        """Whether every input must hold the mask token: target ``mask`` on a bare backbone (a
        task graph builds its [MASK] into its template)."""
        return self.target == "mask" and self.task is None

    @classmethod
    def load(cls, directory: str | Path, *, verify: bool = True, expect_digest: str | None = None,
             task: str | None = None) -> "GuardManifest":
        """Parse and validate ``directory/guard.json``; check its digest and (by default) every
        listed file's SHA-256.

        Args:
            directory: the guard directory.
            verify: check every listed file's SHA-256.
            expect_digest: the manifest digest the caller deployed (64 hex digits): anything else,
                or a manifest without a digest, is refused.
            task: which task of a shared task guard to serve (its ``key``); default the first. A
                single-task guard accepts its own task's name or key only.

        Raises:
            DataError: no such directory, missing or malformed manifest (a field of the wrong type
                or out of range), missing listed file.
            IntegrityError: the digest does not match the manifest's content or ``expect_digest``;
                a file's SHA-256 differs from the manifest's.
            ConfigError: ``expect_digest`` is not 64 hex digits; ``task`` names no task of the guard.
        """
        pinned = None if expect_digest is None else check_digest_format(expect_digest)
        directory = Path(directory)
        if not directory.is_dir():
            raise DataError(f"guard directory not found: {directory}")
        path = directory / MANIFEST
        raw = read_json(path, schema_version=SCHEMA_VERSION)
        if raw.get("format") != GUARD_FORMAT:
            raise DataError(f"{path} is not an lmsan guard manifest (format {raw.get('format')!r})")
        digest = _check_digest(raw, path, pinned)
        field = _Fields(raw, path)
        files = field.get("files", dict)
        for name, value in files.items():
            _plain(name, path)
            if not isinstance(value, str) or not _HEX64.fullmatch(value):
                raise DataError(f"malformed {path}: files[{name!r}] must be a SHA-256 (64 lower-case hex digits), got {value!r}")
        tokenizer = _Fields(field.get("tokenizer", dict), path, "tokenizer.")
        target = field.get("target", str)
        if target not in TARGETS:
            raise DataError(f"malformed {path}: unknown target {target!r}; expected one of {', '.join(TARGETS)}")
        inputs = field.get("inputs", list)
        shared = raw.get("tasks") is not None
        tail = ["threshold", *TASK_INPUTS] if shared else ["threshold"]
        if (not all(isinstance(n, str) for n in inputs) or len(set(inputs)) != len(inputs)
                or inputs[-len(tail):] != tail or not {"input_ids", "attention_mask"} <= set(inputs)
                or not set(inputs) <= {*SEQUENCE_INPUTS, *tail}):
            raise DataError(f"malformed {path}: inputs must be distinct names from {', '.join(SEQUENCE_INPUTS)} "
                            f"(input_ids and attention_mask required), then {', '.join(map(repr, tail))}; "
                            f"got {inputs!r}")
        mask_token = tokenizer.get("mask_token", str, optional=True)
        mask_id = tokenizer.get("mask_id", int, optional=True, low=0)
        if target == "mask" and (mask_token is None or mask_id is None):
            raise DataError(f"malformed {path}: target 'mask' needs tokenizer.mask_token and tokenizer.mask_id")
        task, labels = _task(raw, path, task)
        pv_count = _Fields(field.get("pvs", dict), path, "pvs.").get("size", int, low=0)
        manifest = cls(
            directory=directory,
            graph=directory / _plain(field.get("graph", str), path),
            tokenizer=directory / _plain(tokenizer.get("file", str), path),
            target=target,
            threshold=field.get("threshold", float, low=0.0, below=1.0),
            max_length=field.get("max_length", int, low=2, high=MAX_LENGTH_LIMIT),
            inputs=tuple(inputs),
            pad_id=tokenizer.get("pad_id", int, low=0),
            mask_token=mask_token,
            mask_id=mask_id,
            pv_count=pv_count,
            digest=digest,
            raw=raw,
            labels=labels,
            task=task,
            pv_thresholds=_pv_thresholds(raw, path, pv_count),
            known_triggers=_known_triggers(raw, path, pv_count),
        )
        for needed in (manifest.graph.name, manifest.tokenizer.name, *(t["file"] for t in raw.get("tasks") or ())):
            if needed not in files:
                raise DataError(f"{path} lists no hash for {needed}")
        for name, value in files.items():
            file = directory / name
            if not file.is_file():
                raise DataError(f"guard file missing: {file}")
            if verify and sha256_file(file) != value:
                raise IntegrityError(f"SHA-256 of {file} does not match {MANIFEST}: the guard was modified")
        return manifest

    def check_graph(self, inputs: dict[str, str], outputs: list[str]) -> None:
        """Check the manifest against the opened graph.

        Args:
            inputs: the graph's input names and onnxruntime types (``tensor(int64)``, ...).
            outputs: the graph's output names.

        Raises:
            DataError: the graph's inputs differ from ``inputs``, have unexpected types, or the
                graph lacks a score output (or differs from the manifest's ``outputs``).
        """
        where = f"{self.graph.name} and {self.path}"
        if set(inputs) != set(self.inputs):
            raise DataError(f"{where} disagree on the graph inputs: graph {sorted(inputs)}, "
                            f"manifest {sorted(self.inputs)}")
        for name, kind in inputs.items():
            expected = "tensor(float)" if name == "threshold" or name in TASK_INPUTS else "tensor(int64)"
            if kind != expected:
                raise DataError(f"{self.graph}: input {name} is {kind}, expected {expected}")
        needed = SCORE_OUTPUTS + (("logits",) if self.task else ()) + ((PER_PV,) if self.pv_thresholds else ())
        missing = [name for name in needed if name not in outputs]
        listed = self.raw.get("outputs")
        if missing or (listed is not None and list(listed) != list(outputs)):
            raise DataError(f"{where} disagree on the graph outputs: graph {outputs}, manifest {listed} "
                            f"(needs {', '.join(needed)})")

    def check_scores(self, pv_index: int) -> None:
        """Check ``pvs.size`` against one ``pv_index`` the graph returned: -1 exactly when ``K = 0``,
        else in [0, K) (the graph's outputs show no more of its sign matrix).

        Raises:
            DataError: the graph and ``pvs.size`` disagree.
        """
        if (pv_index < 0) != (self.pv_count == 0) or pv_index >= self.pv_count or pv_index < -1:
            raise DataError(f"{self.graph.name} and {self.path} disagree on the number of PVs: the graph "
                            f"returned pv_index {pv_index}, the manifest says pvs.size {self.pv_count}")

    def check_vocab(self, vocab_size: int, token_to_id: Callable[[str], int | None], specials: int,
                    special_ids: frozenset[int] = frozenset()) -> None:
        """Check the token ids and the length against the guard's tokenizer.

        Args:
            vocab_size: the tokenizer's vocabulary size (added tokens included).
            token_to_id: the tokenizer's lookup (None for an unknown token).
            specials: special tokens the tokenizer adds to one text.
            special_ids: the ids of the tokenizer's special tokens ([CLS], [MASK], ...).

        Raises:
            DataError: ``pad_id``, ``mask_id`` or a known trigger's token id outside the
                vocabulary, a known trigger holding a special token, ``mask_token`` not
                ``mask_id``, or ``max_length`` leaves no room for a word.
        """
        for name, value in (("pad_id", self.pad_id), ("mask_id", self.mask_id)):
            if value is not None and not 0 <= value < vocab_size:
                raise DataError(f"{self.path}: tokenizer.{name} {value} is outside the tokenizer's vocabulary "
                                f"of {vocab_size}")
        for span in self.known_triggers:
            if max(span.token_ids) >= vocab_size:
                raise DataError(f"{self.path}: known trigger {span.text!r} has token id {max(span.token_ids)}, "
                                f"outside the tokenizer's vocabulary of {vocab_size}")
            if special_ids.intersection(span.token_ids):
                raise DataError(f"{self.path}: known trigger {span.text!r} holds a special token "
                                f"(id {min(special_ids.intersection(span.token_ids))}): text never does")
        if self.mask_token is not None and self.mask_id is not None and token_to_id(self.mask_token) != self.mask_id:
            raise DataError(f"{self.path}: tokenizer.mask_token {self.mask_token!r} is id "
                            f"{token_to_id(self.mask_token)} in {self.tokenizer.name}, not mask_id {self.mask_id}")
        if self.max_length <= specials + 1:
            raise DataError(f"{self.path}: max_length {self.max_length} leaves no room for text next to the "
                            f"tokenizer's {specials} special tokens")


class _Fields:
    """Typed, range-checked access to one JSON object of the manifest (errors name the file)."""

    def __init__(self, data: dict, path: Path, prefix: str = "") -> None:
        self.data, self.path, self.prefix = data, path, prefix

    def get(self, key: str, kind: type, *, optional: bool = False, low: float | None = None,
            high: float | None = None, below: float | None = None) -> Any:
        name = self.prefix + key
        if key not in self.data or (optional and self.data[key] is None):
            if optional:
                return None
            raise DataError(f"malformed {self.path}: missing field {name}")
        value = self.data[key]
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            value = float(value) if ok else value
        if kind is list:
            ok = ok and bool(value)
        if ok and ((low is not None and value < low) or (high is not None and value > high)
                   or (below is not None and value >= below)):
            ok = False
        if not ok:
            bounds = "".join([f" >= {low}" if low is not None else "", f" <= {high}" if high is not None else "",
                              f" < {below}" if below is not None else ""])
            expected = {float: "a finite number", int: "an integer", str: "a string", list: "a non-empty list",
                        dict: "an object"}[kind]
            raise DataError(f"malformed {self.path}: {name} must be {expected}{bounds}, got {value!r}")
        return value


def _task(raw: dict[str, Any], path: Path, wanted: str | None) -> tuple[dict[str, Any] | None, tuple[str, ...] | None]:
    """The validated task section to serve and its label names; (None, None) for a bare-backbone guard.

    A single-task guard has ``task``; a shared one ``tasks`` (a list, each with the ``key`` to
    select it by and the ``file`` of its tensors), of which ``wanted`` (default the first) is served.
    """
    if raw.get("tasks") is not None:
        sections = _Fields(raw, path).get("tasks", list)
        if not all(isinstance(t, dict) for t in sections):
            raise DataError(f"malformed {path}: tasks must be a list of objects")
        keys = [_Fields(t, path, f"tasks[{i}].").get("key", str) for i, t in enumerate(sections)]
        if len(set(keys)) != len(keys):
            raise DataError(f"malformed {path}: tasks have duplicate keys {keys}")
        if wanted is not None and wanted not in keys:
            raise ConfigError(f"task {wanted!r} is not in the guard {path.parent}; it serves {', '.join(keys)}")
        index = keys.index(wanted) if wanted is not None else 0
        task = sections[index]
        _plain(_Fields(task, path, f"tasks[{index}].").get("file", str), path)
        prefix = f"tasks[{index}]."
    elif raw.get("task") is not None:
        task = _Fields(raw, path).get("task", dict)
        prefix = "task."
        if wanted is not None and wanted not in (task.get("name"), task.get("key")):
            raise ConfigError(f"task {wanted!r} is not in the guard {path.parent}; it serves {task.get('name')!r}")
    else:
        if wanted is not None:
            raise ConfigError(f"the guard {path.parent} serves no task (exported without --task); drop task={wanted!r}")
        return None, None
    field = _Fields(task, path, prefix)
    labels = field.get("labels", list)
    if len(labels) < 2 or not all(isinstance(n, str) and n for n in labels) or len(set(labels)) != len(labels):
        raise DataError(f"malformed {path}: {prefix}labels must be at least 2 distinct non-empty names, got {labels!r}")
    field.get("name", str)
    field.get("reserved_tokens", int, low=0)
    kind = task.get("kind", "sequence")  # guards exported before token tasks have no kind
    if kind not in TASK_KINDS:
        raise DataError(f"malformed {path}: {prefix}kind must be one of {', '.join(TASK_KINDS)}, got {kind!r}")
    monitor = task.get("monitor", "task")  # guards exported before the bare monitor read the task's own pass
    if monitor not in TASK_MONITORS:
        raise DataError(f"malformed {path}: {prefix}monitor must be one of {', '.join(TASK_MONITORS)}, got {monitor!r}")
    if kind == "tokens" and (raw.get("target") != "token" or task.get("pairs")):
        raise DataError(f"malformed {path}: a token task reads single texts with its monitor at target 'token', "
                        f"got target {raw.get('target')!r}{' and pairs' if task.get('pairs') else ''}")
    return task, tuple(labels)


def _pv_thresholds(raw: dict[str, Any], path: Path, pv_count: int) -> tuple[float, ...] | None:
    """``calibration.pv_thresholds`` checked: K shares in [0, 1]; None for an uncalibrated guard."""
    if raw.get(CALIBRATION) is None:
        return None
    if pv_count == 0:
        raise DataError(f"malformed {path}: a guard with no PVs has nothing to calibrate, but it has {CALIBRATION}")
    values = _Fields(_Fields(raw, path).get(CALIBRATION, dict), path, f"{CALIBRATION}.").get("pv_thresholds", list)
    if len(values) != pv_count or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                           and 0.0 <= v <= 1.0 for v in values):
        raise DataError(f"malformed {path}: {CALIBRATION}.pv_thresholds must be {pv_count} shares in [0, 1] "
                        f"(one per PV), got {values!r}")
    return tuple(float(v) for v in values)


def _known_triggers(raw: dict[str, Any], path: Path, pv_count: int) -> tuple[KnownSpan, ...]:
    """``known_triggers`` checked: each an object with a PV index in [0, K), a text and at least
    one non-negative token id; () when absent."""
    entries = raw.get(KNOWN_TRIGGERS)
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise DataError(f"malformed {path}: {KNOWN_TRIGGERS} must be a list, got {entries!r}")
    spans = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DataError(f"malformed {path}: {KNOWN_TRIGGERS}[{number}] must be an object, got {entry!r}")
        field = _Fields(entry, path, f"{KNOWN_TRIGGERS}[{number}].")
        pv = field.get("pv", int, low=0, below=pv_count)
        text = field.get("text", str)
        ids = field.get("token_ids", list)
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise DataError(f"malformed {path}: {KNOWN_TRIGGERS}[{number}].token_ids must be non-negative "
                            f"integers, got {ids!r}")
        spans.append(KnownSpan(pv, text, tuple(ids)))
    return tuple(spans)


def _check_digest(raw: dict[str, Any], path: Path, pinned: str | None) -> str | None:
    """The manifest's digest after checking it against its content and the pinned one."""
    recorded = raw.get(DIGEST)
    if recorded is None:
        if pinned is not None:
            raise IntegrityError(f"{path} has no digest (exported before lmsan wrote one): it cannot match the "
                                 f"expected digest {pinned[:12]}…; re-export the guard")
        log.warning("%s has no digest (exported before lmsan wrote one): its threshold, inputs and other "
                    "fields are not protected; re-export the guard", path)
        return None
    try:
        actual = json_digest(raw, exclude=DIGEST)
    except (TypeError, ValueError) as exc:  # NaN or Infinity somewhere in the manifest
        raise DataError(f"{path}: cannot compute the manifest digest: {exc}") from exc
    if recorded != actual:
        raise IntegrityError(f"the digest in {path} does not match its content: the manifest was edited")
    if pinned is not None and actual != pinned:
        raise IntegrityError(f"{path} has digest {actual[:12]}…, not the expected {pinned[:12]}…: "
                             f"a different guard")
    return actual


def _plain(name: Any, path: Path) -> str:
    """Accept a bare file name only; reject paths that could leave the guard directory."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise DataError(f"{path} names a path, not a file name: {name!r}")
    return name
