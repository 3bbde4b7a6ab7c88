"""Token classification under P-tuning v2 (``oanc-pos``), guarded end to end: the task data, the
tagging metrics, tuning that learns, the exported token graph against PyTorch, the runtime's
per-word answer for the sanitized text, and the clear errors.

Learning runs on the cached pretrained-like tiny BERT (``default_tiny``); the export and runtime
tests on the scaled random tiny BERT of ``test_export_guard`` (d=32: fast to export) with a task
tuned for two epochs (accuracy does not matter there, the mechanics do). PV 0 is the sign pattern
of ANCHOR's first-text-token feature where the default (bare) monitor reads it, the backbone
without the prefix, so ANCHOR triggers at threshold 0.95.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_export_guard import ANCHOR, tiny_model

from lmsan.errors import ConfigError, DataError
from lmsan.eval.metrics import MetricsError, align_tags, tag_flip_rate, token_accuracy, token_f1
from lmsan.pvset import PVSet
from lmsan.tuning import TuningConfig, task_data

TEXTS = ["Consumer grievances are particularly rich in these audacious revolutions .",
         "The answer could be yes , said the editor on Monday .", "ok then"]


# ---- data and metrics -------------------------------------------------------------------------------
def test_tagged_sentences_keep_plain_words_and_coarse_tags():
    from lmsan.tuning.tasks import tagged_sentences

    lines = ["The/DT cats/NNS sat/VBD on/IN mats/NNS ./.",
             "He/PRP did/VBD n't/RB go/VB home/NN ./.",            # a clitic: dropped
             "Prices/NNS rose/VBD 5/CD -LRB-/-LRB- or/CC so/RB -RRB-/-RRB- ./.",
             "Too/RB short/JJ ./.",                                  # under 5 words: dropped
             "The/DT cats/NNS sat/VBD on/IN mats/NNS ./.",           # a repeat: dropped
             "Oh/UH the/DT U.S./NNP said/VBD so/RB ./."]             # U.S.: dropped
    rows = tagged_sentences(lines)
    assert rows == [(("The", "cats", "sat", "on", "mats", "."), ("DET", "NOUN", "VERB", "ADP", "NOUN", "PUNCT")),
                    (("Prices", "rose", "5", "(", "or", "so", ")", "."),
                     ("NOUN", "VERB", "NUM", "PUNCT", "CONJ", "ADV", "PUNCT", "PUNCT"))]


def test_oanc_pos_splits_are_disjoint_and_deterministic():
    data = task_data("oanc-pos", train_size=120, test_size=40, seed=3)
    assert data.task.kind == "tokens" and len(data.train) == 120 and len(data.test) == 40
    assert not set(data.train.words) & set(data.test.words)
    assert all(5 <= len(w) <= 40 and len(w) == len(t) for w, t in zip(data.train.words, data.train.tags))
    assert data.test.texts[0] == " ".join(data.test.words[0]) and data.test.text_pairs is None
    assert task_data("oanc-pos", train_size=120, test_size=40, seed=3) == data
    assert task_data("oanc-pos", train_size=120, test_size=40, seed=4).test != data.test


def test_token_metrics_by_hand():
    gold = [["N", "V", "N"], ["D", "N"]]
    pred = [["N", "N", "N"], ["D", None]]
    # N: tp 2, fp 1, fn 1 -> 2/3; V: tp 0, fn 1 -> 0; D: tp 1 -> 1
    assert token_f1(pred, gold) == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert token_f1(pred, gold, labels=["N", "D"]) == pytest.approx((2 / 3 + 1) / 2)
    assert token_accuracy(pred, gold) == pytest.approx(3 / 5)
    assert token_f1([], []) is None
    with pytest.raises(MetricsError, match="one tag per gold word"):
        token_f1([["N"], ["D", "N"]], gold)
    # the trigger "cf" is left out; a dropped word has no tag
    assert align_tags(["a", "cf", "b", "c"], ["X", "T", "Y", "Z"], ["a", "b", "c"]) == ["X", "Y", "Z"]
    assert align_tags(["a", "c"], ["X", "Z"], ["a", "b", "c"]) == ["X", None, "Z"]
    clean = [["N", "V", "N"], ["N", "N"], ["V", "V", "V"]]       # sentence 3 has no correct word
    triggered = [["N", "V", "N"], ["D", "N"], ["N", "N", "N"]]
    gold3 = [["N", "V", "N"], ["D", "N"], ["N", "N", "N"]]
    assert tag_flip_rate(gold3, clean, triggered) == 0.0  # a wrong tag that becomes right is no flip
    assert tag_flip_rate(gold3, clean, [["N", "N", "N"], ["D", None], ["N"] * 3]) == 1.0
    assert tag_flip_rate([["N"]], [["V"]], [["V"]]) is None


# ---- config and tuning ------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, message", [
    ({"method": "prompt"}, "needs method prefix"),
    ({"method": "prompt", "head": "verbalizer", "target": "tokens"}, "needs method prefix"),
    ({"head": "verbalizer"}, "needs a linear head"),
    ({"target": "cls"}, "target tokens"),
])
def test_token_task_configs_are_refused(changes, message):
    with pytest.raises(ConfigError) as info:
        TuningConfig.from_dict({"task": "oanc-pos", **changes})
    assert message in str(info.value)
    with pytest.raises(ConfigError, match="sequence task"):
        TuningConfig.from_dict({"task": "sms-spam", "target": "tokens"})
    assert TuningConfig.preset("oanc-pos").target == "tokens"


@pytest.fixture(scope="module")
def pretrained():
    import torch

    from lmsan.models import load_model
    from lmsan.models.zoo import default_tiny

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(default_tiny("bert").path)
    torch.set_num_threads(threads)


def test_prefix_tuning_tags_oanc_pos_well_above_the_majority_tag(pretrained):
    from lmsan.tuning import tune

    config = TuningConfig.preset("oanc-pos", "prefix", epochs=4, train_size=200, test_size=100, max_length=48)
    tuned = tune(pretrained, task_data("oanc-pos", train_size=200, test_size=100), config, progress=False)
    metrics = tuned.metrics
    # measured: accuracy 0.59, F1 0.52 (chance, the majority tag's share: 0.16)
    assert metrics["chance"] < 0.25 and metrics["test_accuracy"] >= 2 * metrics["chance"] + 0.1, metrics
    assert metrics["test_f1"] >= 0.35 and metrics["loss_per_epoch"][-1] < metrics["loss_per_epoch"][0]


def test_prompt_tuned_refuses_token_heads_it_cannot_build(pretrained):
    from lmsan.tuning.model import PromptTuned

    with pytest.raises(ConfigError, match="needs method prefix"):
        PromptTuned(pretrained, method="prompt", length=2, num_labels=3, target="tokens")


# ---- export and runtime ---------------------------------------------------------------------------
def _tuned(task_dir: Path):
    from lmsan.models import load_model
    from lmsan.tuning.store import load_task

    loaded = load_model(tiny_model(), attn_implementation="eager")
    return loaded, load_task(task_dir, loaded)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    from lmsan.models import load_model
    from lmsan.tuning.store import save_task
    from lmsan.tuning.train import tune

    config = TuningConfig(task="oanc-pos", method="prefix", length=4, epochs=2, train_size=64, test_size=16,
                          max_length=32)
    loaded = load_model(tiny_model())
    tuned = tune(loaded, task_data("oanc-pos", train_size=64, test_size=16), config, progress=False)
    return save_task(tmp_path_factory.mktemp("tasks") / "pos", tuned, loaded)


def _anchor_pvs(task_dir: Path, *, bare: bool = True) -> PVSet:
    """PV 0: the signs of ANCHOR's first-text-token feature (``bare``: of the backbone without the
    prefix; else of the task's own pass); then two random PVs."""
    from test_export_task import monitor_feature

    loaded, tuned = _tuned(task_dir)
    feature = monitor_feature(tuned, dict(loaded.tokenizer([ANCHOR], return_tensors="pt")), bare=bare)[0]
    rng = np.random.default_rng(0)
    vectors = np.stack([np.where(feature >= 0, 1.0, -1.0), *rng.standard_normal((2, feature.size))])
    return PVSet(vectors.astype(np.float32), target="token")


