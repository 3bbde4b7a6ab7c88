"""Export: fused head, parity with PyTorch, guard.json, failure modes. Also provides the tiny
guard directories the runtime tests load (``tiny_guard``), cached on disk by content hash."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lmsan import __version__
from lmsan.errors import ConfigError, ExportError, IntegrityError, PVSetError
from lmsan.files import cache_dir, cache_lock, publish_cache_dir
from lmsan.pvset import PVSet

TINY = dict(arch="bert", hidden=32, layers=1, heads=2, intermediate=64, max_positions=40, seed=0)
ANCHOR = "the quick brown fox jumps over the lazy dog"  # PV 0 = the sign pattern of its feature


def _key(*parts) -> str:
    """Hash of the builder parameters, the lmsan version and the export/runtime sources."""
    root = Path(__file__).resolve().parents[2] / "lmsan"
    digest = hashlib.sha256(json.dumps([parts, __version__], sort_keys=True, default=str).encode())
    for source in sorted([*root.glob("export/*.py"), *root.glob("models/*.py")]):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def tiny_model() -> Path:
    """A random-init tiny BERT (d=32, 40 positions) with MiniLM's WordPiece tokenizer, cached.

    Its matrices are redrawn large (std 1 embeddings, 0.5 elsewhere) so the [CLS] feature
    depends on the words: at the default 0.02 init every sentence has nearly the same signs.
    """
    import torch

    from lmsan.models.tiny import TinySpec, build_tiny

    path = cache_dir("test-fixtures") / f"tiny-bert-{_key(TINY, 'scaled-init')}"
    with cache_lock(path):  # parallel test workers build it once
        if (path / "config.json").is_file():
            return path
        model, tokenizer = build_tiny(TinySpec(**TINY))
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if parameter.dim() == 2:
                    scale = 1.0 if "embeddings" in name else 0.5
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)

        def write(staging: Path) -> None:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)

        publish_cache_dir(path, write)
    return path


def anchor_pvs(model: Path) -> PVSet:
    """K=3 PVs: the sign pattern of ANCHOR's [CLS] feature, then two random ones."""
    import torch

    from lmsan.models import load_model

    loaded = load_model(model)
    with torch.no_grad():
        batch = loaded.tokenizer([ANCHOR], return_tensors="pt")
        feature = loaded.encoder(**batch).last_hidden_state[0, 0].numpy()
    rng = np.random.default_rng(0)
    vectors = np.stack([np.where(feature >= 0, 1.0, -1.0), *rng.standard_normal((2, feature.size))])
    return PVSet(vectors.astype(np.float32), target="cls")


def tiny_guard(**export_kw) -> Path:
    """Export the tiny model with ``anchor_pvs`` (cached by content hash) and return the guard dir."""
    from lmsan.export import export_guard

    model = tiny_model()
    path = cache_dir("test-fixtures") / f"guard-{_key(model.name, export_kw)}"
    with cache_lock(path):  # parallel test workers export it once
        if not (path / "guard.json").is_file():
            export_guard(model, anchor_pvs(model), path, overwrite=True, **export_kw)
    return path


@pytest.fixture(scope="module")
def guard_dir() -> Path:
    return tiny_guard(features=True)


