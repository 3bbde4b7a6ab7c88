"""Task directories: a tuned task's tensors (``task.safetensors``) and manifest (``task.json``).

``task.json`` (format ``lmsan.task/1``) records the method, the head, the task's kind
(``sequence`` or ``tokens``), the labels, the token limit, the backbone the task was tuned on
(weights fingerprint and shape), the SHA-256 of the tensor file, the metrics and the config.
Writing stages everything in a temp directory next to the output and renames it into place;
loading checks the format, the backbone, the file hash and every tensor shape, with one clear
error each. Never pickle. Imports torch and safetensors; never mining, export or runtime.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lmsan import __version__
from lmsan.errors import ConfigError, DataError, IntegrityError
from lmsan.files import check_replaceable, read_json, replace_dir, sha256_file, write_json
from lmsan.tuning.config import METHODS, TARGETS
from lmsan.tuning.tasks import KINDS, TASKS
from lmsan.tuning.train import TunedTask

log = logging.getLogger(__name__)

TASK_FORMAT = "lmsan.task/1"
MANIFEST = "task.json"
TENSORS = "task.safetensors"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# manifest key -> (type(s), what it must be): checked by read_task_manifest.
_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "method": (str, "a method name"), "length": (int, "an int >= 1"), "target": (str, "cls, mask or tokens"),
    "task": (str, "a task name"), "labels": (list, "a list of >= 2 label names"), "pairs": (bool, "a bool"),
    "verbalizer": ((list, type(None)), "null or one token id per label"), "max_length": (int, "an int >= 1"),
    "backbone": (dict, "an object"), "files": (dict, "an object"), "metrics": (dict, "an object"),
    "config": (dict, "an object"), "lmsan_version": (str, "a str"),
}


def manifest_for(tuned: TunedTask, loaded: Any, tensor_sha256: str) -> dict[str, Any]:
    """The ``task.json`` content for ``tuned`` (tuned on ``loaded``), its tensors hashing to ``tensor_sha256``."""
    config = loaded.model.config
    model = tuned.model
    return {
        "format": TASK_FORMAT,
        "method": model.method,
        "length": model.length,
        "target": model.target,
        "task": tuned.task.name,
        "kind": tuned.task.kind,
        "labels": list(tuned.task.label_names),
        "pairs": tuned.task.pairs,
        "verbalizer": list(model.verbalizer) if model.verbalizer is not None else None,
        "verbalizer_words": list(tuned.verbalizer_words) if tuned.verbalizer_words is not None else None,
        "max_length": tuned.max_length,
        "backbone": {
            "fingerprint": loaded.fingerprint,
            "model_type": str(config.model_type),
            "hidden_size": int(config.hidden_size),
            "num_layers": int(config.num_hidden_layers),
            "num_heads": int(config.num_attention_heads),
            "source": str(loaded.source),
        },
        "files": {TENSORS: tensor_sha256},
        "metrics": tuned.metrics,
        "config": tuned.config.to_dict(),
        "lmsan_version": __version__,
    }


def save_task(directory: str | os.PathLike, tuned: TunedTask, loaded: Any, *, overwrite: bool = False) -> Path:
    """Write a task directory atomically: staged next to ``directory``, then renamed into place.

    Args:
        directory: the output directory; must not exist, unless ``overwrite`` and it is an empty
            directory or a task directory (``check_out_dir``).
        tuned: what ``tune`` returned.
        loaded: the backbone it was tuned on (its weights fingerprint is recorded).
        overwrite: replace an existing task directory.

    Returns:
        The directory.

    Raises:
        FileExistsError: ``directory`` exists and may not be replaced. OSError: it cannot be written.
    """
    from safetensors.torch import save_file

    out = Path(directory)
    check_out_dir(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        save_file(tuned.model.task_tensors(), str(staging / TENSORS), metadata={"format": TASK_FORMAT})
        write_json(staging / MANIFEST, manifest_for(tuned, loaded, sha256_file(staging / TENSORS)))
        _move_into_place(staging, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote task %s (%s) to %s", tuned.task.name, tuned.model.method, out)
    return out


def check_out_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse an output whose replacement could lose data.

    ``out`` must not exist, unless ``overwrite`` is set and it is an empty directory or a task
    directory (its ``task.json`` has format ``lmsan.task/1``). Nothing else is ever deleted.

    Raises:
        FileExistsError: ``out`` exists and may not be replaced.
    """
    check_replaceable(out, overwrite=overwrite, manifest=MANIFEST, fmt=TASK_FORMAT, kind="task", error=FileExistsError)


