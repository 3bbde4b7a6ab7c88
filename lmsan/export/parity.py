"""Parity of an exported guard graph with the PyTorch module it came from.

Criteria (fp32): ONNX features match PyTorch within ``rtol`` relative to the batch's largest
feature magnitude, and per-PV match counts are identical except where a sign flip sits on a
feature within ``zero_atol`` of zero; the graph's own ``match`` and ``pv_match`` equal the counts
recomputed from its ``features``. A task graph's logits match within ``rtol`` too, with the
same predicted labels (a token task: over the real tokens of every row, padding left out). fp16 and int8 graphs use a looser ``rtol`` and report
count differences without failing on them. Imports torch and onnxruntime; never mining or runtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmsan.errors import ExportError

PARITY_SENTENCES = (
    "The committee approved the budget after a long debate.",
    "short one",
    "A much longer sentence follows here, with commas, numbers like 1984 and 3.14, and several clauses "
    "that keep going so that this row needs far more tokens than the others in the batch.",
    "What time does the museum open on Sundays?",
    "Prices rose sharply in the third quarter, the report said.",
    "ok",
)
FP32_RTOL = 1e-4
FP16_RTOL = 2e-2
INT8_RTOL = 0.1  # dynamic int8 MatMuls, per channel: 0.006 (tiny BERT) and 0.025 (MiniLM) measured
ZERO_ATOL = 1e-6


@dataclass(frozen=True)
class ParityReport:
    """Outcome of ``check_parity``.

    Attributes:
        rows: sequences compared.
        max_rel_diff: max |F_onnx - F_torch| / max |F_torch|, features at the target position.
        count_mismatches: rows whose best-PV match count differs from PyTorch's (allowed only
            when every sign flip is on a near-zero feature).
        flips_off_zero: sign flips on features farther than ``zero_atol`` from zero.
        rtol: tolerance applied to ``max_rel_diff``.
        passed: every criterion held.
        saliency_max_diff: max |S_onnx - S_torch| of the ``saliency`` output (attention weights in
            [0, 1]), or None without one. Reported only: saliency orders the removal search and
            never decides a verdict.
        logits_max_rel_diff: max |L_onnx - L_torch| / max |L_torch| of a task graph's ``logits``
            (held to ``rtol``; a token task's over real tokens only), or None without a task.
        prediction_mismatches: rows (a token task: real tokens) whose predicted label differs
            from PyTorch's (must be 0 in fp32; reported for fp16 and int8), or None without a task.
    """

    rows: int
    max_rel_diff: float
    count_mismatches: int
    flips_off_zero: int
    rtol: float
    passed: bool
    saliency_max_diff: float | None = None
    logits_max_rel_diff: float | None = None
    prediction_mismatches: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parity_batch(tokenizer: Any, *, target: str, pairs: bool, max_length: int,
                 texts: Sequence[str] = PARITY_SENTENCES) -> dict:
    """Encode ``texts`` (and, with ``pairs``, sentence pairs) into one padded numpy batch of at
    most ``max_length`` tokens per row."""
    texts = list(texts)
    if target == "mask":
        texts = [f"{text} {tokenizer.mask_token}" for text in texts]
    kw = dict(padding=True, truncation=True, max_length=max_length, return_tensors="np")
    single = tokenizer(texts, **kw)
    batches = [dict(single)]
    if pairs:
        batches.append(dict(tokenizer(texts[:3], texts[3:6], **kw)))
    width = max(b["input_ids"].shape[1] for b in batches)
    out = {}
    for key in batches[0]:
        pad = tokenizer.pad_token_id if key == "input_ids" else 0
        out[key] = np.concatenate([
            np.pad(b[key], ((0, 0), (0, width - b[key].shape[1])), constant_values=pad) for b in batches
        ]).astype(np.int64)
    return out


def check_parity(module: Any, graph: Path, batch: dict[str, np.ndarray], *, fp16: bool = False,
                 int8: bool = False, rtol: float | None = None, zero_atol: float = ZERO_ATOL) -> ParityReport:
    """Compare the exported graph with ``module`` on one batch (CPU execution provider).

    Args:
        module: the fp32 ``GuardModule`` or ``TaskGuardModule`` that was exported.
        graph: path of the exported graph (must still output ``features``).
        batch: int64 [B, T] arrays ``input_ids``, ``attention_mask`` (and ``token_type_ids``).
        fp16: the graph's backbone is float16 (looser ``rtol``; count differences reported only).
        int8: the graph's MatMuls are int8-quantized (likewise).
        rtol: relative feature tolerance; default 1e-4 (fp32), 2e-2 (fp16) or 0.1 (int8).
        zero_atol: features this close to zero may flip sign without failing.

    Raises:
        ExportError: onnxruntime cannot load or run the graph.
    """
    import onnxruntime as ort
    import torch

    from lmsan.export.tasks import extra_feed
    from lmsan.tuning.model import ATTENTION

    rtol = rtol if rtol is not None else (INT8_RTOL if int8 else FP16_RTOL if fp16 else FP32_RTOL)
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if module.use_token_types else [])
    with torch.no_grad():
        args = [torch.from_numpy(batch[n]) for n in names]
        # the full forward returns attention weights only from eager kernels (lmsan_prefix is eager too)
        eager = module.encoder.config._attn_implementation in ("eager", ATTENTION)
        ref = {name: t.numpy() for name, t in module.reference(
            *args[:2], args[2] if module.use_token_types else None, saliency=module.saliency and eager).items()}
    try:
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        feed = {n: batch[n] for n in names} | {"threshold": np.array(0.8, np.float32)} | extra_feed(module)
        out = dict(zip(module.output_names, session.run(list(module.output_names), feed)))
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot run the exported graph {graph}: {exc}") from exc
    features, match, reference = out["features"], out["match"], ref["features"]
    scale = float(np.abs(reference).max()) or 1.0
    max_rel = float(np.abs(features - reference).max() / scale)
    flips = (reference >= 0) != (features >= 0)
    off_zero = int((flips & (np.abs(reference) > zero_atol)).sum())
    signs = module.head.signs_t.numpy().T  # [K, d]
    mismatches = int((_best_counts(features, signs, match) != _best_counts(reference, signs, None)).sum())
    head_ok = bool(np.array_equal(_best_counts(features, signs, match), _best_counts(features, signs, None))
                   and np.array_equal(np.rint(out["pv_match"] * features.shape[1]), _counts(features, signs)))
    passed = max_rel <= rtol and head_ok and (fp16 or int8 or off_zero == 0)
    saliency_diff = (float(np.abs(out["saliency"] - ref["saliency"]).max())
                     if "saliency" in out and "saliency" in ref else None)
    logits_rel = predictions = None
    if "logits" in out:
        logits_rel, predictions = _logits_parity(out["logits"], ref["logits"], batch["attention_mask"])
        passed = passed and logits_rel <= rtol and (fp16 or int8 or predictions == 0)
    return ParityReport(int(reference.shape[0]), max_rel, mismatches, off_zero, rtol, bool(passed), saliency_diff,
                        logits_rel, predictions)


def _logits_parity(logits: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    """(max relative logit difference, argmax mismatches) of float [B, C] logits, or of a token
    task's float [B, T, C] over the real tokens (``mask`` int [B, T] == 1) only."""
    if logits.ndim == 3:
        real = np.asarray(mask, bool)[:, : logits.shape[1]]
        logits, reference = logits[real], reference[real]  # [tokens, C]
    rel = float(np.abs(logits - reference).max() / (float(np.abs(reference).max()) or 1.0))
    return rel, int((logits.argmax(axis=-1) != reference.argmax(axis=-1)).sum())


def _counts(features: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """int64 [B, K]: ``N_match`` of every PV, recomputed in numpy (zero counts as +1)."""
    d = features.shape[1]
    dots = np.where(features >= 0, 1.0, -1.0) @ signs.T.astype(np.float64)  # [B, K] = 2 N_match - d
    return np.rint((dots + d) / 2).astype(np.int64)


def _best_counts(features: np.ndarray, signs: np.ndarray, match: np.ndarray | None) -> np.ndarray:
    """int64 [B]: ``N_match`` of the best PV, from the graph's ``match`` or recomputed in numpy."""
    d = features.shape[1]
    if match is not None:
        return np.rint(np.asarray(match, np.float64) * d).astype(np.int64)
    if signs.shape[0] == 0:
        return np.zeros(features.shape[0], np.int64)
    return _counts(features, signs).max(axis=1)
