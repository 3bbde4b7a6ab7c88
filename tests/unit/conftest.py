"""Unit-test fixtures shared by several files."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A random-init tiny BERT (d = 32, 1 layer, MiniLM's tokenizer) saved as safetensors.

    For loading and CLI mechanics only (no distillation, so not for detection); never written to.
    """
    from lmsan.models.tiny import TinySpec, build_tiny

    model, tokenizer = build_tiny(TinySpec(arch="bert", hidden=32, layers=1, heads=2, intermediate=64))
    path = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