def _move_into_place(staging: Path, out: Path, *, overwrite: bool) -> None:
    """Rename ``staging`` to ``out`` (``lmsan.files.replace_dir``) after checking ``out`` again."""
    check_out_dir(out, overwrite=overwrite)  # it may have changed while training
    replace_dir(staging, out)


def read_task_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``task.json`` without loading any tensor.

    Raises:
        DataError: no such directory or manifest, malformed JSON, another format, or a field
            missing or of the wrong type / value (the message names it and the file).
    """
    path = Path(directory)
    if not path.is_dir():
        raise DataError(f"task directory not found: {path}" if not path.exists() else f"not a task directory: {path}")
    where = path / MANIFEST
    if not where.is_file():
        raise DataError(f"no {MANIFEST} in {path}: not an lmsan task directory")
    manifest = read_json(where)
    if manifest.get("format") != TASK_FORMAT:
        raise DataError(f"unsupported task format {manifest.get('format')!r} in {where} (expected {TASK_FORMAT})")
    for key, (kind, what) in _FIELDS.items():
        value = manifest.get(key, _MISSING)
        if value is _MISSING:
            raise DataError(f"{where}: field {key!r} is missing")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise DataError(f"{where}: field {key!r} must be {what}; got {value!r}")
    _check_values(manifest, where)
    return manifest


_MISSING = object()


def _check_values(manifest: dict[str, Any], where: Path) -> None:
    def bad(key: str, what: str) -> DataError:
        return DataError(f"{where}: field {key!r} must be {what}; got {manifest.get(key)!r}")

    if manifest["method"] not in METHODS:
        raise bad("method", f"one of {', '.join(METHODS)}")
    if manifest["target"] not in TARGETS:
        raise bad("target", "cls, mask or tokens")
    kind = manifest.setdefault("kind", "sequence")  # written since token tasks; older tasks are sequence tasks
    if kind not in KINDS:
        raise bad("kind", f"one of {', '.join(KINDS)}")
    if (kind == "tokens") != (manifest["target"] == "tokens"):
        raise DataError(f"{where}: kind {kind!r} and target {manifest['target']!r} disagree (target 'tokens' goes "
                        "with kind 'tokens')")
    registered = TASKS.get(manifest["task"])
    if registered is not None and registered.kind != kind:
        raise DataError(f"{where}: task {manifest['task']!r} is a {registered.kind} task, the manifest says {kind}")
    if manifest["length"] < 1:
        raise bad("length", "an int >= 1")
    if manifest["max_length"] < 1:
        raise bad("max_length", "an int >= 1")
    labels = manifest["labels"]
    if len(labels) < 2 or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
        raise bad("labels", "a list of >= 2 distinct label names")
    verbalizer = manifest["verbalizer"]
    if verbalizer is not None:
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in verbalizer):
            raise bad("verbalizer", "null or a list of token ids")
        if len(verbalizer) != len(labels):
            raise DataError(f"{where}: the verbalizer has {len(verbalizer)} token(s) for {len(labels)} labels")
        if kind == "tokens":
            raise DataError(f"{where}: a token task has a linear head, not a verbalizer")
    backbone = manifest["backbone"]
    for key, kind in (("fingerprint", str), ("model_type", str), ("hidden_size", int), ("num_layers", int),
                      ("num_heads", int)):
        if not isinstance(backbone.get(key), kind) or isinstance(backbone.get(key), bool):
            raise DataError(f"{where}: backbone.{key} is missing or not a {kind.__name__}")
    if not _HEX64.match(backbone["fingerprint"]):
        raise DataError(f"{where}: backbone.fingerprint must be 64 hex digits")
    if not _HEX64.match(str(manifest["files"].get(TENSORS, ""))):
        raise DataError(f"{where}: files.{TENSORS} must be the file's SHA-256 (64 hex digits)")


def load_task(directory: str | os.PathLike, loaded: Any) -> Any:
    """Load a task directory onto the backbone it was tuned on.

    Args:
        directory: a task directory written by ``save_task``.
        loaded: ``lmsan.models.LoadedModel`` with the same weights (``with_mlm_head=True`` for a
            verbaliser task).

    Returns:
        ``PromptTuned`` in eval mode on the backbone's device, the stored tensors loaded.

    Raises:
        DataError: see ``read_task_manifest``; a missing or unreadable tensor file; a missing head,
            a label count that does not match the tensors, or wrong tensor shapes.
        IntegrityError: the backbone's weights differ from the task's, or the tensor file's
            SHA-256 differs from the manifest's.
        ConfigError: a verbaliser task on a backbone loaded without its MLM head.
    """
    from safetensors.torch import load_file

    from lmsan.tuning.model import PromptTuned

    path = Path(directory)
    manifest = read_task_manifest(path)
    _check_backbone(manifest, loaded, path)
    tensor_file = path / TENSORS
    if not tensor_file.is_file():
        raise DataError(f"no {TENSORS} in {path}: the task's tensors are missing")
    digest = sha256_file(tensor_file)
    if digest != manifest["files"][TENSORS]:
        raise IntegrityError(f"{tensor_file} has SHA-256 {digest[:12]}…, but {MANIFEST} records "
                             f"{manifest['files'][TENSORS][:12]}…: the file was changed or corrupted")
    try:
        tensors = load_file(str(tensor_file))
    except Exception as exc:  # safetensors raises its own error types for a malformed header
        raise DataError(f"cannot read {tensor_file}: {exc}") from exc
    labels = len(manifest["labels"])
    if manifest["verbalizer"] is None:
        if "head.weight" not in tensors or "head.bias" not in tensors:
            raise DataError(f"{tensor_file} has no head (head.weight, head.bias), and {MANIFEST} names no verbalizer")
        if tensors["head.weight"].ndim != 2 or tensors["head.weight"].shape[0] != labels:
            raise DataError(f"{tensor_file}: head.weight has shape {tuple(tensors['head.weight'].shape)}, "
                            f"but {MANIFEST} lists {labels} labels")
    try:
        model = PromptTuned(loaded, method=manifest["method"], length=manifest["length"], num_labels=labels,
                            target=manifest["target"], verbalizer=manifest["verbalizer"])
    except ConfigError as exc:
        raise ConfigError(f"task {path}: {exc}") from exc
    device = next(loaded.model.parameters()).device
    model.load_task_tensors(tensors)
    return model.to(device).eval()


def _check_backbone(manifest: dict[str, Any], loaded: Any, path: Path) -> None:
    stored = manifest["backbone"]
    if stored["fingerprint"] == loaded.fingerprint:
        return
    config = loaded.model.config
    shape = (stored["model_type"], stored["hidden_size"], stored["num_layers"])
    got = (str(config.model_type), int(config.hidden_size), int(config.num_hidden_layers))
    detail = "" if shape == got else (f" ({shape[0]} d={shape[1]} L={shape[2]} vs {got[0]} d={got[1]} L={got[2]})")
    raise IntegrityError(f"task {manifest['task']!r} ({path}) was tuned on weights {stored['fingerprint'][:12]}… "
                         f"({stored.get('source', '?')}), not on {loaded.source} ({loaded.fingerprint[:12]}…){detail}")


__all__ = ["MANIFEST", "TASK_FORMAT", "TENSORS", "check_out_dir", "load_task", "manifest_for", "read_task_manifest",
           "save_task"]