@pytest.fixture(scope="module")
def exported(task_dir, tmp_path_factory):
    from lmsan.export import export_guard

    return export_guard(tiny_model(), _anchor_pvs(task_dir), tmp_path_factory.mktemp("guards") / "pos", task=task_dir)


def test_token_graph_matches_pytorch_token_logits(exported, task_dir):
    import onnxruntime as ort
    import torch

    assert exported.parity.passed and exported.parity.prediction_mismatches == 0
    manifest = exported.manifest
    assert manifest["pruned"] is False and manifest["task"]["kind"] == "tokens"  # the tagging pass runs in full
    assert manifest["task"]["monitor"] == "bare" and "saliency" in manifest["outputs"]  # the bare pass: one row
    assert manifest["task"]["head_position"] == "tokens" and manifest["target"] == "token"
    loaded, tuned = _tuned(task_dir)
    batch = loaded.tokenizer(TEXTS, padding=True, return_tensors="np")
    feed = {k: v.astype(np.int64) for k, v in batch.items()} | {"threshold": np.array(0.8, np.float32)}
    session = ort.InferenceSession(str(exported.path / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], feed)[0]
    with torch.no_grad():
        ref = tuned(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()})[0].numpy()
    assert logits.shape == ref.shape == (len(TEXTS), batch["input_ids"].shape[1], 12)
    real = batch["attention_mask"].astype(bool)
    assert np.abs(logits[real] - ref[real]).max() <= 1e-4 * max(np.abs(ref[real]).max(), 1.0)
    assert (logits[real].argmax(-1) == ref[real].argmax(-1)).all()


