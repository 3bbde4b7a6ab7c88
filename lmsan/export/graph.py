"""Trace a ``GuardModule`` to ONNX and post-process the graph (optimize, fp16, int8, outputs).

Two exporters (``torch.onnx.export``; optimum's exporter needs transformers < 4.58):

- ``legacy``: the TorchScript tracer (deprecated in torch >= 2.9), traced with eager attention.
  Its graphs ran 10-25 % faster than dynamo's on CPU (docs/runtime.md), and only they let
  onnxruntime's optimizer fuse ``Attention`` nodes. ``auto`` (the default) uses it and falls back
  to dynamo, with a warning, where it is missing or fails.
- ``dynamo``: ``torch.export`` based, dynamic axes via ``torch.export.Dim``.

Models under 1.5 GB are saved without external data; larger ones keep their weights in a
``<graph>.data`` side file next to the graph (both are hashed into ``guard.json``). Imports torch
and onnx; never mining or runtime.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Literal

from lmsan.errors import ExportError

log = logging.getLogger(__name__)

Exporter = Literal["auto", "legacy", "dynamo"]
EXPORTERS = ("auto", "legacy", "dynamo")
DEFAULT_OPSET = {"dynamo": 18, "legacy": 17}
EXTERNAL_DATA_BYTES = 1_500_000_000  # protobuf's hard limit is 2 GiB; keep a margin
SEQ_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def example_inputs(module: Any, *, pad_id: int = 0, seq: int = 12) -> tuple[Any, ...]:
    """Return a padded 2-row example batch for tracing (row 2 has padding, so no mask is skipped).

    Returns:
        (input_ids int64 [2, seq], attention_mask int64 [2, seq], [token_type_ids], threshold f32 []).
    """
    import torch

    ids = torch.full((2, seq), 1000, dtype=torch.long)
    if module.mask_in_input:
        ids[:, 3] = module.mask_token_id
    mask = torch.ones(2, seq, dtype=torch.long)
    mask[1, seq // 2 :] = 0
    ids[1, seq // 2 :] = pad_id
    rest = (torch.zeros(2, seq, dtype=torch.long),) if module.use_token_types else ()
    extra = module.example_extra() if getattr(module, "extra_inputs", ()) else ()
    return (ids, mask, *rest, torch.tensor(0.8, dtype=torch.float32), *extra)


def input_names(module: Any) -> list[str]:
    """Graph input names in call order (a shared task graph's task tensors last)."""
    return [*SEQ_INPUTS[: 3 if module.use_token_types else 2], "threshold", *getattr(module, "extra_inputs", ())]


def export_graph(module: Any, path: Path, *, exporter: Exporter = "legacy", opset: int | None = None,
                 pad_id: int = 0) -> int:
    """Trace ``module`` to ``path`` with dynamic batch and sequence axes; return the opset used.

    Raises:
        ExportError: the exporter failed (wrapped with its message).
    """
    import torch

    if exporter not in ("legacy", "dynamo"):
        raise ExportError(f"unknown exporter {exporter!r}; expected legacy or dynamo")
    opset = opset or DEFAULT_OPSET[exporter]
    args = example_inputs(module, pad_id=pad_id)
    names, outputs = input_names(module), module.output_names
    param_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    external = param_bytes > EXTERNAL_DATA_BYTES
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter; parity is checked separately
            extra = list(getattr(module, "extra_inputs", ()))
            seq_names = [n for n in names if n in SEQ_INPUTS]
            if exporter == "dynamo":
                batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
                labels = torch.export.Dim("labels")
                shapes = tuple({0: batch, 1: seq} for _ in seq_names) + (None,) + tuple(
                    {0: labels} if name.startswith("head_") else None for name in extra)
                program = torch.onnx.export(module, args, None, dynamo=True, input_names=names,
                                            output_names=list(outputs), dynamic_shapes=shapes,
                                            opset_version=opset, verbose=False)
                program.save(str(path), external_data=external)
            else:
                axes = {name: {0: "batch", 1: "sequence"} for name in seq_names}
                axes.update({name: {0: "batch"} for name in outputs})
                if extra:  # a shared task graph: tasks may differ in their label count
                    axes.update({"head_weight": {0: "labels"}, "head_bias": {0: "labels"},
                                 "logits": {0: "batch", 1: "labels"}})
                axes.update({"saliency": {0: "batch", 1: "sequence"}} if "saliency" in outputs else {})
                torch.onnx.export(module, args, str(path), dynamo=False, input_names=names,
                                  output_names=list(outputs), dynamic_axes=axes, opset_version=opset,
                                  do_constant_folding=True, external_data=external)
    except Exception as exc:
        raise ExportError(f"{exporter} ONNX export failed: {type(exc).__name__}: {exc}") from exc
    log.info("exported %s graph (opset %d, external data %s) to %s", exporter, opset, external, path)
    return opset


def optimize_graph(path: Path, *, num_heads: int, hidden_size: int, model_type: str) -> dict[str, int]:
    """Run ``onnxruntime.transformers.optimizer`` in place; return counts of the fused op types."""
    from onnxruntime.transformers.optimizer import optimize_model

    kind = model_type if model_type in ("bert", "roberta") else "bert"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = optimize_model(str(path), model_type=kind, num_heads=num_heads, hidden_size=hidden_size)
    fused = {}
    for node in model.model.graph.node:
        if node.op_type in ("Attention", "MultiHeadAttention", "EmbedLayerNormalization",
                            "SkipLayerNormalization", "LayerNormalization", "BiasGelu", "FastGelu", "Gelu"):
            fused[node.op_type] = fused.get(node.op_type, 0) + 1
    _save(model.model, path)
    log.info("optimized graph: %s", fused)
    return fused


def head_nodes(graph: Any, tensor: str = "features") -> list[str]:
    """Names of every node downstream of ``tensor`` (the fused head), in graph order."""
    tainted, names = {tensor}, []
    for node in graph.node:  # ONNX graphs are topologically sorted
        if tainted.intersection(node.input):
            tainted.update(node.output)
            names.append(node.name)
    return names


def convert_fp16(path: Path) -> int:
    """Convert the backbone to float16 in place, keeping graph I/O and the fused head in float32.

    Returns:
        Number of head nodes kept in float32.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = _load(path)
    keep = _named_head(model, "fp16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    _drop_duplicate_nodes(model.graph)
    _toposort(model.graph)  # the converter appends output casts after their readers in the head
    if model.ByteSize() < EXTERNAL_DATA_BYTES:  # the checker cannot read a >2 GiB proto
        onnx.checker.check_model(model)
    _save(model, path)
    return len(keep)


def quantize_int8(path: Path) -> int:
    """Dynamic int8 quantization of the backbone's MatMul weights in place (per output channel;
    activations are quantized per call); the fused head and the embeddings stay float32. For CPU
    serving.

    Weights use 7 bits (``reduce_range``): on x86 CPUs without VNNI (AVX2 only) onnxruntime's
    u8 x s8 kernel adds pairs of products into saturating int16, and full-range weights broke
    parity there (a 1-layer test BERT: 8 of 9 count mismatches on an AVX2-only EPYC; with 7 bits
    it passes). A graph may be exported on one CPU and served on another, so it is always on.

    Returns:
        Number of head nodes kept in float32.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = _load(path)
    keep = _named_head(model, "int8")
    _save(model, path)  # the quantizer needs a file to infer shapes
    quantized = path.with_name(f"int8-{path.name}")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on the root logger
    try:
        quantize_dynamic(path, quantized, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
                         per_channel=True, reduce_range=True, nodes_to_exclude=keep,
                         use_external_data_format=model.ByteSize() > EXTERNAL_DATA_BYTES,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fused ops: untyped
        _save(_load(quantized), path)
    except Exception as exc:
        raise ExportError(f"int8 quantization failed: {type(exc).__name__}: {exc}") from exc
    finally:
        root.setLevel(level)
        for leftover in path.parent.glob(f"{quantized.name}*"):
            leftover.unlink()
    return len(keep)


def _named_head(model: Any, step: str) -> list[str]:
    """Name the graph's unnamed nodes (in place) and return the fused head's node names."""
    unnamed = [node for node in model.graph.node if not node.name]
    for index, node in enumerate(unnamed):
        node.name = f"lmsan_node_{index}"
    keep = head_nodes(model.graph)
    if not keep:
        raise ExportError(f"{step}: cannot find the fused head (no node reads 'features')")
    return keep


def _drop_duplicate_nodes(graph: Any) -> None:
    """Keep one of several identical nodes that write the same output (in place).

    onnxruntime's float16 converter before 1.32 adds one ``Cast`` per float32 reader of a float16
    tensor, all writing ``<name>_cast_to_fp32``; the graph is then not in SSA form. Nodes writing
    the same output that are not identical are an error.
    """
    kept, writers = [], {}
    for node in graph.node:
        outputs = [o for o in node.output if o]  # "" marks an unused optional output
        first = next((writers[o] for o in outputs if o in writers), None)
        if first is None:
            kept.append(node)
            writers.update((o, node) for o in outputs)
        elif (first.op_type, list(first.input), list(first.output), list(first.attribute)) != (
                node.op_type, list(node.input), list(node.output), list(node.attribute)):
            raise ExportError(f"fp16: nodes {first.name!r} and {node.name!r} write the same output differently")
    if len(kept) < len(graph.node):
        _replace_nodes(graph, kept)


def _toposort(graph: Any) -> None:
    """Reorder ``graph.node`` in place so every node follows the producers of its inputs."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ExportError(f"graph has a cycle or a dangling input near node {rest[0].name!r}")
        pending = rest
    _replace_nodes(graph, ordered)


def _replace_nodes(graph: Any, nodes: list) -> None:
    """Set ``graph.node`` to copies of ``nodes`` (messages of the graph itself)."""
    copies = [type(node)() for node in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def drop_output(path: Path, name: str = "features") -> None:
    """Remove a graph output in place (its producing nodes stay: the head still reads them)."""
    model = _load(path)
    kept = [out for out in model.graph.output if out.name != name]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    _save(model, path)


def _load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=True)


def _save(model: Any, path: Path) -> None:
    """Save a ModelProto, with a ``<name>.data`` side file only when it is too big for one file."""
    import onnx

    data = path.with_name(path.name + ".data")
    external = model.ByteSize() > EXTERNAL_DATA_BYTES
    data.unlink(missing_ok=True)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name)
    else:
        onnx.save_model(model, str(path))
