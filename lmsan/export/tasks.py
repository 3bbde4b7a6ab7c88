"""Prompt-tuned tasks for a guard export: load and check them, build the module, describe them.

One task gives a graph with the task's tensors baked in (``TaskGuardModule``). Several tasks (or
``shared``) give one graph whose task tensors are inputs (``SharedTaskGuardModule``): each task's
prompt and linear head are written next to the graph as ``task-<key>.safetensors`` (numpy
safetensors, hashed in ``guard.json``) and the runtime feeds the one it serves. A token task
(``kind`` ``tokens``) is exported on its own, unpruned, with a ``token`` PV set. Imports torch
(lazily, through ``lmsan.tuning``); never mining or runtime.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmsan.errors import ConfigError
from lmsan.pvset import PVSet

log = logging.getLogger(__name__)

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MONITORS = ("bare", "task")  # where a task graph's monitor reads: the backbone without the prompt, or the task's pass
DEFAULT_MONITOR = "bare"  # the PVs were mined on the bare backbone


@dataclass
class TaskBundle:
    """The tasks of one export.

    Attributes:
        dirs: the task directories, in order (the first is the shared graph's default).
        fields: each directory's ``task.json`` (validated by ``lmsan.tuning.store``).
        tuned: each task's ``PromptTuned`` on the loaded backbone.
        shared: one graph with the task tensors as inputs (several tasks, or asked for).
    """

    dirs: list[Path]
    fields: list[dict[str, Any]]
    tuned: list[Any]
    shared: bool

    @property
    def keys(self) -> list[str]:
        """Each task's key in a shared guard: its directory name."""
        return [d.name for d in self.dirs]

    @property
    def verbalizer(self) -> bool:
        """Whether the (first) task scores the MLM head, so the backbone must load with it."""
        return bool(self.fields[0].get("verbalizer"))

    @property
    def reserved_tokens(self) -> int:
        return int(self.tuned[0].reserved_tokens)


def task_dirs(task: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    """``export_guard``'s ``task`` argument as a list of directories."""
    if task is None:
        return []
    if isinstance(task, (str, os.PathLike)):
        return [Path(task)]
    return [Path(t) for t in task]


def read_fields(dirs: list[Path], *, shared: bool) -> list[dict[str, Any]]:
    """Read every ``task.json`` (before the model loads: bad tasks fail early) and check that the
    tasks can share one graph.

    Raises:
        DataError: a malformed task directory (``lmsan.tuning.store.read_task_manifest``).
        ConfigError: tasks that cannot share a graph (method, prompt length or head position
            differ; a verbaliser head; a token task; duplicate directory names).
    """
    from lmsan.tuning.store import read_task_manifest

    fields = [read_task_manifest(d) for d in dirs]
    if not (shared or len(dirs) > 1):
        return fields
    keys = [d.name for d in dirs]
    bad = [k for k in keys if not _KEY.fullmatch(k)]
    if bad or len(set(keys)) != len(keys):
        raise ConfigError(f"shared task guards name each task by its directory: names must be distinct and "
                          f"plain (letters, digits, . _ -), got {keys}")
    first = fields[0]
    for path, other in zip(dirs, fields):
        if other.get("kind") == "tokens":
            raise ConfigError(f"task {path} is a token task: its graph answers at every position and runs the last "
                              "layer in full, so it cannot share a graph; export it on its own")
        if other.get("verbalizer"):
            raise ConfigError(f"task {path} scores the MLM head (a verbaliser): a shared graph feeds linear heads "
                              "only; export it on its own")
        for key in ("method", "length", "target"):
            if other.get(key) != first.get(key):
                raise ConfigError(f"tasks {dirs[0]} and {path} differ in {key} ({first.get(key)!r} vs "
                                  f"{other.get(key)!r}): one shared graph needs the same method, prompt length "
                                  "and head position")
    return fields


def load_bundle(dirs: list[Path], fields: list[dict[str, Any]], loaded: Any, pv_set: PVSet, *,
                shared: bool) -> TaskBundle:
    """Load every task onto ``loaded`` and check its head position against the PV set.

    Raises:
        IntegrityError: a task tuned on other weights. DataError: a broken task directory.
        ConfigError: a head position other than the PV set's target (a token task, whose
            monitor reads the first text token: any target but ``token``).
    """
    from lmsan.tuning.store import load_task

    tuned = [load_task(d, loaded) for d in dirs]
    for path, model in zip(dirs, tuned):
        if model.target == "tokens" and pv_set.target != "token":
            raise ConfigError(f"the task in {path} tags every token, and its monitor reads the first text token: it "
                              f"needs a PV set mined at 'token' (lmsan-mine --target token), not at {pv_set.target!r}")
        if model.target != "tokens" and model.target != pv_set.target:
            raise ConfigError(f"the task in {path} reads its answer at {model.target!r} but the PV set was mined at "
                              f"{pv_set.target!r}: the monitor must read the position the head reads (mine with "
                              f"--target {model.target}, or tune a task whose head reads {pv_set.target!r})")
    return TaskBundle(dirs, fields, tuned, shared or len(dirs) > 1)


def task_module(bundle: TaskBundle, pv_set: PVSet, *, use_token_types: bool, saliency: bool, prune: bool,
                monitor: str = DEFAULT_MONITOR) -> Any:
    """The exportable module: the first task, its tensors baked in or (shared) fed as inputs;
    ``monitor`` (``MONITORS``) says which pass the monitor reads (``lmsan.export.task``)."""
    from lmsan.export.task import (SharedTaskGuardModule, TaskGuardModule, TokenTypeSharedTaskGuardModule,
                                   TokenTypeTaskGuardModule)

    if bundle.shared:
        kind = TokenTypeSharedTaskGuardModule if use_token_types else SharedTaskGuardModule
    else:
        kind = TokenTypeTaskGuardModule if use_token_types else TaskGuardModule
    if prune and bundle.tuned[0].target == "tokens":
        log.info("token task: the last layer runs for every row (a tag per token), so the task's pass is not pruned%s",
                 " (the bare monitor's pass is)" if monitor == "bare" else "")
    segments = monitor == "bare" and use_token_types and any(f.get("pairs") for f in bundle.fields)
    if segments:
        log.info("pair task: the bare monitor reads each sentence of a pair on its own (as the PVs were mined)")
    return kind(bundle.tuned[0], pv_set.signs, saliency=saliency, prune=prune, monitor=monitor,
                segments=segments).eval()


def write_task_tensors(bundle: TaskBundle, directory: Path) -> None:
    """Shared graphs: write each task's graph inputs as ``task-<key>.safetensors`` into ``directory``."""
    from safetensors.numpy import save_file

    if not bundle.shared:
        return
    for key, model in zip(bundle.keys, bundle.tuned):
        tensors = model.task_tensors()
        save_file({"prompt": tensors["prompt"].float().numpy(),
                   "head_weight": tensors["head.weight"].float().numpy(),
                   "head_bias": tensors["head.bias"].float().numpy()}, str(directory / tensor_file(key)))


def tensor_file(key: str) -> str:
    """The file a shared guard keeps task ``key``'s tensors in."""
    return f"task-{key}.safetensors"


def manifest_fields(bundle: TaskBundle, monitor: str = DEFAULT_MONITOR) -> dict[str, Any]:
    """``guard.json``'s ``task`` (one baked-in task) or ``tasks`` (shared: a list, the default first);
    each section records the graph's ``monitor`` (absent in older guards: ``task``)."""
    sections = [{**_section(d, f, t), "monitor": monitor} for d, f, t in zip(bundle.dirs, bundle.fields, bundle.tuned)]
    if not bundle.shared:
        return {"task": sections[0]}
    return {"tasks": [{**section, "key": key, "file": tensor_file(key)}
                      for key, section in zip(bundle.keys, sections)]}


def _section(task: Path, fields: dict[str, Any], tuned: Any) -> dict[str, Any]:
    """What the runtime needs to name a task's predictions, and where the task came from.

    ``reserved_tokens`` template positions are built inside the graph (so ``max_length`` is that
    much below the model's), and the input needs no [MASK] of its own.
    """
    return {
        "name": fields["task"], "kind": fields.get("kind", "sequence"), "labels": list(fields["labels"]),
        "pairs": bool(fields.get("pairs", False)),
        "method": tuned.method, "length": tuned.length, "head_position": tuned.target,
        "head": "verbalizer" if tuned.verbalizer else "linear", "reserved_tokens": tuned.reserved_tokens,
        "source": str(task), "files": dict(fields["files"]), "metrics": fields.get("metrics"),
    }


def extra_feed(module: Any) -> dict[str, np.ndarray]:
    """A shared module's task-tensor inputs (its traced task's own), for parity; {} otherwise."""
    names = getattr(module, "extra_inputs", ())
    return {name: t.numpy() for name, t in zip(names, module.example_extra())} if names else {}
