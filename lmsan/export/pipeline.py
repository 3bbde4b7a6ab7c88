"""``export_guard``: model + PV set -> a self-contained guard directory (graph, tokenizer, manifest).

Everything is written into a staging directory next to ``out`` and renamed into place at the
end, so a failed export leaves nothing half-written. Imports torch (lazily); never mining or
runtime.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lmsan.errors import ConfigError, ExportError, IntegrityError, PVSetError
from lmsan.export import tasks
from lmsan.export.graph import (EXPORTERS, Exporter, convert_fp16, drop_output, export_graph, optimize_graph,
                                quantize_int8)
from lmsan.export.manifest import GRAPH_FILE, GUARD_FORMAT, MANIFEST, TOKENIZER_FILE, signs_sha256, write_manifest
from lmsan.export.parity import PARITY_SENTENCES, ParityReport, check_parity, parity_batch
from lmsan.files import check_replaceable, read_json, replace_dir, sha256_file
from lmsan.pvset import MATCH_THRESHOLD, PVSet

log = logging.getLogger(__name__)

ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")  # positions start at pad_token_id + 1


@dataclass(frozen=True)
class ExportResult:
    """What ``export_guard`` produced.

    Attributes:
        path: the guard directory (``model.onnx``, ``tokenizer.json``, ``guard.json``).
        manifest: the content of ``guard.json``.
        parity: the parity check of the graph against PyTorch.
        wall_s: export wall time in seconds.
    """

    path: Path
    manifest: dict[str, Any]
    parity: ParityReport
    wall_s: float


def export_guard(model: str | os.PathLike, pvs: PVSet | str | os.PathLike, out: str | os.PathLike, *,
                 target: str | None = None, threshold: float = MATCH_THRESHOLD, optimize: bool = False,
                 fp16: bool = False, int8: bool = False, features: bool = False, saliency: bool = True,
                 prune: bool = True, exporter: Exporter = "auto",
                 attn_implementation: str | None = None, opset: int | None = None,
                 allow_pickle: bool = False, overwrite: bool = False,
                 task: str | os.PathLike | Sequence[str | os.PathLike] | None = None, shared: bool = False,
                 monitor: str = tasks.DEFAULT_MONITOR, parity_texts: Sequence[str] = PARITY_SENTENCES) -> ExportResult:
    """Export ``model`` with the fused sign-match head for ``pvs`` into the guard directory ``out``.

    Args:
        model: local Hugging Face model directory (or hub id).
        pvs: the PV set, or the path of its ``pvs.safetensors``.
        out: guard directory to create.
        target: ``cls``/``token``/``last``/``mask``; default and only accepted value: the PV set's.
        threshold: default ``T_match`` in [0, 1) stored in ``guard.json`` (adjustable at load).
        optimize: run ``onnxruntime.transformers.optimizer`` (fusions) on the graph.
        fp16: convert the backbone to float16; the head and the graph I/O stay float32 (GPU).
        int8: dynamic int8 quantization of the backbone's MatMuls; the head stays float32 (CPU:
            2.2-2.9x faster with the same verdicts, measured on MiniLM; parity tolerance 0.1).
        features: keep the ``features`` float32 [B, d] graph output.
        saliency: add the ``saliency`` float32 [B, T] output (last-layer attention from the target
            position, ``lmsan.export.head``) that the runtime's removal tries first. Always
            available with a pruned last layer; else only with eager attention and without
            ``optimize`` (fused attention keeps no weights), skipped otherwise (logged;
            ``guard.json`` lists the outputs).
        prune: run the last layer for the target row only where the backbone's layers are
            BERT-style (``lmsan.export.prune``; ``guard.json`` ``pruned``); the full forward
            otherwise. Parity is always checked against the full forward.
        exporter: ``auto`` (legacy, else dynamo), ``legacy`` or ``dynamo`` (``lmsan.export.graph``).
        attn_implementation: attention kernel to trace; default ``eager`` for ``auto`` and
            ``legacy`` (needed for attention fusion), transformers' default for ``dynamo``.
        opset: ONNX opset; default 17 (legacy) or 18 (dynamo).
        allow_pickle: accept pickle-format model weights (unsafe).
        overwrite: replace an existing ``out`` that is a guard directory (``check_out_dir``).
        task: a task directory written by ``lmsan-tune`` (``lmsan.tuning.store``), or several: the
            graph then also outputs the task's ``logits``, and the monitor reads the features at
            the position the task's head reads, from the pass ``monitor`` names
            (``lmsan.export.task``). Each task must have been tuned on these weights, and its head
            position must be the PV set's target. Several tasks share one graph (``shared``).
        shared: one graph whose task tensors (prompt, linear head) are inputs, so it serves every
            task given (same method, prompt length and head position; ``lmsan.export.tasks``).
        monitor: with ``task``, which forward pass the monitor reads (``lmsan.export.task``):
            ``bare`` (default) runs the backbone a second time without the task's prompt, as the
            PVs were mined, and reads that pass (its last layer for one row where the layers
            allow it); ``task`` reads the task's own prompted pass (one pass). The task's logits
            always come from the prompted pass. Ignored without ``task``.
        parity_texts: sentences for the parity check.

    Raises:
        ConfigError: bad threshold, a target that differs from the PV set's (or from the task's
            head position), or fp16 with int8.
        DataError: a malformed task directory.
        PVSetError: unreadable PV set, or its width differs from the model's hidden size.
        IntegrityError: the PV set was mined, or the task tuned, on other weights.
        ModelLoadError: the model cannot be loaded.
        ExportError: ``out`` exists (or, with ``overwrite``, is not a guard directory), the exporter
            failed, or parity failed.
    """
    started = time.perf_counter()
    if monitor not in tasks.MONITORS:
        raise ConfigError(f"unknown monitor {monitor!r}; expected one of {', '.join(tasks.MONITORS)}")
    if not 0.0 <= threshold < 1.0:
        raise ConfigError(f"threshold must be in [0, 1), got {threshold}")
    if fp16 and int8:
        raise ConfigError("choose fp16 (GPU) or int8 (CPU), not both")
    out = Path(out)
    check_out_dir(out, overwrite=overwrite)
    pvs_path = None if isinstance(pvs, PVSet) else Path(pvs)
    pv_set = pvs if isinstance(pvs, PVSet) else PVSet.load(pvs_path)
    if target is not None and target != pv_set.target:
        raise ConfigError(f"target {target!r} differs from the PV set's target {pv_set.target!r}")

    from lmsan.models import load_model

    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown exporter {exporter!r}; expected one of {', '.join(EXPORTERS)}")
    attn = attn_implementation or ("eager" if exporter != "dynamo" else None)
    dirs = tasks.task_dirs(task)
    fields = tasks.read_fields(dirs, shared=shared)
    loaded = load_model(model, allow_pickle=allow_pickle, attn_implementation=attn,
                        with_mlm_head=any(f.get("verbalizer") for f in fields))
    _check_fit(pv_set, loaded, pvs_path)
    bundle = tasks.load_bundle(dirs, fields, loaded, pv_set, shared=shared) if dirs else None
    if bundle is None:
        module = _guard_module(loaded, pv_set, saliency=saliency, prune=prune)
    else:
        module = tasks.task_module(bundle, pv_set, use_token_types=_uses_token_types(loaded), saliency=saliency,
                                   prune=prune, monitor=monitor)
        log.info("monitor %s: %s", monitor, "a second backbone pass without the task's prompt (as the PVs were "
                 "mined)" if monitor == "bare" else "the task's own prompted pass (one pass)")
    if saliency and not getattr(module, "monitor_pruned", module.pruned) and (attn != "eager" or optimize):
        log.info("no saliency output (unpruned, it needs eager attention and no --optimize): removal starts "
                 "without a guess")
        module.saliency = False
    log.info("last layer %s", "runs for the target row only" if module.pruned else "runs in full (not pruned)")
    reserved = bundle.reserved_tokens if bundle else 0
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        graph = staging / GRAPH_FILE
        pad_id = loaded.tokenizer.pad_token_id or 0
        exporter, opset = _export(module, graph, exporter, opset, pad_id)
        config = loaded.model.config
        fused = optimize_graph(graph, num_heads=config.num_attention_heads, hidden_size=config.hidden_size,
                               model_type=config.model_type) if optimize else {}
        if fp16:
            convert_fp16(graph)
        if int8:
            quantize_int8(graph)
        batch = parity_batch(loaded.tokenizer, target="cls" if bundle else pv_set.target,  # the template has the [MASK]
                             pairs=module.use_token_types, max_length=max_tokens(loaded) - reserved, texts=parity_texts)
        parity = check_parity(module, graph, batch, fp16=fp16, int8=int8)
        if not parity.passed:
            hint = " (the last layer was pruned: --no-prune exports the full forward)" if module.pruned else ""
            raise ExportError(f"parity check failed: {parity.to_dict()}{hint}")
        if not features:
            drop_output(graph, "features")
        if bundle:
            tasks.write_task_tensors(bundle, staging)
        loaded.tokenizer.save_pretrained(str(staging))  # tokenizer_config.json and friends
        loaded.tokenizer.backend_tokenizer.save(str(staging / TOKENIZER_FILE))  # what the runtime reads
        manifest = _manifest_fields(loaded, pv_set, pvs_path, module, opset=opset, exporter=exporter,
                                    optimize=optimize, fused=fused, fp16=fp16, int8=int8, threshold=threshold,
                                    features=features, parity=parity, bundle=bundle)
        write_manifest(staging, manifest)
        _move_into_place(staging, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    wall = time.perf_counter() - started
    log.info("exported guard to %s (parity max_rel_diff=%.2e, wall_s=%.1f)", out, parity.max_rel_diff, wall)
    return ExportResult(out, read_json(out / "guard.json"), parity, wall)


def _export(module: Any, graph: Path, exporter: str, opset: int | None, pad_id: int) -> tuple[str, int]:
    """Run the chosen exporter; ``auto`` tries legacy, then dynamo. Returns (exporter, opset)."""
    if exporter != "auto":
        return exporter, export_graph(module, graph, exporter=exporter, opset=opset, pad_id=pad_id)
    try:
        return "legacy", export_graph(module, graph, exporter="legacy", opset=opset, pad_id=pad_id)
    except ExportError as exc:
        log.warning("legacy exporter failed (%s); falling back to dynamo", exc)
        for leftover in graph.parent.glob(graph.name + "*"):
            leftover.unlink()
        return "dynamo", export_graph(module, graph, exporter="dynamo", opset=opset, pad_id=pad_id)


def _check_fit(pv_set: PVSet, loaded: Any, pvs_path: Path | None) -> None:
    where = f" ({pvs_path})" if pvs_path else ""
    if pv_set.width != loaded.hidden_size:
        raise PVSetError(f"PV width {pv_set.width} != model hidden size {loaded.hidden_size}{where}")
    vocabulary = len(loaded.tokenizer)
    for trigger in (t for t in pv_set.triggers if t is not None):
        if max(trigger.token_ids) >= vocabulary:
            raise PVSetError(f"known trigger {trigger.text!r} has token id {max(trigger.token_ids)}, outside the "
                             f"vocabulary of {vocabulary} of {loaded.source}{where}")
    known = {loaded.fingerprint, *loaded.weight_sha256.values()}
    if pv_set.model_sha256 and pv_set.model_sha256 not in known:
        raise IntegrityError(
            f"the PV set was mined on weights {pv_set.model_sha256[:12]}…, not on {loaded.source} "
            f"({loaded.fingerprint[:12]}…){where}"
        )


def known_trigger_entries(pv_set: PVSet) -> list[dict[str, Any]]:
    """``guard.json`` ``known_triggers``: ``{pv, text, token_ids}`` of each PV's known trigger."""
    return [{"pv": k, "text": t.text, "token_ids": list(t.token_ids)} for k, t in enumerate(pv_set.triggers)
            if t is not None]


