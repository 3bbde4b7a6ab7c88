"""Write ``guard.json``, the manifest of an exported guard directory.

The runtime (``lmsan.runtime.manifest``) reads and verifies it; the two sides share only this
JSON layout (``format`` ``lmsan.guard/1``), so neither package imports the other. Stdlib only.

Layout::

    format, schema_version, lmsan_version, created_utc
    digest           SHA-256 of the manifest itself: canonical JSON (``lmsan.files.json_digest``) of
                     every other key. The files' hashes bind the graph and tokenizer, this binds the
                     rest (threshold, inputs, ...); pin it with ``Guard.load(expect_digest=...)``.
    graph            graph file name ("model.onnx")
    files            {file name: sha256} of every file the runtime reads (graph, side data, tokenizer)
    opset, exporter, optimized, fp16, int8, fused {op type: count}
    target, threshold, max_length, inputs, outputs
    tokenizer        {file, sha256, pad_id, mask_token, mask_id}
    pvs              {sha256 (of the PV-set file, null if given in memory), signs_sha256, size, width}
    model            {source, model_type, hidden_size, fingerprint, weight_sha256 {file: sha256}}
    parity           ParityReport as a dict
    known_triggers   [{pv, text, token_ids}]: each PV's confirmed trigger span from the PV set
                     (``lmsan.pvset.KnownTrigger``); the runtime removes them (``lmsan.runtime.known``)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path
from typing import Any

from lmsan import __version__
from lmsan.files import json_digest, sha256_file, write_json

MANIFEST = "guard.json"
DIGEST = "digest"
GUARD_FORMAT = "lmsan.guard/1"
SCHEMA_VERSION = 1
GRAPH_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


def signs_sha256(signs: Any) -> str:
    """SHA-256 of the int8 [K, d] sign matrix bytes plus its shape: what the graph bakes in."""
    digest = hashlib.sha256(f"{signs.shape[0]}x{signs.shape[1]}:".encode())
    digest.update(signs.astype("int8").tobytes())
    return digest.hexdigest()


def write_manifest(directory: Path, fields: dict[str, Any]) -> Path:
    """Hash every file in ``directory`` (except the manifest) and write ``guard.json`` atomically,
    with the digest of its own content (``digest``).

    Args:
        directory: the (staging) guard directory holding the graph and tokenizer files.
        fields: the layout's remaining keys (``opset``, ``target``, ``threshold``, ...).

    Returns:
        Path of the written manifest.
    """
    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
    fields = dict(fields)
    if isinstance(fields.get("tokenizer"), dict) and fields["tokenizer"].get("file") in files:
        fields["tokenizer"] = {**fields["tokenizer"], "sha256": files[fields["tokenizer"]["file"]]}
    payload = {
        "format": GUARD_FORMAT,
        "lmsan_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "graph": GRAPH_FILE,
        "files": files,
        **fields,
        "schema_version": SCHEMA_VERSION,
    }
    payload[DIGEST] = json_digest(payload, exclude=DIGEST)
    return write_json(directory / MANIFEST, payload)
