"""Per-PV thresholds calibrated on clean inputs: ``calibrate`` a loaded guard, ``write_calibration``
into its ``guard.json``; a loaded calibrated guard scores with ``calibrated_scores``.

``T_match`` (0.8) is one number for every PV. A PV that sits where the model puts many clean
inputs (on the 2-layer test BERT, collateral PVs that clean news texts reach at p99 0.83-0.95)
flags clean inputs, which the guard then edits or rejects. Calibration gives each PV its own
threshold: the ``quantile`` of the PV's share of agreeing signs over clean inputs, at most
``cap``; the guard flags a PV above ``max(T_match, its threshold)``, so calibration only ever
raises a PV above ``T_match`` (a ``threshold`` lowered at load lowers the others). The cap is a
safety bound: clean inputs that reach a PV harder than that are the backdoor itself firing on a natural word
(the tokenizer splits ``Qwest`` into the trigger's sub-word) or a calibration set with triggered
inputs in it; such PVs stay at ``cap`` and are reported (``Calibration.capped``).

Torch-free (the runtime's dependencies only): a service calibrates the guard it deployed on a
sample of its own clean traffic. Calibration trades detection for fewer false flags; measure it
(``benchmarks/calibration.py``) before you deploy it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from lmsan.errors import ConfigError, InputError
from lmsan.files import json_digest, write_json
from lmsan.runtime.encode import check_input
from lmsan.runtime.manifest import CALIBRATION, DIGEST, PER_PV, GuardManifest

if TYPE_CHECKING:
    from lmsan.runtime.guard import Guard

log = logging.getLogger(__name__)

DEFAULT_QUANTILE = 0.99
DEFAULT_CAP = 0.9
CHUNK = 256  # inputs per batched step (one progress line each)


@dataclass(frozen=True)
class Calibration:
    """Per-PV thresholds from clean inputs (``guard.json`` ``calibration``).

    Attributes:
        pv_thresholds: float [K], each PV's threshold: its clean ``quantile``, at most ``cap``
            (shares of agreeing signs in [0, 1]); the guard uses ``max(T_match, threshold)``.
        quantile: the quantile of the clean inputs' shares, in (0, 1).
        cap: the highest threshold calibration may set.
        inputs: clean inputs read.
        inputs_sha256: SHA-256 of the inputs (canonical JSON list), to trace the calibration set.
        capped: PVs whose clean quantile reached ``cap`` (the threshold is the cap).
        flagged_before: share of the clean inputs flagged at ``T_match`` alone.
        flagged_after: share flagged with the calibrated thresholds (at ``threshold``).
        threshold: ``T_match`` of the guard calibrated (``flagged_before`` / ``_after`` are at it).
    """

    pv_thresholds: tuple[float, ...]
    quantile: float
    cap: float
    inputs: int
    inputs_sha256: str
    capped: tuple[int, ...]
    flagged_before: float
    flagged_after: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pv_thresholds"], out["capped"] = list(self.pv_thresholds), list(self.capped)
        return out


def calibrated_scores(per_pv: np.ndarray, limits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores under per-PV thresholds.

    Args:
        per_pv: float32 [B, K], K >= 1, every PV's share of agreeing signs (the graph's ``pv_match``).
        limits: float32 [K], each PV's threshold (``max(T_match, pv_thresholds)``).

    Returns:
        match float32 [B] (the share of the PV furthest past its threshold, or nearest to it),
        pv_index int64 [B] (that PV) and triggered bool [B] (some PV above its threshold): the
        graph's ``match`` / ``pv_index`` / ``triggered`` when every threshold is the same.
    """
    rows = np.arange(per_pv.shape[0])
    excess = per_pv - limits
    best = excess.argmax(axis=1)
    return per_pv[rows, best].astype(np.float32), best.astype(np.int64), excess[rows, best] > 0


def min_inputs(quantile: float) -> int:
    """Fewest clean inputs whose ``quantile`` (numpy's ``higher`` method) is not their largest
    share: more than ``1 / (1 - quantile)`` (101 at 0.99)."""
    return math.floor(round(1.0 / (1.0 - quantile), 9)) + 1