def _guard_module(loaded: Any, pv_set: PVSet, *, saliency: bool, prune: bool) -> Any:
    from lmsan.export.head import GuardModule, TokenTypeGuardModule

    config = loaded.model.config
    tokenizer = loaded.tokenizer
    use_types = _uses_token_types(loaded)
    mask_id = tokenizer.mask_token_id
    if pv_set.target == "mask" and mask_id is None:
        raise ConfigError(f"target 'mask' needs a mask token; the tokenizer of {loaded.source} has none")
    if use_types:
        module = TokenTypeGuardModule(loaded.encoder, pv_set.signs, target=pv_set.target, mask_token_id=mask_id,
                                      saliency=saliency, prune=prune)
    else:
        module = GuardModule(loaded.encoder, pv_set.signs, target=pv_set.target, mask_token_id=mask_id,
                             saliency=saliency, prune=prune)
    return module.eval()


def _uses_token_types(loaded: Any) -> bool:
    """Whether the backbone reads ``token_type_ids`` (BERT-style sentence pairs)."""
    config = loaded.model.config
    return getattr(config, "type_vocab_size", 0) > 1 and "token_type_ids" in loaded.tokenizer.model_input_names


def max_tokens(loaded: Any) -> int:
    """Longest sequence (special tokens included) the model accepts."""
    config = loaded.model.config
    positions = int(config.max_position_embeddings)
    if config.model_type in ROBERTA_LIKE:
        positions -= int(config.pad_token_id or 0) + 1
    limit = getattr(loaded.tokenizer, "model_max_length", None) or positions
    return int(min(positions, limit)) if limit < 1_000_000 else positions


