"""``lmsan-mine``: bad input gives one stderr line and exit 2 (4 for usage); a run writes its files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from lmsan.cli import mine as mine_cli

WORDS = "river stone quiet market paper light window garden music city morning letter".split()


def invoke(args):
    """Run ``lmsan-mine`` in a CliRunner sandbox; return (exit code, stdout, stderr)."""
    runner = CliRunner()
    with runner.isolation() as streams:
        try:
            mine_cli.main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code
    stdout, stderr = streams[0].getvalue().decode(), streams[1].getvalue().decode()
    return code, stdout, stderr


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("lmsan-mine: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture()
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(" ".join(rng.choice(WORDS, size=8)) for _ in range(40)) + "\n")
    return path


def test_help_exits_zero():
    code, stdout, _ = invoke(["--help"])
    assert code == 0 and "--patience" in stdout and "--resume" in stdout


def test_missing_model_is_exit_2(tmp_path, corpus):
    code, stdout, stderr = invoke([str(tmp_path / "nope"), "--data", str(corpus)])
    assert code == 2 and "not found" in one_error_line(stderr) and stdout == ""


def test_model_without_input_embeddings_is_exit_2(tiny_dir, corpus, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.BertModel, "get_input_embeddings", lambda self: None)
    code, _, stderr = invoke([str(tiny_dir), "--data", str(corpus)])
    assert code == 2 and "input embedding" in one_error_line(stderr)


def test_fewer_sentences_than_a_batch_is_exit_2(tiny_dir, tmp_path):
    few = tmp_path / "few.txt"
    few.write_text("\n".join(" ".join(WORDS[i : i + 6]) for i in range(5)) + "\n")
    code, _, stderr = invoke([str(tiny_dir), "--data", str(few)])
    assert code == 2 and "one batch" in one_error_line(stderr)


def test_blank_corpus_is_exit_2(tiny_dir, tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\n\t\n")
    code, _, stderr = invoke([str(tiny_dir), "--data", str(blank)])
    assert code == 2 and "blank.txt" in one_error_line(stderr)


def test_unwritable_out_is_exit_2(tiny_dir, corpus, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, stdout, stderr = invoke([str(tiny_dir), "--data", str(corpus), "--out", str(blocker / "sub"), "--json"])
    assert code == 2 and "cannot write to --out" in one_error_line(stderr)
    assert json.loads(stdout)["error"]["kind"] == "OSError"


def test_unknown_config_key_is_a_usage_error(tiny_dir, corpus, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"lr_rel": 0.01, "typo_key": 1}))
    code, _, stderr = invoke([str(tiny_dir), "--data", str(corpus), "--config", str(config)])
    assert code == 4 and "typo_key" in one_error_line(stderr)


def test_resume_needs_out_is_a_usage_error(tiny_dir, corpus):
    code, _, stderr = invoke([str(tiny_dir), "--data", str(corpus), "--resume"])
    assert code == 4 and "--out" in one_error_line(stderr)


def test_a_run_writes_report_and_pvs_and_resumes(tiny_dir, corpus, tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "fast.json"
    config.write_text(json.dumps({"batch_size": 16, "epochs": 2, "max_length": 24}))
    args = [str(tiny_dir), "--data", str(corpus), "--config", str(config), "--mode", "search", "--loops", "2",
            "--out", str(out), "--json", "-q"]
    code, stdout, stderr = invoke(args)
    report = json.loads(stdout)
    assert code == (1 if report["verdict"] == "backdoored" else 0), stderr
    assert (out / "pvs.safetensors").is_file() and (out / "report.json").is_file()
    saved = json.loads((out / "report.json").read_text())
    assert saved["schema_version"] == 1 and saved["status"] == "complete"
    assert saved["weight_sha256"] and len(saved["loops"]) == 2
    assert {"dist", "div", "path"} <= set(saved["loops"][0]["epochs"][0])
    code, stdout, _ = invoke([*args[:8], "3", *args[9:], "--resume"])
    assert [loop["seed"] for loop in json.loads(stdout)["loops"]] == [1, 2, 3]


ARCHITECTURES = {  # random-init shapes per model family (d = 32, one layer), MiniLM's tokenizer
    "distilbert": dict(dim=32, n_layers=1, n_heads=2, hidden_dim=64),
    "albert": dict(hidden_size=32, embedding_size=16),
    "electra": dict(hidden_size=32, embedding_size=16),
    "deberta-v2": dict(hidden_size=32, relative_attention=True, position_buckets=16),
    "xlm-roberta": dict(hidden_size=32, max_position_embeddings=66, pad_token_id=0),
    "modernbert": dict(hidden_size=32, pad_token_id=0, bos_token_id=101, eos_token_id=102, cls_token_id=101,
                       sep_token_id=102),
    "gpt2": dict(n_embd=32, n_layer=1, n_head=2, n_positions=64),
}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_model_family_runs_mine_export_and_guard(arch, corpus, tmp_path):
    """Loading, the trigger sweep, a fuzz loop, the report, the exported guard (parity) and a
    scan work beyond BERT: position ids, token types, factorised embeddings and a decoder read
    at its last token (target ``last``). A random init is no real model (method.md §5): only
    the chain's mechanics are checked."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from lmsan.export import export_guard
    from lmsan.models import minilm_path
    from lmsan.runtime import Guard

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    shape = {"num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 64} if arch not in ("distilbert", "gpt2") else {}
    model = AutoModel.from_config(AutoConfig.for_model(arch, vocab_size=tokenizer.vocab_size,
                                                       **{**shape, **ARCHITECTURES[arch]}))
    model.save_pretrained(tmp_path / arch)
    tokenizer.save_pretrained(tmp_path / arch)
    config = tmp_path / "fast.json"
    config.write_text(json.dumps({"batch_size": 16, "epochs": 2, "max_length": 24}))
    target = ["--target", "last"] if arch == "gpt2" else []
    code, stdout, stderr = invoke([str(tmp_path / arch), "--data", str(corpus), "--config", str(config), "--loops",
                                   "1", "--out", str(tmp_path / "out"), "--json", "-q", *target])
    assert code in (0, 1), stderr
    report = json.loads(stdout)
    assert code == (1 if report["verdict"] == "backdoored" else 0)
    assert report["pvs"]["target"] == ("last" if arch == "gpt2" else "cls")
    assert (tmp_path / "out" / "pvs.safetensors").is_file() and (tmp_path / "out" / "report.json").is_file()
    exported = export_guard(tmp_path / arch, tmp_path / "out" / "pvs.safetensors", tmp_path / "guard")
    assert exported.parity.passed and exported.manifest["pvs"]["size"] == report["pvs"]["size"]
    result = Guard.load(tmp_path / "guard").scan(" ".join(WORDS))
    assert 0.0 <= result.match <= 1.0 and result.triggered == (result.match > exported.manifest["threshold"])


@pytest.mark.parametrize("bad, key", [({"lr_rel": "fast"}, "lr_rel"), ({"grad_threshold": "x"}, "grad_threshold"),
                                      ({"confirm": "false"}, "confirm")])
def test_config_values_are_type_checked_before_anything_loads(bad, key, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(bad))
    code, stdout, stderr = invoke([str(tmp_path / "no-model"), "--data", str(tmp_path / "no-data.txt"),
                                   "--config", str(config), "--json"])
    assert code == 4 and f"{key} must be" in one_error_line(stderr)
    assert json.loads(stdout)["error"]["kind"] == "config"


@pytest.mark.parametrize("option, key, value", [(["--target", "mask"], "target", "cls"),
                                                (["--mode", "search"], "mode", "detect"),
                                                (["--loops", "3"], "max_loops", 5),
                                                (["--max-length", "16"], "max_length", 24)])
def test_an_option_that_contradicts_config_is_a_usage_error(option, key, value, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({key: value}))
    code, _, stderr = invoke([str(tmp_path / "no-model"), "--data", str(tmp_path / "no-data.txt"),
                              "--config", str(config), *option])
    assert code == 4 and f"{option[0]} {option[1]} conflicts with {key}={value!r}" in one_error_line(stderr)


def test_config_sets_what_the_options_leave_unset(tmp_path):
    from lmsan.cli.mine import mining_config

    unset = {"target": None, "mode": None, "max_loops": None, "patience": None, "max_length": None}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"target": "mask", "mode": "search", "max_loops": 5}))
    config = mining_config("default", str(path), unset)
    assert (config.target, config.mode, config.max_loops, config.patience) == ("mask", "search", 5, 200)
    assert mining_config("default", str(path), {**unset, "target": "mask", "patience": 0}).patience == 0
    plain = mining_config("default", None, unset)
    assert (plain.target, plain.mode, plain.patience) == ("cls", "detect", 0)


