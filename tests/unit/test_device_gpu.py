"""CUDA paths of loading and mining (``gpu``: skipped without CUDA; run from a device script,
``scripts/test_gpu.sh``, never by CI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.gpu

WORDS = "river stone quiet market paper light window garden music city morning letter".split()


def mine_json(args: list[str]) -> tuple[int, dict]:
    from lmsan.cli import mine as mine_cli

    with CliRunner().isolation() as streams:
        try:
            mine_cli.main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code
    return code, json.loads(streams[0].getvalue().decode())


def test_auto_resolves_to_cuda_and_the_model_lands_there(tiny_dir):
    import torch

    from lmsan.errors import ConfigError
    from lmsan.models import load_model
    from lmsan.models.checks import resolve_device

    assert resolve_device("auto") == "cuda" and resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ConfigError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
    loaded = load_model(tiny_dir, device=resolve_device("auto"))
    assert all(p.is_cuda for p in loaded.model.parameters())
    with torch.no_grad():
        batch = loaded.tokenizer(["a river in the morning"], return_tensors="pt").to("cuda")
        assert loaded.encoder(**batch).last_hidden_state.is_cuda


def test_mining_on_cuda_by_default_matches_cpu_and_resumes(tiny_dir, tmp_path):
    rng = np.random.default_rng(0)
    corpus = tmp_path / "sentences.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS, size=8)) for _ in range(64)) + "\n")
    config = tmp_path / "fast.json"
    config.write_text(json.dumps({"batch_size": 16, "epochs": 2, "max_length": 24}))
    base = [str(tiny_dir), "--data", str(corpus), "--config", str(config), "--mode", "search", "--json", "-q"]
    code, cpu = mine_json([*base, "--loops", "4", "--device", "cpu"])
    assert code in (0, 1)
    code, half = mine_json([*base, "--loops", "2", "--out", str(tmp_path / "gpu")])  # --device auto: cuda
    assert code in (0, 1) and len(half["loops"]) == 2
    code, gpu = mine_json([*base, "--loops", "4", "--out", str(tmp_path / "gpu"), "--resume"])
    assert code in (0, 1) and sorted(loop["seed"] for loop in gpu["loops"]) == [1, 2, 3, 4]
    assert gpu["feature_scale"] == pytest.approx(cpu["feature_scale"], rel=1e-3)
    assert gpu["thresholds"]["T_L"] == pytest.approx(cpu["thresholds"]["T_L"], rel=1e-3)
    assert all(len(loop["epochs"]) >= 1 and loop["steps"] > 0 for loop in gpu["loops"])