def _manifest_fields(loaded: Any, pv_set: PVSet, pvs_path: Path | None, module: Any, *, opset: int,
                     exporter: str, optimize: bool, fused: dict, fp16: bool, int8: bool, threshold: float,
                     features: bool, parity: ParityReport, bundle: Any = None) -> dict[str, Any]:
    tokenizer = loaded.tokenizer
    config = loaded.model.config
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if module.use_token_types else [])
    reserved = bundle.reserved_tokens if bundle else 0
    fields = {
        "opset": opset, "exporter": exporter, "optimized": optimize, "fused": fused, "fp16": fp16, "int8": int8,
        "pruned": module.pruned,
        "target": pv_set.target, "threshold": threshold, "max_length": max_tokens(loaded) - reserved,
        "inputs": names + ["threshold"] + list(getattr(module, "extra_inputs", ())),
        "outputs": [name for name in module.output_names if features or name != "features"],
        "tokenizer": {
            "file": TOKENIZER_FILE, "pad_id": int(tokenizer.pad_token_id or 0),
            "mask_token": tokenizer.mask_token, "mask_id": tokenizer.mask_token_id,
        },
        "pvs": {
            "sha256": sha256_file(pvs_path) if pvs_path else None, "signs_sha256": signs_sha256(pv_set.signs),
            "size": pv_set.size, "width": pv_set.width, "seeds": pv_set.seeds.tolist(),
        },
        "model": {
            "source": str(loaded.source), "model_type": config.model_type, "hidden_size": loaded.hidden_size,
            "fingerprint": loaded.fingerprint, "weight_sha256": dict(loaded.weight_sha256),
        },
        "parity": parity.to_dict(),
        "known_triggers": known_trigger_entries(pv_set),
    }
    if bundle and module.use_token_types:  # how the graph's monitor reads a pair: each sentence alone, or joined
        fields["pair_reading"] = "sentences" if module.segments else "joined"
    if bundle:
        fields.update(tasks.manifest_fields(bundle, module.monitor))
    return fields


def check_out_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse an ``out`` whose replacement could lose data.

    ``out`` must not exist, unless ``overwrite`` is set and it is an empty directory or an lmsan
    guard directory (its ``guard.json`` has ``format`` ``lmsan.guard/1``). Anything else (a model
    directory, a file, a guard.json of another tool) is never deleted.

    Raises:
        ExportError: ``out`` exists and may not be replaced.
    """
    check_replaceable(out, overwrite=overwrite, manifest=MANIFEST, fmt=GUARD_FORMAT, kind="guard", error=ExportError)


def _move_into_place(staging: Path, out: Path, *, overwrite: bool) -> None:
    """Rename ``staging`` to ``out`` (``lmsan.files.replace_dir``) after checking ``out`` again."""
    check_out_dir(out, overwrite=overwrite)  # it may have changed during the export
    replace_dir(staging, out)