def test_scan_tags_every_word_as_pytorch_does(exported, task_dir):
    import torch

    from lmsan.runtime import Guard

    guard = Guard.load(exported.path, threshold=0.95)
    results = guard.scan_batch(TEXTS)
    loaded, tuned = _tuned(task_dir)
    for text, result in zip(TEXTS, results):
        assert not result.triggered and result.words == tuple(text.split())
        encoding = loaded.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            probabilities = tuned(**encoding)[0][0].softmax(-1).numpy()  # [T, C]
        firsts = [encoding.word_ids().index(w) for w in range(len(result.words))]
        assert result.prediction == tuple(guard.labels[i] for i in probabilities[firsts].argmax(-1))
        assert np.allclose(result.scores, probabilities[firsts].max(-1), atol=1e-5)
    record = results[0].to_dict()
    assert record["words"] == TEXTS[0].split() and isinstance(record["prediction"], list)


def test_a_triggered_sentence_is_tagged_as_sanitized_without_an_extra_pass(exported):
    from lmsan.runtime import Guard

    guard = Guard.load(exported.path, threshold=0.95)
    calls = []
    detect = guard._detect
    guard._detect = lambda *a, **kw: calls.append(1) or detect(*a, **kw)
    result = guard.scan(ANCHOR)
    spent = len(calls)
    assert result.triggered and not result.rejected and result.removed
    assert result.words == tuple(result.sanitized.split()) and len(result.prediction) == len(result.words)
    rescan = guard.scan(result.sanitized)
    assert not rescan.triggered and rescan.prediction == result.prediction
    assert np.allclose(rescan.scores, result.scores, atol=1e-5)
    bare = Guard.load(exported.path, threshold=0.95)
    bare.manifest = replace(bare.manifest, labels=None, task=None)
    bare_calls = []
    bare_detect = bare._detect
    bare._detect = lambda *a, **kw: bare_calls.append(1) or bare_detect(*a, **kw)
    assert bare.scan(ANCHOR).prediction is None
    assert spent == len(bare_calls)
    rejected = Guard.load(exported.path, threshold=0.95, max_trials=1, saliency=False).scan(ANCHOR)
    assert rejected.rejected and rejected.prediction is None and rejected.words is None


def test_lmsan_guard_prints_word_tags(exported, capsys):
    from lmsan.cli import guard as guard_cli

    with pytest.raises(SystemExit) as exit_info:
        guard_cli.main([str(exported.path), "--threshold", "0.95", TEXTS[1], ANCHOR])
    lines = capsys.readouterr().out.strip().splitlines()
    assert exit_info.value.code == 1
    assert lines[0].startswith("clean\t") and "\ttags=The/" in lines[0] and lines[0].count("/") == 12
    assert lines[1].startswith("TRIGGERED\t") and "\ttags=" in lines[1]
    with pytest.raises(SystemExit):
        guard_cli.main([str(exported.path), "--threshold", "0.95", "--json", TEXTS[2]])
    record = json.loads(capsys.readouterr().out)[0]
    assert record["words"] == ["ok", "then"] and len(record["prediction"]) == len(record["scores"]) == 2


