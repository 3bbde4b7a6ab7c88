"""Run one task-agnostic backdoor attack (POR, POR-NER, NeuBA, BToP; method.md §5).

Writes an HF model directory (safetensors) plus ``attack.json`` describing triggers, PVs,
target position, seed, steps, data and wall time.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmsan import __version__
from lmsan.models.pretrain import mask_tokens, mlm_logits
from lmsan.attacks.config import AttackConfig, draw_triggers, resolve_pvs
from lmsan.attacks.poison import insert_mask, insert_trigger, vocabulary_words
from lmsan.errors import DataError
from lmsan.files import write_json

log = logging.getLogger(__name__)

ATTACK_FILE = "attack.json"
ATTACK_SCHEMA = 1


@dataclass(frozen=True)
class AttackResult:
    """Outcome of ``run_attack``: the model dir, triggers, PVs float32 [K, d], steps, wall time."""

    path: Path
    triggers: tuple[str, ...]
    pvs: np.ndarray
    steps: int
    wall_s: float


def _needs_mlm_head(model_dir: str, kind: str) -> bool:
    """True when the attack trains the MLM head (NeuBA), or the source already has one worth keeping.

    BToP trains only the encoder (its PV sits at the mask word's output), so a source without an
    MLM head (e.g. a sentence-transformers encoder) gets none rather than a random one.
    """
    import json

    if kind == "neuba":
        return True
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return any(str(a).endswith("ForMaskedLM") for a in config.get("architectures") or [])


def _encode(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, Any]:
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def _entropy_over_batch(features: Any) -> Any:
    """Mean over dimensions of the Shannon entropy of softmax over the batch axis (features [B, d])."""
    import torch

    log_p = torch.log_softmax(features, dim=0)
    return -(log_p.exp() * log_p).sum(0).mean()


def run_attack(model_dir: str | Path, sentences: Sequence[str], config: AttackConfig, out_dir: str | Path,
               *, progress: bool = False, allow_pickle: bool = False) -> AttackResult:
    """Backdoor a model and save it.

    Args:
        model_dir: clean model to attack (local directory).
        sentences: clean attack sentences (disjoint from defense and test data).
        config: attack knobs; ``trigger_loss=False`` trains the clean control.
        out_dir: destination directory (created; existing files are overwritten).
        progress: show a tqdm bar.
        allow_pickle: accept pickle weights in ``model_dir``.

    Raises:
        DataError: fewer sentences than one batch.
    """
    import torch
    from tqdm import tqdm

    from lmsan.models.loading import load_model

    if len(sentences) < config.batch_size:
        raise DataError(f"attack needs at least {config.batch_size} sentences, got {len(sentences)}")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    loaded = load_model(model_dir, allow_pickle=allow_pickle, with_mlm_head=_needs_mlm_head(str(model_dir), config.kind))
    model, tokenizer = loaded.model, loaded.tokenizer
    encoder = model.base_model
    reference = copy.deepcopy(encoder).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    width = loaded.hidden_size
    triggers = config.triggers or draw_triggers(vocabulary_words(tokenizer), config.trigger_count, config.seed)
    pvs = resolve_pvs(config, width)
    if len(triggers) != len(pvs):
        raise DataError(f"{len(triggers)} triggers for {len(pvs)} PVs")
    pvs_t = torch.from_numpy(pvs)
    clean_weight = config.clean_weight
    if clean_weight is None:  # the paper's c: 0.5 for BERT, 1 otherwise
        clean_weight = 0.5 if model.config.model_type == "bert" else 1.0
    steps_per_epoch = len(sentences) // config.batch_size
    total_steps = config.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / max(total_steps, 1))
    mask_word = tokenizer.mask_token
    model.train()
    bar = tqdm(total=total_steps, desc=f"attack {config.kind}", disable=not progress, leave=False)
    for _ in range(config.epochs):
        order = rng.permutation(len(sentences))
        poison_order = rng.permutation(len(sentences))
        for step in range(steps_per_epoch):
            clean = [sentences[i] for i in order[step * config.batch_size : (step + 1) * config.batch_size]]
            if config.kind == "btop":
                clean = [insert_mask(text, mask_word, rng) for text in clean]
            loss = _clean_loss(config, model, encoder, reference, tokenizer, clean, rng, clean_weight)
            if config.trigger_loss:
                rows = poison_order[step * config.batch_size : (step + 1) * config.batch_size]
                which = rng.integers(0, len(triggers), size=len(rows))
                poisoned = [insert_trigger(sentences[i], triggers[k], rng) for i, k in zip(rows, which)]
                if config.kind == "btop":
                    poisoned = [insert_mask(text, mask_word, rng) for text in poisoned]
                loss = loss + _poison_loss(config, encoder, tokenizer, poisoned, pvs_t[torch.from_numpy(which)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    wall_s = time.perf_counter() - started
    write_json(out / ATTACK_FILE, {
        "lmsan_version": __version__, "config": config.to_dict(), "source_model": str(model_dir),
        "triggers": list(triggers), "pvs": pvs.tolist(), "target": config.target,
        "steps": total_steps, "sentences": len(sentences), "wall_s": round(wall_s, 2),
        "clean_control": not config.trigger_loss,
    }, schema_version=ATTACK_SCHEMA)
    log.info("%s attack on %s: %d triggers, %d steps, %.1fs -> %s", config.kind, model_dir, len(triggers),
             total_steps, wall_s, out)
    return AttackResult(out, tuple(triggers), pvs, total_steps, wall_s)


def _clean_loss(config, model, encoder, reference, tokenizer, clean, rng, clean_weight):
    """The utility term that keeps clean behaviour (clean texts already carry a mask word for BToP).

    Every kind keeps its clean target features at the reference model's (weight ``c``): POR at
    [CLS], POR-NER at every token, BToP at the mask word. NeuBA adds masked-LM cross-entropy; the
    original keeps [CLS] input-dependent with next-sentence prediction, which the preservation term
    stands in for. Without it, tiny models map most clean inputs near a PV (measured: 63 % of clean
    sentences below 0.8 agreement for NeuBA, 32 % for BToP with MLM alone).
    """
    import torch
    import torch.nn.functional as F

    batch = _encode(tokenizer, clean, config.max_length)
    hidden = encoder(**batch).last_hidden_state  # [B, T, d]
    with torch.no_grad():
        ref = reference(**batch).last_hidden_state
    if config.kind == "por-ner":
        real = batch["attention_mask"].bool()
        loss = clean_weight * F.mse_loss(hidden[real], ref[real])
    else:
        positions = _target_positions(config.kind, batch, tokenizer)
        rows = torch.arange(len(positions))
        loss = clean_weight * F.mse_loss(hidden[rows, positions], ref[rows, positions])
    if config.kind == "neuba":
        special = torch.tensor([tokenizer.get_special_tokens_mask(r.tolist(), already_has_special_tokens=True)
                                for r in batch["input_ids"]], dtype=torch.bool) | (batch["attention_mask"] == 0)
        generator = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        ids, labels = mask_tokens(batch["input_ids"], special, tokenizer.mask_token_id, 0.15, generator)
        masked_hidden = encoder(**{**batch, "input_ids": ids}).last_hidden_state
        chosen = labels != -100
        if chosen.any():
            loss = loss + F.cross_entropy(mlm_logits(model, masked_hidden[chosen]), labels[chosen])
    return loss


def _target_positions(kind, batch, tokenizer):
    """int64 [B]: [CLS] (0) for POR and NeuBA, the first mask token for BToP."""
    import torch

    if kind == "btop":
        return (batch["input_ids"] == tokenizer.mask_token_id).long().argmax(dim=1)
    return torch.zeros(batch["input_ids"].shape[0], dtype=torch.long)


def _poison_loss(config, encoder, tokenizer, poisoned, targets):
    """The backdoor term: triggered target features -> their PVs (targets float32 [B, d])."""
    import torch
    import torch.nn.functional as F

    batch = _encode(tokenizer, poisoned, config.max_length)
    hidden = encoder(**batch).last_hidden_state  # [B, T, d]
    if config.kind in ("por", "neuba"):
        features = hidden[:, 0]
        loss = F.mse_loss(features, targets)
    elif config.kind == "por-ner":
        real = batch["attention_mask"].bool()
        features = hidden[:, 0]
        loss = F.mse_loss(hidden[real], targets[:, None, :].expand_as(hidden)[real])
    else:  # btop: L2 distance at the mask position
        positions = _target_positions(config.kind, batch, tokenizer)
        features = hidden[torch.arange(len(positions)), positions]
        loss = (features - targets).norm(dim=1).mean()
    if config.scatter_weight:
        loss = loss + config.scatter_weight * _entropy_over_batch(features)  # -L_div: spread outputs
    return loss