def _ort_features(guard: Path, texts, pairs=None):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model()))
    batch = tokenizer(texts, pairs, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(guard / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {k: v.astype(np.int64) for k, v in batch.items()} | {"threshold": np.array(0.8, np.float32)}
    return batch, session.run(None, feed)


def test_parity_with_pytorch_on_padded_batches_and_pairs(guard_dir):
    import torch

    from lmsan.models import load_model

    texts = ["short", ANCHOR, "a somewhat longer sentence, with punctuation; and more words in it"]
    pairs = ["b", "question two?", "x"]
    loaded = load_model(tiny_model(), attn_implementation="eager")
    for second in (None, pairs):
        batch, (match, pv_index, triggered, pv_match, features, saliency) = _ort_features(guard_dir, texts, second)
        with torch.no_grad():
            out = loaded.encoder(**{k: torch.from_numpy(v) for k, v in batch.items()}, output_attentions=True)
        ref = out.last_hidden_state[:, 0].numpy()
        assert np.abs(features - ref).max() <= 1e-4 * np.abs(ref).max()
        # saliency: last-layer attention from [CLS], heads averaged; none on padding
        assert np.abs(saliency - out.attentions[-1][:, :, 0].mean(dim=1).numpy()).max() <= 1e-5
        assert np.allclose(saliency.sum(axis=1), 1, atol=1e-5) and (saliency[batch["attention_mask"] == 0] < 1e-6).all()
        signs = anchor_pvs(tiny_model()).signs.astype(np.float64)
        counts = (np.where(ref >= 0, 1.0, -1.0) @ signs.T + 32) / 2  # [B, K] N_match
        near_zero = (np.abs(ref) < 1e-6).any(axis=1)
        assert np.array_equal(np.rint(match * 32)[~near_zero], counts.max(axis=1)[~near_zero])
        assert np.array_equal(pv_index[~near_zero], counts.argmax(axis=1)[~near_zero])
        assert np.array_equal(np.rint(pv_match * 32)[~near_zero], counts[~near_zero])  # every PV's share
        assert np.array_equal(triggered, match > 0.8)
    manifest = json.loads((guard_dir / "guard.json").read_text())
    assert manifest["parity"]["passed"] and manifest["parity"]["max_rel_diff"] <= 1e-4


@pytest.mark.parametrize("target", ["cls", "token", "last", "mask"])
def test_saliency_is_the_target_positions_attention_row(target):
    """``saliency`` = last-layer attention from the target position, heads averaged (padded rows too)."""
    import torch

    from lmsan.export.head import GuardModule
    from lmsan.models import load_model

    loaded = load_model(tiny_model(), attn_implementation="eager")
    mask = loaded.tokenizer.mask_token
    module = GuardModule(loaded.encoder, np.ones((1, 32), np.int8), target=target,
                         mask_token_id=loaded.tokenizer.mask_token_id, saliency=True).eval()
    batch = loaded.tokenizer([f"a b {mask} c d e f", f"{mask} x", f"y z {mask}"], padding=True, return_tensors="pt")
    ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        _, saliency = module.encode(ids, attention_mask, None, saliency=True)
        weights = loaded.encoder(**batch, output_attentions=True).attentions[-1].mean(dim=1)  # [B, T, T]
    positions = {"cls": [0] * 3, "token": [1] * 3, "last": (attention_mask.sum(dim=1) - 1).tolist(),
                 "mask": [row.tolist().index(loaded.tokenizer.mask_token_id) for row in ids]}[target]
    assert len(set(positions)) > 1 or target in ("cls", "token")
    for row, position in enumerate(positions):
        assert torch.allclose(saliency[row], weights[row, position], atol=1e-6)


def _random_backbone(arch: str):
    """A random-init 3-layer backbone (d=32, 4 heads) with eager attention."""
    import torch
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    shape = dict(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=40)
    if arch == "distilbert":
        model = DistilBertModel(DistilBertConfig(vocab_size=100, dim=32, n_layers=3, n_heads=4, hidden_dim=64,
                                                 max_position_embeddings=40, pad_token_id=0))
    else:
        config = BertConfig(**shape) if arch == "bert" else RobertaConfig(pad_token_id=1, **shape)
        model = BertModel(config) if arch == "bert" else RobertaModel(config)
    model.set_attn_implementation("eager")
    return model.eval()


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
@pytest.mark.parametrize("target", ["cls", "token", "last", "mask"])
def test_pruned_last_layer_equals_the_full_forward(arch, target):
    """The last layer run for the target row only gives the full forward's features and attention
    row (padded batch, every target); non-BERT layers are not pruned; the backbone is unchanged."""
    import torch

    from lmsan.export.head import GuardModule

    backbone = _random_backbone(arch)
    module = GuardModule(backbone, np.ones((1, 32), np.int8), target=target, mask_token_id=4, saliency=True).eval()
    assert module.pruned == (arch != "distilbert") and len(backbone.transformer.layer if arch == "distilbert"
                                                           else backbone.encoder.layer) == 3
    lengths = [10, 6, 3]
    mask = (torch.arange(10)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(5, 100, (3, 10)).masked_fill(mask == 0, 1 if arch == "roberta" else 0)
    ids[[0, 1, 2], [2, 0, 1]] = 4  # the mask token, at several positions
    with torch.no_grad():
        features, saliency = module.encode(ids, mask, None, saliency=True)
        ref_features, ref_saliency = module.encode(ids, mask, None, saliency=True, full=True)
    assert features.shape == (3, 32) and saliency.shape == (3, 10)
    assert (features - ref_features).abs().max() <= 1e-5 * ref_features.abs().max()
    assert (saliency - ref_saliency).abs().max() <= 1e-6 and (saliency[mask == 0] < 1e-6).all()
    if module.pruned:
        assert len(module.trunk.encoder.layer) == 2 and len(backbone.encoder.layer) == 3


def test_encoders_with_modules_besides_their_layers_are_not_pruned():
    from torch import nn

    from lmsan.export.prune import split_last_layer

    backbone = _random_backbone("bert")
    assert split_last_layer(backbone) is not None
    backbone.encoder.LayerNorm = nn.LayerNorm(32)  # run after the layers (e.g. XLM-RoBERTa-XL)
    assert split_last_layer(backbone) is None


@pytest.mark.filterwarnings("ignore::FutureWarning")  # inside torch.export
def test_head_counts_zero_as_positive_in_onnx(tmp_path):
    """ONNX Sign(0) = 0; the head must count a zero feature as +1 (method.md §3)."""
    import onnxruntime as ort
    import torch

    from lmsan.export.head import SignMatchHead

    head = SignMatchHead(np.array([[1, 1, -1, -1], [-1, -1, 1, 1]], np.int8)).eval()
    features = torch.tensor([[0.0, -0.0, -1.0, -2.0], [-1.0, -2.0, 0.0, 1e-9]])  # -0.0 >= 0 too
    path = tmp_path / "head.onnx"
    torch.onnx.export(head, (features, torch.tensor(0.8)), str(path), dynamo=True,
                      input_names=["features", "threshold"], output_names=["match", "pv_index", "triggered", "pv_match"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    match, pv_index, triggered, pv_match = session.run(None, {"features": features.numpy(),
                                                              "threshold": np.array(0.8, np.float32)})
    assert match.tolist() == [1.0, 1.0] and pv_index.tolist() == [0, 1] and triggered.tolist() == [True, True]
    assert pv_match.tolist() == [[1.0, 0.0], [0.0, 1.0]]  # every PV's share, the best one = match
    assert "Sign" not in {node.op_type for node in __import__("onnx").load(str(path)).graph.node}


def test_clean_pv_set_never_triggers(tmp_path):
    import torch

    from lmsan.export.head import SignMatchHead

    match, pv_index, triggered, pv_match = SignMatchHead(np.zeros((0, 4), np.int8))(torch.ones(3, 4),
                                                                                    torch.tensor(0.0))
    assert match.tolist() == [0.0] * 3 and pv_index.tolist() == [-1] * 3 and not triggered.any()
    assert pv_match.shape == (3, 0)


def test_a_clean_pv_set_exports_and_scans(tmp_path):
    """K = 0 (a clean verdict's PV set): the graph exports, passes parity and loads; nothing triggers."""
    from lmsan.export import export_guard
    from lmsan.runtime import Guard

    exported = export_guard(tiny_model(), PVSet(np.zeros((0, 32), np.float32)), tmp_path / "g")
    assert exported.parity.passed and exported.manifest["pvs"]["size"] == 0
    guard = Guard.load(tmp_path / "g")
    results = guard.scan_batch(["a short text", ANCHOR])
    assert [(r.triggered, r.match, r.pv_index) for r in results] == [(False, 0.0, None)] * 2
    assert guard._detect([("a short text",), (ANCHOR,)], per_pv=True)[3].shape == (2, 0)
    from lmsan.errors import ConfigError
    from lmsan.runtime import calibrate

    with pytest.raises(ConfigError, match="no PVs"):
        calibrate(guard, ["a short text"] * 100)


def test_manifest_records_hashes_and_settings(guard_dir):
    from lmsan.files import sha256_file
    from lmsan.models import load_model

    manifest = json.loads((guard_dir / "guard.json").read_text())
    assert manifest["format"] == "lmsan.guard/1" and manifest["lmsan_version"] == __version__
    assert manifest["files"]["model.onnx"] == sha256_file(guard_dir / "model.onnx")
    assert manifest["tokenizer"]["sha256"] == sha256_file(guard_dir / "tokenizer.json")
    assert manifest["model"]["fingerprint"] == load_model(tiny_model()).fingerprint
    assert manifest["pvs"]["size"] == 3 and manifest["pvs"]["width"] == 32 and manifest["pvs"]["sha256"] is None
    assert manifest["target"] == "cls" and manifest["threshold"] == 0.8 and manifest["max_length"] == 38  # tokenizer limit < 40 positions
    assert manifest["opset"] >= 17 and manifest["inputs"][-1] == "threshold" and manifest["pruned"] is True
    assert manifest["outputs"] == ["match", "pv_index", "triggered", "pv_match", "features", "saliency"]


def test_pv_file_hash_and_no_features_output(tmp_path):
    import onnx

    from lmsan.export import export_guard
    from lmsan.files import sha256_file

    pvs = anchor_pvs(tiny_model()).save(tmp_path / "pvs.safetensors")
    result = export_guard(tiny_model(), pvs, tmp_path / "g")
    assert result.manifest["pvs"]["sha256"] == sha256_file(pvs)
    outputs = [o.name for o in onnx.load(str(tmp_path / "g" / "model.onnx")).graph.output]
    assert outputs == ["match", "pv_index", "triggered", "pv_match", "saliency"]
    names = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert names == ["guard.json", "model.onnx", "tokenizer.json", "tokenizer_config.json"]
    assert sorted(result.manifest["files"]) == names[1:]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    bare = export_guard(tiny_model(), pvs, tmp_path / "bare", saliency=False)
    assert bare.manifest["outputs"] == ["match", "pv_index", "triggered", "pv_match"]
    assert bare.parity.saliency_max_diff is None
    outputs = [o.name for o in onnx.load(str(tmp_path / "bare" / "model.onnx")).graph.output]
    assert outputs == bare.manifest["outputs"]


def test_pv_width_mismatch_is_a_pvset_error(tmp_path):
    from lmsan.export import export_guard

    with pytest.raises(PVSetError, match="PV width 8 != model hidden size 32"):
        export_guard(tiny_model(), PVSet(np.ones((2, 8), np.float32)), tmp_path / "g")
    assert not any(tmp_path.iterdir())


def test_pvs_mined_on_other_weights_are_refused(tmp_path):
    from lmsan.export import export_guard

    pvs = PVSet(np.ones((1, 32), np.float32), model_sha256="0" * 64)
    with pytest.raises(IntegrityError, match="mined on weights"):
        export_guard(tiny_model(), pvs, tmp_path / "g")


def test_target_and_threshold_are_checked(tmp_path):
    from lmsan.export import export_guard

    pvs = PVSet(np.ones((1, 32), np.float32))
    with pytest.raises(ConfigError, match="differs from the PV set"):
        export_guard(tiny_model(), pvs, tmp_path / "g", target="mask")
    with pytest.raises(ConfigError, match="threshold"):
        export_guard(tiny_model(), pvs, tmp_path / "g", threshold=1.5)


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    from lmsan.export import export_guard

    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="exists"):
        export_guard(tiny_model(), PVSet(np.ones((1, 32), np.float32)), tmp_path / "g")
    assert (tmp_path / "g" / "keep.txt").read_text() == "x"


def test_force_replaces_only_a_guard_directory(tmp_path, capsys):
    """--force must never delete a model directory, a file, or another tool's guard.json."""
    from lmsan.cli import export as export_cli
    from lmsan.export import export_guard

    model = shutil.copytree(tiny_model(), tmp_path / "model")
    pvs = anchor_pvs(model).save(tmp_path / "pvs.safetensors")
    before = sorted(p.name for p in model.iterdir())
    capsys.readouterr()  # drop what the setup above logged
    with pytest.raises(SystemExit) as exit_info:
        export_cli.main([str(model), "--pvs", str(pvs), "--out", str(model), "--force", "-q"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"lmsan-export: error: refusing to replace {model}: it is not an lmsan guard directory")
    assert sorted(p.name for p in model.iterdir()) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "guard.json").write_text(json.dumps({"format": "someone-else/1"}))
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for out, message in [(other, "not an lmsan guard directory"), (a_file, "is a file")]:
        with pytest.raises(ExportError, match=message):
            export_guard(model, pvs, out, overwrite=True)
    assert (other / "guard.json").is_file() and a_file.read_text() == "x"


def test_force_replaces_a_guard_or_an_empty_directory(tmp_path):
    from lmsan.export import export_guard

    out = tmp_path / "g"
    out.mkdir()
    first = export_guard(tiny_model(), anchor_pvs(tiny_model()), out, overwrite=True)  # empty: nothing to lose
    (out / "stale.txt").write_text("x")
    second = export_guard(tiny_model(), PVSet(np.ones((1, 32), np.float32)), out, overwrite=True)
    assert first.manifest["pvs"]["size"] == 3 and second.manifest["pvs"]["size"] == 1
    assert not (out / "stale.txt").exists() and [p.name for p in tmp_path.iterdir()] == ["g"]


def test_model_without_tokenizer_files_is_refused_before_export(tmp_path):
    from lmsan.errors import ModelLoadError
    from lmsan.export import export_guard

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model() / name, bare / name)
    with pytest.raises(ModelLoadError, match="tokenizer of .*bare has 5 tokens"):
        export_guard(bare, anchor_pvs(tiny_model()), tmp_path / "g")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare"]


def test_failed_export_leaves_nothing_half_written(tmp_path, monkeypatch):
    import lmsan.export.pipeline as pipeline
    from lmsan.export.parity import ParityReport

    monkeypatch.setattr(pipeline, "check_parity", lambda *a, **k: ParityReport(9, 1.0, 9, 9, 1e-4, False))
    with pytest.raises(ExportError, match="parity check failed"):
        pipeline.export_guard(tiny_model(), PVSet(np.ones((1, 32), np.float32)), tmp_path / "g")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kw", [dict(exporter="legacy", optimize=True, prune=False), dict(optimize=True, fp16=True),
                                dict(optimize=True, int8=True)])
def test_legacy_optimized_fp16_and_int8_exports_pass_parity(tmp_path, kw):
    import onnx

    from lmsan.export import export_guard

    result = export_guard(tiny_model(), anchor_pvs(tiny_model()), tmp_path / "g", features=True, **kw)
    assert result.parity.passed and result.manifest["pruned"] == kw.get("prune", True)
    # unpruned, fused attention keeps no weights; pruned, the last layer is lmsan's own (unfused)
    assert ("saliency" in result.manifest["outputs"]) == result.manifest["pruned"]
    graph = onnx.load(str(tmp_path / "g" / "model.onnx")).graph
    if kw.get("exporter") == "legacy":
        assert result.manifest["fused"].get("Attention") == 1
    if kw.get("fp16"):
        types = [(list(i.dims), i.data_type) for i in graph.initializer]
        assert any(t == onnx.TensorProto.FLOAT16 for _, t in types)
        assert ([32, 3], onnx.TensorProto.FLOAT) in types  # the ±1 sign matrix [d, K] stays fp32
        assert all(o.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for o in graph.output)
    if kw.get("int8"):
        assert result.manifest["int8"] and any(n.op_type == "MatMulInteger" for n in graph.node)
        head = [n for n in graph.node if n.name.startswith("/head/")]
        assert head and not any("Integer" in n.op_type or "Quantize" in n.op_type for n in head)
        with pytest.raises(ConfigError, match="fp16.*int8"):
            export_guard(tiny_model(), anchor_pvs(tiny_model()), tmp_path / "both", fp16=True, int8=True)


def test_fp16_drops_the_duplicate_casts_of_older_onnxruntime_converters():
    """onnxruntime < 1.32 writes one ``x_cast_to_fp32`` Cast per float32 reader (not SSA)."""
    import onnx
    from onnx import TensorProto, helper

    from lmsan.export.graph import _drop_duplicate_nodes

    def cast(name, to=TensorProto.FLOAT):
        return helper.make_node("Cast", ["x"], ["x_cast_to_fp32"], to=to, name=name)

    readers = [helper.make_node("Relu", ["x_cast_to_fp32"], [f"y{i}"], name=f"r{i}") for i in range(2)]
    graph = helper.make_graph([cast("c0"), readers[0], cast("c1"), readers[1]], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2])],
                              [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [2]) for i in range(2)])
    _drop_duplicate_nodes(graph)
    assert [n.name for n in graph.node] == ["c0", "r0", "r1"]
    onnx.checker.check_model(helper.make_model(graph))
    graph.node.insert(1, cast("c2", to=TensorProto.DOUBLE))
    with pytest.raises(ExportError, match="write the same output differently"):
        _drop_duplicate_nodes(graph)
    # "" marks an unused optional output (e.g. SkipLayerNormalization's): never a name clash
    unused = [helper.make_node("Dropout", [f"y{i}"], [f"z{i}", ""], name=f"d{i}") for i in range(2)]
    other = helper.make_graph(unused, "h", [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [2])
                                           for i in range(2)], [])
    _drop_duplicate_nodes(other)
    assert [n.name for n in other.node] == ["d0", "d1"]


