"""Guarded task graphs: one ONNX graph answers a prompt-tuned task and checks the input against
the PVs (monitor ``bare``: a second pass of the backbone without the prompt, the default; monitor
``task``: the task's own pass); the runtime returns the answer for the sanitized input.

On the scaled random tiny BERT of ``test_export_guard`` (d=32: fast to export), with tasks tuned
for two epochs on 64 SMS messages: accuracy does not matter here, the functions do. PV 0 is the
sign pattern of ANCHOR's feature where the default (bare) monitor reads it, so ANCHOR triggers the
task graph at threshold 0.95 and removing one of its words clears it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_export_guard import ANCHOR, tiny_model

from lmsan.errors import ConfigError, DataError, InputError, IntegrityError
from lmsan.pvset import PVSet

TEXTS = ["free entry in a weekly competition, text win now", "are we still meeting at six?", ANCHOR,
         "call me when you get home"]
PAIRS = ["ok", "sure, see you there", "b", "later"]
VARIANTS = {  # name -> tuning config overrides
    "prefix": dict(method="prefix", length=4),
    "prompt": dict(method="prompt", length=2),
    "prompt-verbalizer": dict(method="prompt", length=2, head="verbalizer"),
}


def _task(variant: str, out: Path, model: Path | None = None) -> Path:
    from lmsan.models import load_model
    from lmsan.tuning.config import TuningConfig
    from lmsan.tuning.store import save_task
    from lmsan.tuning.tasks import task_data
    from lmsan.tuning.train import tune

    config = TuningConfig(task="sms-spam", epochs=2, train_size=64, test_size=16, max_length=32, **VARIANTS[variant])
    loaded = load_model(model or tiny_model(), with_mlm_head=config.head == "verbalizer")
    tuned = tune(loaded, task_data("sms-spam", train_size=64, test_size=16), config, progress=False)
    return save_task(out / f"task-{variant}", tuned, loaded)


def _tuned(task_dir: Path, model: Path | None = None):
    from lmsan.models import load_model
    from lmsan.tuning.store import load_task, read_task_manifest

    loaded = load_model(model or tiny_model(), attn_implementation="eager",
                        with_mlm_head=bool(read_task_manifest(task_dir).get("verbalizer")))
    return loaded, load_task(task_dir, loaded)


def monitor_feature(tuned, encoding: dict, *, bare: bool = True):
    """float [B, d]: the features the monitor reads, from the bare backbone (the template with a
    prompt of length 0) or from the task's own pass."""
    import torch

    with torch.no_grad():
        if not bare:
            return tuned(**encoding)[1].numpy()
        inputs = tuned.backbone_inputs(encoding["input_ids"], encoding["attention_mask"],
                                       encoding.get("token_type_ids"), bare=True)
        return tuned.backbone(**inputs.kwargs).last_hidden_state[:, inputs.target].numpy()


def _anchor_pvs(task_dir: Path, *, bare: bool = True) -> PVSet:
    """PV 0: the signs of ANCHOR's feature where the monitor reads (``bare``: the backbone without
    the prompt; else the task's head position); then two random PVs."""
    loaded, tuned = _tuned(task_dir)
    feature = monitor_feature(tuned, dict(loaded.tokenizer([ANCHOR], return_tensors="pt")), bare=bare)[0]
    rng = np.random.default_rng(0)
    vectors = np.stack([np.where(feature >= 0, 1.0, -1.0), *rng.standard_normal((2, feature.size))])
    return PVSet(vectors.astype(np.float32), target=tuned.target)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("tasks")
    return {variant: _task(variant, out) for variant in VARIANTS}


@pytest.fixture(scope="module")
def guards(tasks, tmp_path_factory) -> dict[str, Path]:
    from lmsan.export import export_guard

    out = tmp_path_factory.mktemp("guards")
    return {variant: export_guard(tiny_model(), _anchor_pvs(task), out / variant, task=task).path
            for variant, task in tasks.items()}