def test_device_is_checked_before_anything_loads(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    base = [str(tmp_path / "no-model"), "--data", str(tmp_path / "no-data.txt")]
    code, _, stderr = invoke([*base, "--device", "cuda:0"])
    assert code == 4 and "CUDA is not available" in one_error_line(stderr)
    code, _, stderr = invoke([*base, "--device", "gpu"])
    assert code == 4 and "expected auto, cpu, cuda or cuda:N" in one_error_line(stderr)
    code, stdout, _ = invoke(["--help"])
    assert "auto (cuda when available, else cpu)" in " ".join(stdout.split()) and "[default: auto]" in stdout


def test_an_earlier_run_in_out_is_kept_without_resume_or_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    code, _, stderr = invoke([str(tmp_path / "no-model"), "--data", str(tmp_path / "no-data.txt"),
                              "--out", str(out)])
    line = one_error_line(stderr)
    assert code == 2 and "holds an earlier run (report.json)" in line and "--resume" in line and "--force" in line
    assert (out / "report.json").read_text() == "{}"
    for flags in (["--force"], ["--resume", "--force"]):
        code, _, stderr = invoke([str(tmp_path / "m"), "--data", str(tmp_path / "d.txt"), *flags])
        assert code == 4 and "--" in one_error_line(stderr)


def test_a_failed_start_leaves_no_directory_behind(tiny_dir, corpus, tmp_path):
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tokenizer / name).write_bytes((tiny_dir / name).read_bytes())
    out = tmp_path / "new" / "out"
    for model, data, message in [(tmp_path / "no-model", corpus, "not found"),
                                 (tiny_dir, tmp_path / "no-data.txt", "no-data.txt"),
                                 (no_tokenizer, corpus, "tokenizer of")]:
        code, _, stderr = invoke([str(model), "--data", str(data), "--out", str(out)])
        assert code == 2 and message in one_error_line(stderr)
        assert not (tmp_path / "new").exists()