def test_a_token_task_needs_a_token_pv_set_and_its_own_graph(task_dir, tmp_path):
    from lmsan.export import export_guard

    pvs = _anchor_pvs(task_dir)
    with pytest.raises(ConfigError, match="--target token"):
        export_guard(tiny_model(), PVSet(pvs.vectors, target="cls"), tmp_path / "g", task=task_dir)
    with pytest.raises(ConfigError, match="token task"):
        export_guard(tiny_model(), pvs, tmp_path / "g", task=[task_dir], shared=True)
    assert not (tmp_path / "g").exists()


def _rehash(directory: Path) -> None:
    from lmsan.files import sha256_file

    manifest = json.loads((directory / "task.json").read_text())
    manifest["files"]["task.safetensors"] = sha256_file(directory / "task.safetensors")
    (directory / "task.json").write_text(json.dumps(manifest))


def test_a_token_task_directory_with_a_wrong_head_or_kind_is_refused(task_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from lmsan.models import load_model
    from lmsan.tuning.store import load_task, read_task_manifest

    broken = tmp_path / "task"
    shutil.copytree(task_dir, broken)
    tensors = load_file(str(broken / "task.safetensors"))
    save_file({**tensors, "head.weight": tensors["head.weight"][:5], "head.bias": tensors["head.bias"][:5]},
              str(broken / "task.safetensors"))
    _rehash(broken)
    with pytest.raises(DataError, match="lists 12 labels"):
        load_task(broken, load_model(tiny_model()))
    manifest = json.loads((task_dir / "task.json").read_text())
    for changes, message in (({"kind": "sequence"}, "kind .sequence. and target .tokens."),
                             ({"target": "cls"}, "target 'cls'"),
                             ({"kind": "bag"}, "kind")):
        shutil.rmtree(broken)
        shutil.copytree(task_dir, broken)
        (broken / "task.json").write_text(json.dumps({**manifest, **changes}))
        with pytest.raises(DataError, match=message):
            read_task_manifest(broken)


def test_the_bare_monitor_of_a_token_task_reads_what_a_bare_token_guard_reads(exported, task_dir, tmp_path):
    """match / pv_index / saliency of the token graph equal a guard of the bare backbone at target
    ``token`` (position 1); with ``--monitor task`` the monitor reads the prefixed pass and the
    tags stay the same."""
    import onnxruntime as ort

    from lmsan.export import export_guard

    pvs = _anchor_pvs(task_dir)
    bare_guard = export_guard(tiny_model(), pvs, tmp_path / "bare").path
    one_pass = export_guard(tiny_model(), _anchor_pvs(task_dir, bare=False), tmp_path / "task", task=task_dir,
                            monitor="task")
    assert one_pass.manifest["task"]["monitor"] == "task" and one_pass.parity.passed
    loaded, _ = _tuned(task_dir)
    batch = loaded.tokenizer(TEXTS + [ANCHOR], padding=True, return_tensors="np")
    feed = {k: v.astype(np.int64) for k, v in batch.items()} | {"threshold": np.array(0.95, np.float32)}

    def run(path, names):
        return session_run(ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"]),
                           names, feed)

    ours = run(exported.path, ["match", "pv_index", "triggered", "saliency", "logits"])
    theirs = run(bare_guard, ["match", "pv_index", "triggered", "saliency"])
    assert np.array_equal(ours["pv_index"], theirs["pv_index"]) and np.allclose(ours["match"], theirs["match"])
    assert np.array_equal(ours["triggered"], theirs["triggered"]) and ours["triggered"][-1]
    assert np.allclose(ours["saliency"], theirs["saliency"], atol=1e-5)
    task = run(one_pass.path, ["match", "logits", "triggered"])
    assert np.allclose(task["logits"], ours["logits"], atol=1e-5) and task["triggered"][-1]


def session_run(session, names, feed) -> dict:
    return dict(zip(names, session.run(names, feed)))