def calibrate(guard: Guard, inputs: Sequence[str | tuple[str, str]], *, quantile: float = DEFAULT_QUANTILE,
              cap: float = DEFAULT_CAP) -> Calibration:
    """Calibrate ``guard``'s per-PV thresholds on clean ``inputs`` (texts or pairs, as ``scan``
    takes them). An input's share for a PV is its largest over the sequences the guard reads for
    it (a backbone guard's pair: its two sentences; a long text: its windows), so about ``1 - quantile`` of such inputs
    flag each PV whose threshold the quantile set. Reads the graph's raw ``pv_match``, so an
    already calibrated guard calibrates afresh.

    Raises:
        ConfigError: ``quantile`` outside (0, 1); ``cap`` outside (T_match, 1]; a guard with no
            PVs, without the ``pv_match`` output (exported before it: re-export), or a shared task
            graph whose monitor reads each task's own pass (its shares depend on the task:
            calibrate a graph per task).
        InputError: fewer inputs than ``min_inputs(quantile)``, or a bad input (its index named).
    """
    if not 0.0 < quantile < 1.0:
        raise ConfigError(f"quantile must be in (0, 1), got {quantile}")
    if not guard.threshold < cap <= 1.0:
        raise ConfigError(f"cap must be in (T_match, 1] = ({guard.threshold:.3f}, 1], got {cap}")
    manifest = guard.manifest
    if manifest.pv_count == 0:
        raise ConfigError("the guard has no PVs (a clean PV set): there is nothing to calibrate")
    if PER_PV not in {output.name for output in guard.session.get_outputs()}:
        raise ConfigError(f"the guard's graph has no {PER_PV} output (exported by an older lmsan): re-export it")
    if manifest.raw.get("tasks") is not None and manifest.monitor == "task":
        raise ConfigError("a shared task graph whose monitor reads each task's own pass has shares that depend "
                          "on the task: calibrate a graph exported for one task, or one with --monitor bare")
    needed = min_inputs(quantile)
    if len(inputs) < needed:
        raise InputError(f"calibration at quantile {quantile} needs at least {needed} clean inputs, got {len(inputs)}")
    checked = [check_input(value, max_chars=guard.max_chars, index=i) for i, value in enumerate(inputs)]
    shares = np.concatenate([_input_shares(guard, checked[start:start + CHUNK], start, len(checked))
                             for start in range(0, len(checked), CHUNK)])
    clean = np.quantile(shares, quantile, axis=0, method="higher")  # [K]: an observed share per PV
    thresholds = np.minimum(clean, cap)
    before = (shares.max(axis=1) > guard.threshold).mean()
    after = (shares > np.maximum(guard.threshold, thresholds)).any(axis=1).mean()
    capped = tuple(int(k) for k in np.flatnonzero(clean >= cap))
    if capped:
        log.warning("clean inputs reach PVs %s at share >= cap %.3f: the backdoor firing on natural words, or "
                    "triggered inputs in the calibration set; those PVs stay at the cap", list(capped), cap)
    digest = hashlib.sha256(json.dumps([list(x) if isinstance(x, tuple) else x for x in checked],
                                       ensure_ascii=False).encode()).hexdigest()
    return Calibration(tuple(float(t) for t in thresholds), quantile, cap, len(checked), digest, capped,
                       round(float(before), 6), round(float(after), 6), guard.threshold)


def _input_shares(guard: Guard, inputs: list[tuple[str, ...]], start: int, total: int) -> np.ndarray:
    """float32 [len(inputs), K]: each input's largest share per PV over its units."""
    try:
        units, owners, encodings = guard._units(inputs)
    except InputError as exc:  # numbered within this chunk
        if exc.index is None:
            raise
        raise InputError(exc.reason, index=start + exc.index) from exc
    per_pv = guard._detect(units, encodings, per_pv=True)[3]
    shares = np.zeros((len(inputs), guard.manifest.pv_count), np.float32)
    for unit, (i, _) in enumerate(owners):
        np.maximum(shares[i], per_pv[unit], out=shares[i])
    log.info("calibration: %d of %d inputs scored", start + len(inputs), total)
    return shares


def write_calibration(directory: str | Path, calibration: Calibration | None) -> str:
    """Write ``calibration`` into the guard's ``guard.json`` (None removes it), atomically, with a
    new digest (pin the new one: the old digest no longer matches). The guard is verified first.

    Returns:
        The manifest's new digest.

    Raises:
        DataError, IntegrityError: as ``GuardManifest.load``.
        ConfigError: ``calibration`` has another number of PVs than the guard.
    """
    manifest = GuardManifest.load(directory)
    raw = dict(manifest.raw)
    if calibration is None:
        raw.pop(CALIBRATION, None)
    else:
        if len(calibration.pv_thresholds) != manifest.pv_count:
            raise ConfigError(f"the calibration has {len(calibration.pv_thresholds)} PV thresholds, the guard "
                              f"{manifest.pv_count} PVs")
        created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        raw[CALIBRATION] = {**calibration.to_dict(), "created_utc": created}
    raw[DIGEST] = json_digest(raw, exclude=DIGEST)
    write_json(manifest.path, raw)
    return raw[DIGEST]