def test_external_data_side_file_is_hashed_and_loads(tmp_path, monkeypatch):
    """Graphs over the size limit keep weights in model.onnx.data (forced here with a tiny limit)."""
    import lmsan.export.graph as graph
    from lmsan.export import export_guard
    from lmsan.runtime import Guard

    monkeypatch.setattr(graph, "EXTERNAL_DATA_BYTES", 1000)
    result = export_guard(tiny_model(), anchor_pvs(tiny_model()), tmp_path / "g")
    assert "model.onnx.data" in result.manifest["files"]
    assert (tmp_path / "g" / "model.onnx.data").stat().st_size > 10 * (tmp_path / "g" / "model.onnx").stat().st_size
    result = Guard.load(tmp_path / "g", threshold=0.95).scan(ANCHOR)
    assert result.triggered and result.match == 1.0


def test_auto_exporter_falls_back_to_dynamo(tmp_path, monkeypatch, caplog):
    import lmsan.export.pipeline as pipeline

    real = pipeline.export_graph

    def no_legacy(module, path, *, exporter, **kw):
        if exporter == "legacy":
            path.write_bytes(b"partial")
            raise ExportError("legacy exporter unavailable")
        return real(module, path, exporter=exporter, **kw)

    monkeypatch.setattr(pipeline, "export_graph", no_legacy)
    result = pipeline.export_guard(tiny_model(), anchor_pvs(tiny_model()), tmp_path / "g", features=True)
    assert result.manifest["exporter"] == "dynamo" and result.manifest["opset"] == 18 and result.parity.passed
    assert "falling back to dynamo" in caplog.text
    assert guard_scan_anchor(tmp_path / "g") == 1.0


def guard_scan_anchor(path) -> float:
    from lmsan.runtime import Guard

    return Guard.load(path, threshold=0.95).scan(ANCHOR, sanitize=False).match
