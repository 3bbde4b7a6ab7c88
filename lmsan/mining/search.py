"""Detect and search (method.md §2): run fuzz loops, filter their candidates, decide.

``mine`` prepares everything once (tokenised corpus, auxiliary features, feature scale,
thresholds, learning rate), runs the trigger sweep (``lmsan.mining.sweep``: real tokens and pairs
inserted into the sentences; detect mode stops when it finds one), then runs fuzz loops until
``detect`` finds a PV, ``L_max`` loops are done, or ``search`` has gone ``patience`` loops
without a new unique PV. ``resume`` continues a
run from its last checkpoint. Never imports lmsan.attacks, lmsan.export or lmsan.runtime.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from lmsan import __version__
from lmsan.errors import ConfigError, DataError, IntegrityError
from lmsan.mining.config import MiningConfig
from lmsan.mining.confirm import TriggerCheck, TriggerSearch, special_token_ids
from lmsan.mining.features import Encoder, auxiliary_features, embedding_bounds, feature_scale
from lmsan.mining.filter import Thresholds, converged, dedup, judge, natural, pv_overlap
from lmsan.mining.loop import FinishedLoop, FuzzEngine, StepInfo
from lmsan.mining.prompt import encode_corpus
from lmsan.mining.report import LoopTrace, MiningReport, repelled_basins
from lmsan.mining.sweep import SweepHit, TriggerSweep
from lmsan.pvset import KnownTrigger, PVSet

log = logging.getLogger(__name__)

# Knobs a resumed run may change; every other one must match the checkpoint.
RESUMABLE = ("mode", "max_loops", "patience")


@dataclass(frozen=True, eq=False)
class MiningResult:
    """What ``mine`` returns: the report and the accepted PVs (``pvset.size == 0`` means clean)."""

    report: MiningReport
    pvset: PVSet

    @property
    def backdoored(self) -> bool:
        return self.report.backdoored


def token_limit(loaded: Any, config: MiningConfig) -> int:
    """Tokens per sentence before the prompt, so that sentence + prompt fits the model."""
    limit = getattr(loaded.tokenizer, "model_max_length", None)
    if not isinstance(limit, int) or limit > 100_000:  # tokenizers without a limit store a huge sentinel
        limit = int(getattr(loaded.model.config, "max_position_embeddings", 512)) - 2
    return max(4, min(config.max_length, limit - config.prompt_len))


def mine(loaded: Any, sentences: Sequence[str], config: MiningConfig, *,
         resume: tuple[MiningReport, PVSet] | None = None,
         on_loop: Callable[[LoopTrace], None] | None = None,
         on_step: Callable[[StepInfo], None] | None = None,
         checkpoint: Callable[[MiningResult], None] | None = None,
         source: str = "") -> MiningResult:
    """Mine PVs from a loaded model with clean ``sentences``.

    Args:
        loaded: ``lmsan.models.LoadedModel`` (frozen encoder, fast tokenizer).
        sentences: clean defense sentences; at least one batch.
        config: mining knobs (``MiningConfig.profile(...)``).
        resume: ``(report, pvset)`` of an earlier partial run on the same model and config:
            its finished loops are kept and skipped.
        on_loop: called with each finished loop's trace.
        on_step: called after every optimiser step of every running loop.
        checkpoint: called with the run so far after each finished loop (the CLI saves it).
        source: where the sentences came from, for the report.

    Returns:
        The report and the PV set.

    Raises:
        DataError: fewer usable sentences than one batch.
        ConfigError: ``resume`` was made with other settings.
        IntegrityError: ``resume`` was made on other weights.
    """
    started = time.perf_counter()
    encoder = Encoder.from_loaded(loaded)
    device = encoder.embedding.device
    corpus = encode_corpus(loaded.tokenizer, sentences, target=config.target, max_length=token_limit(loaded, config),
                           max_insert_pos=config.max_insert_pos, mask_seed=config.mask_seed).to(device)
    if corpus.size < config.batch_size:
        raise DataError(f"need at least one batch of {config.batch_size} usable sentences, got {corpus.size}")
    prepared = time.perf_counter()
    aux = auxiliary_features(encoder, corpus)
    clean_cpu = aux.cpu()  # where clean text goes: a PV most of it matches is natural (filter.natural)
    scale = feature_scale(aux)
    if not scale > 1e-8:
        raise DataError(f"the clean target features do not vary (feature scale {scale:.3g}): is the model trained?")
    resolved = config.thresholds(scale)
    low, high = embedding_bounds(encoder.embedding.cpu(), factor=config.bound_factor,
                                 per_dim=config.bounds == "per_dim")
    thresholds = Thresholds(resolved["T_L"], resolved["T_dedup"], resolved["T_div"], low, high)
    lr = config.lr_abs if config.lr_abs is not None else config.lr_rel * float(encoder.embedding.std())
    aux_done = time.perf_counter()
    log.info("feature scale %.4g over %d sentences at %s: T_L %.4g, T_dedup %.4g, T_div %.4g, lr %.3g, lr0 %.3g",
             scale, corpus.size, config.target, thresholds.t_l, thresholds.t_dedup, thresholds.t_div, lr,
             lr * config.lr0_factor)

    fingerprint = loaded.fingerprint
    pvset = PVSet.empty(aux.shape[1], target=config.target, model_sha256=fingerprint)
    traces: list[LoopTrace] = []
    if resume is not None:
        traces, pvset = _check_resume(resume, config, fingerprint, aux.shape[1])
    engine = FuzzEngine(encoder, corpus, aux, config, t_l=thresholds.t_l, t_div=thresholds.t_div, lr=lr,
                        div_scale=scale if config.div_scale == "feature" else 1.0, slots=config.slots(str(device)),
                        bounds=(low, high) if config.clamp_prompt else None)
    text_probe = None  # inserts real tokens into the evaluation sentences (confirmation and sweep)
    if config.confirm or config.sweep:
        text_probe = TriggerSearch(encoder, corpus, scale, special_token_ids(loaded.tokenizer),
                                   batch_size=config.batch_size, eval_rows=config.confirm_rows,
                                   screen_rows=config.confirm_screen_rows)
    trigger_search = text_probe if config.confirm else None
    sources = list(resume[0].pv_sources) if resume is not None else []
    swept = resume[0].sweep if resume is not None else None
    state = {"verdict_at": aux_done - started if pvset.size else None, "stop": "", "since_new": _since_new(traces)}
    if config.sweep and swept is None:
        assert text_probe is not None
        result = TriggerSweep(text_probe, loaded.tokenizer, rows=config.sweep_rows, seed=config.seed_start).run(
            top=config.sweep_top, pair_top=config.sweep_pair_top, min_hit_rate=config.confirm_hit_rate,
            extra_hit_rate=config.sweep_extra_hit_rate, t_dedup=thresholds.t_dedup, clean=clean_cpu,
            max_clean_overlap=config.max_clean_overlap, max_span=config.sweep_span)
        pvset = add_sweep_hits(pvset, result.hits, sources, thresholds.t_dedup, started,
                               tokenizer=loaded.tokenizer, min_hit_rate=config.confirm_hit_rate)
        swept = result.to_dict()
        if pvset.size and state["verdict_at"] is None:
            state["verdict_at"] = time.perf_counter() - started
    # The path loss repels new loops from the sweep's PVs and from the soft prompts' outputs
    # ("basins", [K', d]): every kept candidate's, also a confirmed one whose text PV was a duplicate.
    # With trigger confirmation the PV set holds what the trigger text produces, which sits elsewhere.
    # A resumed run restores them from its traces (LoopTrace.basin), so it trains exactly like an
    # uninterrupted one.
    sweep_rows = [source["pv_index"] for source in sources if source["method"] == "sweep"]
    engine.accepted = torch.cat([torch.from_numpy(pvset.vectors[sweep_rows]),
                                 torch.from_numpy(repelled_basins(traces, pvset))]).to(device)
    done = {trace.seed for trace in traces}
    seeds = iter([s for s in range(config.seed_start, config.seed_start + config.loops) if s not in done])
    thresholds_out = {**thresholds.to_dict(), "lr": lr, "lr0": lr * config.lr0_factor}

    def build(status: str) -> MiningResult:
        now = time.perf_counter()
        timings = {"prepare": prepared - started, "aux": aux_done - prepared, "mining": now - aux_done,
                   "total": now - started}
        timings["to_verdict"] = state["verdict_at"] if state["verdict_at"] is not None else timings["total"]
        report = MiningReport(
            model_path=str(loaded.source), weight_sha256=dict(loaded.weight_sha256), config=config.to_dict(),
            feature_scale=scale, thresholds=thresholds_out, verdict="backdoored" if pvset.size else "clean",
            loops=tuple(traces), pvs=pvset.to_json(), timings_s=timings,
            data={"sentences": corpus.size, "source": source}, status=status, stop_reason=state["stop"],
            sweep=swept, pv_sources=tuple(sources), lmsan_version=__version__)
        return MiningResult(report, pvset)

    def on_finish(loop: FinishedLoop) -> bool:
        nonlocal pvset
        pv = None
        if converged(loop.epochs, thresholds.t_l) and loop.epochs[-1].div < thresholds.t_div:
            pv = loop.candidate()
        outcome, reason = judge(loop.epochs, loop.prompt.cpu(), pv, engine.accepted.cpu(), thresholds,
                                planned_epochs=config.epochs)
        check = None
        if outcome == "accepted" and trigger_search is not None:
            check = trigger_search.run(loop.prompt, loaded.tokenizer, margin=config.confirm_margin,
                                       steps=config.confirm_steps, candidates=config.confirm_candidates,
                                       top_k=config.confirm_top_k, min_hit_rate=config.confirm_hit_rate,
                                       longest_span=config.confirm_span, seed=loop.seed)
            outcome, reason = confirm_outcome(check, reason, config.confirm_hit_rate)
        soft_pv = pv
        if check is not None and check.features_mean is not None:  # the PV real text produces (one trigger's)
            pv = check.features_mean
            duplicate, _ = dedup(pv, torch.from_numpy(pvset.vectors), thresholds.t_dedup)
            if duplicate:
                outcome, reason = "duplicate", f"trigger {check.trigger!r}: {duplicate}"
        basin = None
        if check.confirmed if check is not None else outcome == "accepted":
            assert soft_pv is not None
            basin = tuple(soft_pv.cpu().tolist())  # exact float32 values, checkpointed for --resume
            engine.accepted = torch.cat([engine.accepted, soft_pv.to(device).unsqueeze(0)])  # repel this basin
        if outcome == "accepted":
            assert pv is not None
            overlap = pv_overlap(pv.cpu(), clean_cpu)
            why = natural(overlap, config.max_clean_overlap)
            if why:
                outcome, reason = "natural", (f"trigger {check.trigger!r}: {why}" if check is not None else why)
        index = None
        if outcome == "accepted":
            index = pvset.size
            trigger = (known_trigger(loaded.tokenizer, check.trigger, check.trigger_ids, check.hit_rate,
                                     config.confirm_hit_rate) if check is not None else None)
            pvset = pvset.append(pv.numpy(), seed=loop.seed, prompt=loop.prompt.cpu().numpy(), trigger=trigger)
            sources.append({"pv_index": index, "method": "soft_prompt", "seed": loop.seed,
                            "trigger": check.trigger if check is not None else None,
                            "hit_rate": check.hit_rate if check is not None else None,
                            "loops_done": len(traces) + 1,
                            "at_s": round(time.perf_counter() - started, 3),
                            "clean_overlap": round(overlap, 4)})
            state["since_new"] = 0
            if state["verdict_at"] is None:
                state["verdict_at"] = time.perf_counter() - started
        else:
            state["since_new"] += 1
        trace = LoopTrace(loop.seed, loop.epochs, loop.lr_switch_step, converged(loop.epochs, thresholds.t_l),
                          outcome, reason, index, loop.steps, loop.wall_s,
                          check.to_dict() if check is not None else None, basin)
        traces.append(trace)
        log.info("seed=%d outcome=%s wall_s=%.1f %s", loop.seed, outcome, loop.wall_s, reason)
        for number, epoch in enumerate(loop.epochs):
            log.debug("seed=%d epoch=%d L_D=%.5g L_div=%.5g L_P=%.5g", loop.seed, number, epoch.dist, epoch.div,
                      epoch.path)
        if on_loop is not None:
            on_loop(trace)
        stop = ""
        if config.mode == "detect" and pvset.size:
            stop = "first_pv"
        elif config.mode == "search" and config.patience and state["since_new"] >= config.patience:
            stop = "patience"
        state["stop"] = stop
        if checkpoint is not None:
            checkpoint(build("complete" if stop else "partial"))
        return bool(stop)

    if config.mode == "detect" and pvset.size:
        state["stop"] = "first_pv"
    elif config.mode == "search" and config.patience and state["since_new"] >= config.patience:
        state["stop"] = "patience"
    else:
        engine.run(seeds, on_finish, on_step)
    if not state["stop"]:
        state["stop"] = "max_loops"
    result = build("complete")
    if checkpoint is not None:
        checkpoint(result)
    return result


def confirm_outcome(check: TriggerCheck, reason: str, min_hit_rate: float) -> tuple[str, str]:
    """Outcome and reason of a candidate the filter accepted, after trigger confirmation."""
    found = f"{check.trigger!r} inserted once hits {check.hit_rate:.0%} of {check.hit_rows} sentences"
    if check.confirmed:
        return "accepted", f"{reason}; trigger {found} (>= {min_hit_rate:.0%})"
    return "unconfirmed", (f"no text reproduces it: best {found} < {min_hit_rate:.0%} (token search "
                           f"{check.search_text!r}, δ {check.delta:.4g} after {check.steps} steps; {reason})")


def known_trigger(tokenizer: Any, text: str, ids: Sequence[int], hit_rate: float,
                  min_hit_rate: float) -> KnownTrigger | None:
    """The trigger a PV's guard removes wherever it occurs (``PVSet.triggers``), or None.

    Only a confirmed trigger (``hit_rate >= min_hit_rate``; not a weaker sweep trigger) that text
    spells as mined: ``ids`` must be what ``tokenizer`` makes of ``text`` (or of it after a
    space, a word mid-sentence). A lone continuation piece (``##man``) or a BPE token without
    its leading space would match inside unrelated words, or nowhere.
    """
    if hit_rate < min_hit_rate:
        return None
    spelled = [tokenizer(form, add_special_tokens=False)["input_ids"] for form in (text, " " + text)]
    return KnownTrigger(text, tuple(ids), hit_rate) if list(ids) in spelled else None


def add_sweep_hits(pvset: PVSet, hits: Sequence[SweepHit], sources: list[dict[str, Any]],
                   t_dedup: float, started: float, *, tokenizer: Any, min_hit_rate: float) -> PVSet:
    """Append the sweep's triggers' PVs (seed -1) that are not duplicates, recording each in
    ``sources`` with the clean overlap the sweep measured, and the trigger as the PV's
    ``KnownTrigger`` where ``known_trigger`` keeps it."""
    for hit in hits:
        assert hit.features_mean is not None and hit.clean_overlap is not None
        duplicate, _ = dedup(hit.features_mean, torch.from_numpy(pvset.vectors), t_dedup)
        if duplicate:
            continue
        sources.append({"pv_index": pvset.size, "method": "sweep", "seed": None, "trigger": hit.text,
                        "hit_rate": hit.hit_rate, "loops_done": 0, "at_s": round(time.perf_counter() - started, 3),
                        "clean_overlap": round(hit.clean_overlap, 4)})
        known = known_trigger(tokenizer, hit.text, hit.token_ids, hit.hit_rate, min_hit_rate)
        pvset = pvset.append(hit.features_mean.numpy(), seed=-1, trigger=known)
    return pvset


def _since_new(traces: list[LoopTrace]) -> int:
    count = 0
    for trace in reversed(traces):
        if trace.accepted:
            break
        count += 1
    return count


def _check_resume(resume: tuple[MiningReport, PVSet], config: MiningConfig, fingerprint: str,
                  width: int) -> tuple[list[LoopTrace], PVSet]:
    report, pvset = resume
    if pvset.model_sha256 and pvset.model_sha256 != fingerprint:
        raise IntegrityError("cannot resume: the checkpoint was mined on other weights "
                             f"({pvset.model_sha256[:12]} != {fingerprint[:12]})")
    # a checkpoint from before the natural-vector filter kept every PV: max_clean_overlap 1.0
    old = MiningConfig.from_dict({"max_clean_overlap": 1.0, **report.config}).to_dict()
    new = config.to_dict()
    changed = sorted(key for key in new if key not in RESUMABLE and old.get(key) != new[key])
    if changed:
        raise ConfigError(f"cannot resume: {changed[0]} differs from the checkpoint "
                          f"({old.get(changed[0])!r} != {new[changed[0]]!r})")
    if pvset.width != width:
        raise ConfigError(f"cannot resume: PV width {pvset.width} != model hidden size {width}")
    if not config.reset_adam:
        log.warning("resuming with reset_adam=False: Adam moments are not checkpointed and restart at zero")
    log.info("resuming: %d loops done, %d PVs", len(report.loops), pvset.size)
    return list(report.loops), pvset


__all__ = ["MiningResult", "RESUMABLE", "add_sweep_hits", "confirm_outcome", "known_trigger", "mine", "token_limit"]