@pytest.mark.parametrize("prune", [True, False])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_task_graph_logits_match_pytorch(variant, prune, tasks, tmp_path):
    import onnxruntime as ort
    import torch

    from lmsan.export import export_guard

    result = export_guard(tiny_model(), _anchor_pvs(tasks[variant]), tmp_path / "g", task=tasks[variant], prune=prune)
    assert result.parity.passed and result.parity.prediction_mismatches == 0
    assert result.manifest["pruned"] is prune
    assert result.manifest["outputs"][-1] == "logits"
    loaded, tuned = _tuned(tasks[variant])
    session = ort.InferenceSession(str(result.path / "model.onnx"), providers=["CPUExecutionProvider"])
    for second in (None, PAIRS):
        batch = loaded.tokenizer(TEXTS, second, padding=True, return_tensors="np")
        feed = {k: v.astype(np.int64) for k, v in batch.items()} | {"threshold": np.array(0.8, np.float32)}
        logits = session.run(["logits"], feed)[0]
        with torch.no_grad():
            ref = tuned(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()})[0].numpy()
        assert logits.shape == (len(TEXTS), 2)
        assert np.abs(logits - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1.0)


def test_manifest_describes_the_task(guards, tasks):
    from lmsan.export.pipeline import max_tokens
    from lmsan.models import load_model

    manifest = json.loads((guards["prompt"] / "guard.json").read_text())
    task = manifest["task"]
    assert task["labels"] == ["ham", "spam"] and task["method"] == "prompt" and task["head_position"] == "mask"
    assert task["reserved_tokens"] == 3  # two prompt vectors and the [MASK]
    assert manifest["max_length"] == max_tokens(load_model(tiny_model())) - 3  # the template's share
    stored = json.loads((tasks["prompt"] / "task.json").read_text())
    assert task["files"] == stored["files"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_clean_inputs_get_the_pytorch_prediction(variant, guards, tasks):
    import torch

    from lmsan.runtime import Guard

    guard = Guard.load(guards[variant], threshold=0.95)
    assert guard.labels == ("ham", "spam")
    texts = [t for t in TEXTS if t != ANCHOR]
    seconds = PAIRS[: len(texts)]
    results = guard.scan_batch(texts + list(zip(texts, seconds)))
    loaded, tuned = _tuned(tasks[variant])
    with torch.no_grad():
        single = tuned(**loaded.tokenizer(texts, padding=True, return_tensors="pt"))[0]
        pairs = tuned(**loaded.tokenizer(texts, seconds, padding=True, return_tensors="pt"))[0]
    expected = [guard.labels[i] for i in torch.cat([single, pairs]).argmax(dim=1).tolist()]
    assert not any(r.triggered for r in results)
    assert [r.prediction for r in results] == expected
    probabilities = torch.cat([single, pairs]).softmax(dim=1).numpy()
    assert np.allclose([r.scores for r in results], probabilities, atol=1e-4)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_triggered_input_answers_for_its_sanitized_text_without_an_extra_pass(variant, guards):
    from lmsan.runtime import Guard
    from lmsan.runtime.manifest import GuardManifest

    guard = Guard.load(guards[variant], threshold=0.95)
    calls = []
    detect = guard._detect
    guard._detect = lambda *a, **kw: calls.append(1) or detect(*a, **kw)
    result = guard.scan(ANCHOR)
    spent = len(calls)
    assert result.triggered and not result.rejected and result.removed
    assert result.sanitized != ANCHOR and result.prediction in guard.labels
    rescan = guard.scan(result.sanitized)
    assert not rescan.triggered and rescan.prediction == result.prediction
    assert np.allclose(rescan.scores, result.scores, atol=1e-5)
    # the same guard without its task answers nothing and makes exactly as many session calls
    bare = Guard.load(guards[variant], threshold=0.95)
    bare.manifest = replace(bare.manifest, labels=None, task=None)
    bare_calls = []
    bare_detect = bare._detect
    bare._detect = lambda *a, **kw: bare_calls.append(1) or bare_detect(*a, **kw)
    assert bare.scan(ANCHOR).prediction is None
    assert spent == len(bare_calls)
    assert isinstance(bare.manifest, GuardManifest)


def test_rejected_and_unsanitized_triggered_inputs_get_no_prediction(guards):
    from lmsan.runtime import Guard

    # without the saliency guess one trial cannot clear ANCHOR (with it, the bare monitor's guess does)
    capped = Guard.load(guards["prefix"], threshold=0.95, max_trials=1, saliency=False)
    rejected = capped.scan(ANCHOR)
    assert rejected.rejected and rejected.prediction is None and rejected.scores is None
    detected = Guard.load(guards["prefix"], threshold=0.95).scan(ANCHOR, sanitize=False)
    assert detected.triggered and detected.prediction is None
    opened = Guard.load(guards["prefix"], threshold=0.95, max_trials=1, saliency=False, fail_open=True).scan(ANCHOR)
    assert opened.triggered and not opened.rejected and opened.sanitized == ANCHOR
    assert opened.prediction in ("ham", "spam")  # fail open: the input passes, answered as it is


def test_a_task_guard_reads_a_long_input_as_a_truncating_model_does(guards):
    """Only the first window reaches the task (and the monitor): the long input scores and answers
    as that window does, and anything beyond it, a trigger too, never reaches the task."""
    from lmsan.runtime import Guard

    guard = Guard.load(guards["prefix"], threshold=0.95)
    long = " ".join(f"w{i}" for i in range(100))
    a, b = guard.encoder.windows(long)[0]
    assert b < len(long)
    whole, first = guard.scan(long), guard.scan(long[a:b])
    assert (whole.match, whole.prediction, whole.scores) == (first.match, first.prediction, first.scores)
    assert whole.sanitized == long
    beyond = guard.scan(f"{long} {ANCHOR}")
    assert not beyond.triggered and beyond.match == whole.match and beyond.prediction == whole.prediction
    with pytest.raises(InputError, match="sentence pair"):
        guard.scan((long, long))


def test_a_task_tuned_on_other_weights_is_refused(tasks, tmp_path):
    from safetensors.torch import load_file, save_file

    from lmsan.export import export_guard

    other = tmp_path / "other"
    shutil.copytree(tiny_model(), other)
    weights = load_file(str(other / "model.safetensors"))
    name = next(k for k in weights if k.endswith("word_embeddings.weight"))
    weights[name][0, 0] += 1.0
    save_file(weights, str(other / "model.safetensors"))
    pvs = _anchor_pvs(tasks["prefix"])
    with pytest.raises(IntegrityError, match="tuned on"):
        export_guard(other, pvs, tmp_path / "guard", task=tasks["prefix"])
    assert not (tmp_path / "guard").exists()


def test_the_task_head_must_read_the_pv_target(tasks, tmp_path):
    from lmsan.export import export_guard

    pvs = _anchor_pvs(tasks["prefix"])
    at_mask = PVSet(pvs.vectors, target="mask")
    with pytest.raises(ConfigError, match="the monitor must read the position the head reads"):
        export_guard(tiny_model(), at_mask, tmp_path / "guard", task=tasks["prefix"])
    assert not (tmp_path / "guard").exists()


def test_a_task_directory_without_its_head_is_refused(tasks, tmp_path):
    from safetensors.torch import load_file, save_file

    from lmsan.export import export_guard
    from lmsan.files import sha256_file

    broken = tmp_path / "task"
    shutil.copytree(tasks["prefix"], broken)
    tensors = load_file(str(broken / "task.safetensors"))
    save_file({"prompt": tensors["prompt"]}, str(broken / "task.safetensors"))
    manifest = json.loads((broken / "task.json").read_text())
    manifest["files"]["task.safetensors"] = sha256_file(broken / "task.safetensors")
    (broken / "task.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="no head"):
        export_guard(tiny_model(), _anchor_pvs(tasks["prefix"]), tmp_path / "guard", task=broken)
    assert not (tmp_path / "guard").exists()


def edited_task_copy(guard_dir: Path, edit, copy: Path) -> Path:
    """Copy ``guard_dir`` to ``copy`` (replaced), apply ``edit`` to its manifest's ``task`` and re-sign it."""
    from lmsan.files import json_digest

    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(guard_dir, copy)
    manifest = json.loads((copy / "guard.json").read_text())
    edit(manifest["task"])
    manifest["digest"] = json_digest(manifest, exclude="digest")
    (copy / "guard.json").write_text(json.dumps(manifest))
    return copy


def test_manifest_task_fields_are_validated(guards, tmp_path):
    from lmsan.runtime import Guard

    for edit, message in ((lambda t: t.update(labels=["only"]), "task.labels"),
                          (lambda t: t.update(labels=["a", "a"]), "task.labels"),
                          (lambda t: t.pop("reserved_tokens"), "task.reserved_tokens")):
        copy = edited_task_copy(guards["prefix"], edit, tmp_path / "guard")
        with pytest.raises(DataError, match=message):
            Guard.load(copy)


def test_a_task_manifest_needs_a_logits_output(guards, tmp_path):
    from lmsan.files import json_digest
    from lmsan.runtime import Guard

    copy = tmp_path / "guard"
    shutil.copytree(guards["prefix"], copy)
    bare = json.loads((Path(str(guards["prefix"])) / "guard.json").read_text())
    manifest = dict(bare)
    manifest["outputs"] = [o for o in bare["outputs"] if o != "logits"]
    manifest["digest"] = json_digest(manifest, exclude="digest")
    (copy / "guard.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="logits"):
        Guard.load(copy)


def test_lmsan_guard_prints_the_prediction(guards, capsys):
    from lmsan.cli import guard as guard_cli

    with pytest.raises(SystemExit) as exit_info:
        guard_cli.main([str(guards["prefix"]), "--threshold", "0.95", "are we still meeting at six?", ANCHOR])
    lines = capsys.readouterr().out.strip().splitlines()
    assert exit_info.value.code == 1  # one input triggered
    assert lines[0].startswith("clean\t") and "\tlabel=" in lines[0]
    assert lines[1].startswith("TRIGGERED\t") and "\tlabel=" in lines[1]


@pytest.fixture(scope="module")
def shared(tasks, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """One graph for two linear-head prefix tasks (different label counts): (guard dir, task dirs)."""
    from lmsan.export import export_guard
    from lmsan.models import load_model
    from lmsan.tuning.config import TuningConfig
    from lmsan.tuning.store import save_task
    from lmsan.tuning.tasks import task_data
    from lmsan.tuning.train import tune

    out = tmp_path_factory.mktemp("shared")
    config = TuningConfig(task="bbcnews", method="prefix", length=4, epochs=1, train_size=40, test_size=10,
                          max_length=32)
    loaded = load_model(tiny_model())
    topics = save_task(out / "topics", tune(loaded, task_data("bbcnews", train_size=40, test_size=10), config,
                                            progress=False), loaded)
    dirs = {"spam": out / "spam", "topics": topics}
    shutil.copytree(tasks["prefix"], dirs["spam"])
    guard = export_guard(tiny_model(), _anchor_pvs(dirs["spam"]), out / "guard", task=[dirs["spam"], topics]).path
    return guard, dirs


def test_a_shared_graph_serves_each_task_like_its_own_graph(shared, guards):
    from lmsan.runtime import Guard

    guard_dir, dirs = shared
    manifest = json.loads((guard_dir / "guard.json").read_text())
    assert [t["key"] for t in manifest["tasks"]] == ["spam", "topics"] and "task" not in manifest
    assert [t["monitor"] for t in manifest["tasks"]] == ["bare", "bare"]  # one bare pass monitors every task
    assert manifest["inputs"][-3:] == ["prompt", "head_weight", "head_bias"]
    spam, topics = Guard.load(guard_dir, threshold=0.95), Guard.load(guard_dir, task="topics", threshold=0.95)
    assert spam.labels == ("ham", "spam") and len(topics.labels) == 5
    own = Guard.load(guards["prefix"], threshold=0.95)  # the same spam task, tensors baked in
    texts = [t for t in TEXTS if t != ANCHOR]
    for a, b in zip(spam.scan_batch(texts), own.scan_batch(texts)):
        assert a.prediction == b.prediction and np.allclose(a.scores, b.scores, atol=1e-5)
        assert a.match == pytest.approx(b.match, abs=1e-6)
    assert all(r.prediction in topics.labels and len(r.scores) == 5 for r in topics.scan_batch(texts))
    cleaned = spam.scan(ANCHOR)
    assert cleaned.triggered and cleaned.prediction == own.scan(ANCHOR).prediction


def test_shared_guards_refuse_unknown_tasks_and_mismatched_tensors(shared, guards, tmp_path):
    from safetensors.numpy import load_file, save_file

    from lmsan.files import json_digest
    from lmsan.runtime import Guard

    guard_dir, _ = shared
    with pytest.raises(ConfigError, match="serves spam, topics"):
        Guard.load(guard_dir, task="nope")
    with pytest.raises(ConfigError, match="serves no task"):
        Guard.load(tiny_guard_dir(), task="spam")
    copy = tmp_path / "guard"
    shutil.copytree(guard_dir, copy)
    tensors = load_file(str(copy / "task-topics.safetensors"))
    save_file({**tensors, "head_bias": tensors["head_bias"][:2]}, str(copy / "task-topics.safetensors"))
    with pytest.raises(IntegrityError):  # the hash binds the file
        Guard.load(copy, task="topics")
    manifest = json.loads((copy / "guard.json").read_text())
    from lmsan.files import sha256_file

    manifest["files"]["task-topics.safetensors"] = sha256_file(copy / "task-topics.safetensors")
    manifest["digest"] = json_digest(manifest, exclude="digest")
    (copy / "guard.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="a head for 5 labels"):
        Guard.load(copy, task="topics")


def test_tasks_that_cannot_share_a_graph_are_refused(tasks, tmp_path):
    from lmsan.export import export_guard

    pvs = _anchor_pvs(tasks["prefix"])
    with pytest.raises(ConfigError, match="differ in method"):
        export_guard(tiny_model(), pvs, tmp_path / "g", task=[tasks["prefix"], tasks["prompt"]])
    with pytest.raises(ConfigError, match="verbaliser"):
        export_guard(tiny_model(), pvs, tmp_path / "g", task=[tasks["prompt-verbalizer"]], shared=True)
    assert not (tmp_path / "g").exists()


def tiny_guard_dir() -> Path:
    from test_export_guard import tiny_guard

    return tiny_guard(features=True)


@pytest.mark.parametrize("kw", [{"int8": True}, {"fp16": True}, {"int8": True, "shared": True}])
def test_int8_and_fp16_task_graphs_keep_the_answers(kw, tasks, tmp_path):
    from lmsan.export import export_guard
    from lmsan.runtime import Guard

    pvs = _anchor_pvs(tasks["prefix"])
    result = export_guard(tiny_model(), pvs, tmp_path / "g", task=tasks["prefix"], **kw)
    assert result.parity.passed and result.parity.prediction_mismatches == 0
    assert result.parity.logits_max_rel_diff <= result.parity.rtol
    reference = export_guard(tiny_model(), pvs, tmp_path / "ref", task=tasks["prefix"]).path
    texts = [t for t in TEXTS if t != ANCHOR]
    quantized = [r.prediction for r in Guard.load(result.path, threshold=0.95).scan_batch(texts)]
    assert quantized == [r.prediction for r in Guard.load(reference, threshold=0.95).scan_batch(texts)]


# ---- the bare monitor ---------------------------------------------------------------------------------
def _run(guard: Path, batch: dict, names=("match", "pv_index", "saliency", "logits")) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(guard / "model.onnx"), providers=["CPUExecutionProvider"])
    wanted = [n for n in names if n in {o.name for o in session.get_outputs()}]
    feed = {k: np.asarray(v, np.int64) for k, v in batch.items()} | {"threshold": np.array(0.8, np.float32)}
    return dict(zip(wanted, session.run(wanted, feed)))


@pytest.mark.parametrize("prune", [True, False])
@pytest.mark.parametrize("variant", ["prefix", "prompt"])
def test_the_bare_monitor_reads_what_a_bare_guard_reads(variant, prune, tasks, tmp_path):
    """The task graph's match / pv_index (and saliency) equal a guard exported on the bare backbone
    at the same target; a P-tuning task's bare guard gets its input with the mask token first,
    as P-tuning's template puts its [MASK] right after [CLS]. The logits are the task's."""
    import torch

    from lmsan.export import export_guard

    rng = np.random.default_rng(1)
    pvs = PVSet(np.concatenate([_anchor_pvs(tasks[variant]).vectors, rng.standard_normal((5, 32))]).astype(np.float32),
                target=_anchor_pvs(tasks[variant]).target)
    task_guard = export_guard(tiny_model(), pvs, tmp_path / "task", task=tasks[variant], prune=prune)
    bare_guard = export_guard(tiny_model(), pvs, tmp_path / "bare", prune=prune)
    assert task_guard.manifest["task"]["monitor"] == "bare" and task_guard.parity.passed
    loaded, tuned = _tuned(tasks[variant])
    mask = loaded.tokenizer.mask_token
    for second in (None, PAIRS):
        batch = dict(loaded.tokenizer(TEXTS, second, padding=True, return_tensors="np"))
        firsts = [f"{mask} {t}" for t in TEXTS] if variant == "prompt" else TEXTS
        bare_batch = dict(loaded.tokenizer(firsts, second, padding=True, return_tensors="np"))
        ours, theirs = _run(task_guard.path, batch), _run(bare_guard.path, bare_batch)
        assert np.array_equal(ours["pv_index"], theirs["pv_index"])
        assert np.allclose(ours["match"], theirs["match"], atol=1e-6)
        saliency = theirs["saliency"]
        if variant == "prompt":  # the bare guard's mask token is the template's, not an input token
            saliency = np.delete(saliency, 1, axis=1)
        assert np.allclose(ours["saliency"], saliency[:, : ours["saliency"].shape[1]], atol=1e-5)
        with torch.no_grad():
            ref = tuned(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()})[0].numpy()
        assert np.abs(ours["logits"] - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1.0)
    assert _strict_guard(task_guard.path).scan(ANCHOR).triggered


def _strict_guard(path: Path):
    from lmsan.runtime import Guard

    return Guard.load(path, threshold=0.95)


def test_the_task_monitor_keeps_the_logits_and_reads_the_prompted_pass(tasks, tmp_path):
    from lmsan.export import export_guard
    from lmsan.runtime.manifest import GuardManifest

    pvs = _anchor_pvs(tasks["prompt"], bare=False)
    one_pass = export_guard(tiny_model(), pvs, tmp_path / "task", task=tasks["prompt"], monitor="task")
    two_pass = export_guard(tiny_model(), pvs, tmp_path / "bare", task=tasks["prompt"], monitor="bare")
    assert one_pass.manifest["task"]["monitor"] == "task" and two_pass.manifest["task"]["monitor"] == "bare"
    assert GuardManifest.load(one_pass.path).monitor == "task" and GuardManifest.load(two_pass.path).monitor == "bare"
    loaded, tuned = _tuned(tasks["prompt"])
    batch = dict(loaded.tokenizer(TEXTS, padding=True, return_tensors="np"))
    a, b = _run(one_pass.path, batch), _run(two_pass.path, batch)
    assert np.allclose(a["logits"], b["logits"], atol=1e-5)
    import torch

    expected = monitor_feature(tuned, {k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()}, bare=False)
    signs = np.where(expected >= 0, 1, -1) @ np.where(pvs.vectors >= 0, 1, -1).T  # [B, K] = 2 N - d
    assert np.allclose(a["match"], (signs.max(axis=1) + 32) / 64, atol=1e-6)
    assert _strict_guard(one_pass.path).scan(ANCHOR).triggered  # PV 0 is ANCHOR's prompted feature


def test_the_monitor_field_round_trips_and_is_validated(guards, tmp_path):
    from lmsan.runtime import Guard
    from lmsan.runtime.manifest import GuardManifest

    assert json.loads((guards["prefix"] / "guard.json").read_text())["task"]["monitor"] == "bare"
    assert Guard.load(guards["prefix"]).manifest.monitor == "bare"
    assert GuardManifest.load(tiny_guard_dir()).monitor is None
    for edit, outcome in ((lambda t: t.pop("monitor"), "task"), (lambda t: t.update(monitor="task"), "task"),
                          (lambda t: t.update(monitor="both"), DataError)):
        copy = edited_task_copy(guards["prefix"], edit, tmp_path / "guard")
        if outcome is DataError:
            with pytest.raises(DataError, match="task.monitor"):
                GuardManifest.load(copy)
        else:
            assert GuardManifest.load(copy).monitor == outcome  # older guards: the task's own pass


def test_a_bad_monitor_is_a_usage_error(tasks, tmp_path, capsys):
    from lmsan.cli import export as export_cli
    from lmsan.export import export_guard

    pvs = _anchor_pvs(tasks["prefix"]).save(tmp_path / "pvs.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        export_cli.main([str(tiny_model()), "--pvs", str(pvs), "--out", str(tmp_path / "g"), "--task",
                         str(tasks["prefix"]), "--monitor", "both"])
    assert exit_info.value.code == 4 and "--monitor" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown monitor"):
        export_guard(tiny_model(), pvs, tmp_path / "g", task=tasks["prefix"], monitor="both")
    assert not (tmp_path / "g").exists()
    from lmsan.export.tasks import MONITORS

    assert export_cli.MONITORS == MONITORS  # the CLI keeps its own copy (no torch on --help)
    from lmsan.pvset import MATCH_THRESHOLD

    assert export_cli.MATCH_THRESHOLD == MATCH_THRESHOLD  # and of T_match (no numpy on --help)


def test_the_cli_exports_the_monitor_it_is_given(tasks, tmp_path):
    from lmsan.cli import export as export_cli

    pvs = _anchor_pvs(tasks["prefix"], bare=False).save(tmp_path / "pvs.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        export_cli.main([str(tiny_model()), "--pvs", str(pvs), "--out", str(tmp_path / "g"), "--task",
                         str(tasks["prefix"]), "--monitor", "task", "-q"])
    assert exit_info.value.code == 0
    assert json.loads((tmp_path / "g" / "guard.json").read_text())["task"]["monitor"] == "task"


def test_a_task_tuned_on_your_own_file_is_guarded_end_to_end(tmp_path, capsys):
    """``lmsan-tune --data`` -> ``lmsan-export --task`` -> ``lmsan-guard``: the graph answers with
    the file's own label names, for the sanitized text of a triggered input."""
    from lmsan.cli import export as export_cli
    from lmsan.cli import guard as guard_cli
    from lmsan.cli import tune as tune_cli
    from lmsan.data import load_labelled
    from lmsan.runtime import Guard

    def run(main, args: list[str]) -> int:
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        return exit_info.value.code

    sms = load_labelled("sms-spam")
    rows = [json.dumps({"text": text, "label": "junk" if label else "fine"})
            for text, label in list(zip(sms.texts, sms.labels))[:80]]
    (tmp_path / "inbox.jsonl").write_text("\n".join(rows) + "\n")
    task_dir, guard_dir, pvs = tmp_path / "task", tmp_path / "guard", tmp_path / "pvs.safetensors"
    assert run(tune_cli.main, [str(tiny_model()), "--data", str(tmp_path / "inbox.jsonl"), "--out", str(task_dir),
                               "--epochs", "1", "--length", "4", "--max-length", "32", "--device", "cpu", "-q"]) == 0
    assert json.loads((task_dir / "task.json").read_text())["task"] == "inbox"
    _anchor_pvs(task_dir).save(pvs)
    assert run(export_cli.main, [str(tiny_model()), "--pvs", str(pvs), "--task", str(task_dir), "--out",
                                 str(guard_dir), "-q"]) == 0, capsys.readouterr().err
    guard = Guard.load(guard_dir, threshold=0.95)
    assert guard.labels == ("fine", "junk")
    result = guard.scan(ANCHOR)
    assert result.triggered and not result.rejected and result.prediction in guard.labels
    capsys.readouterr()
    assert run(guard_cli.main, [str(guard_dir), "--threshold", "0.95", "are we still meeting at six?", ANCHOR]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("\tlabel=fine" in line or "\tlabel=junk" in line for line in lines)
