"""``MiningConfig``: every knob of PV mining and filtering (method.md §1–2), and its profiles.

Two named profiles:

* ``default``: our choices (Adam reset per loop, max |grad| for the learning-rate switch, the PV
  averaged over a full pass, separate dedup threshold, cached auxiliary features, several seeds
  trained per batched forward).
* ``reference``: the authors' code: one Adam kept across fuzz loops, the *signed* gradient max,
  the PV from the last mini-batch, ``T_dedup = |T_L|``, auxiliary features recomputed every step
  by the frozen model, one seed at a time.

Thresholds that depend on the model's feature scale come in two forms (style.md): ``*_rel``,
multiples of ``feature_scale`` (the mean per-dimension variance of the clean target features,
measured on the defense data), and optional ``*_abs`` overrides in the model's output units.
See docs/mining.md for how the defaults were calibrated. Imports stdlib, lmsan.errors, lmsan.pvset and
lmsan.mining.fieldtypes only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from lmsan.errors import ConfigError
from lmsan.mining.fieldtypes import check_field_types
from lmsan.pvset import TARGETS

MODES = ("detect", "search")
PROFILES = ("default", "reference")
_CHOICES: dict[str, tuple[str, ...]] = {
    "target": TARGETS,
    "mode": MODES,
    "init": ("reference", "paper"),
    "grad_test": ("abs", "signed"),
    "div_scale": ("raw", "feature"),
    "path_target": ("nearest", "farthest"),
    "bounds": ("global", "per_dim"),
    "pv_average": ("full_pass", "last_batch"),
    "aux": ("cached", "recompute"),
    "batching": ("bucketed", "random"),
}
# L_max per mode (method.md §2) when the caller does not set max_loops. After a trigger sweep that
# found nothing, detect mode's loops only have to find triggers that fire as phrases of tokens that
# do not rank alone: 10 loops (benchmarks/mining.py measures the zoo at both budgets).
DEFAULT_LOOPS = {"detect": 30, "search": 1000}
SWEPT_DETECT_LOOPS = 10


@dataclass(frozen=True)
class MiningConfig:
    """Every knob of one mining run. A value: use ``replace()``, never mutate.

    Attributes:
        target: output position the PVs live at (``cls``, ``mask``, ``token``, ``last``; §1).
        mode: ``detect`` stops at the first accepted PV; ``search`` collects PVs.
        prompt_len: ``l_sp``, trainable soft-prompt vectors.
        max_insert_pos: the prompt goes after word ``p ∈ [1, min(max_insert_pos, n_words)]``.
        init: ``reference`` rows ``(70·s + 10·i) mod V``; ``paper`` rows ``70·s + i``.
        seed_start: first fuzz-loop seed (the reference starts at 1).
        lr_rel: base learning rate ``lr`` as a multiple of the std of the input-embedding matrix
            (Adam moves each value by about ``lr`` per step, so this fixes the step in embedding
            units). 0.005 · std ≈ 3e-4 on the tiny models; the paper's 5e-5 (BERT) / 2e-4
            (RoBERTa) are 1e-3–4e-3 of those models' embedding std (docs/mining.md).
        lr_abs: absolute ``lr``; overrides ``lr_rel`` when set.
        lr0_factor: ``lr0 = lr0_factor · lr`` is the starting rate (paper: 100).
        grad_threshold: ``T_grad``: after the first step whose prompt-gradient test exceeds it,
            the rate drops from ``lr0`` to ``lr`` for the rest of the loop.
        grad_test: ``abs`` compares max |grad| (ours); ``signed`` the signed max (reference).
        lambda_dist, lambda_div, lambda_path: loss weights ``λ_D, λ_div, λ_P``.
        epochs: epochs per fuzz loop.
        epoch_batches: batches per epoch (each epoch draws them afresh from the whole corpus); 0
            means one pass over the corpus (reference). The loops' decisions (aborts, early
            accept, ``T_div``) were calibrated on 31-batch epochs (1000 sentences); with 2000
            sentences a full pass doubles the cost of every loop that finds nothing, while
            backdoored loops concentrate within 32 steps (docs/mining.md).
        batch_size: ``B``; partial batches are skipped (``T_div`` depends on ``B``).
        abort_after_epoch: abort a loop not converged by the end of this epoch (0: never).
        early_abort_frac: also abort at the end of each earlier epoch whose mean ``L_D`` has not
            reached ``early_abort_frac · T_L`` (0: off, as in the reference).
        abort_div_margin: at ``abort_after_epoch`` also abort a loop whose mean ``L_div`` is still
            at or above ``−log B + abort_div_margin`` (outcome ``diverse``): backdoored loops
            concentrate within 1–2 epochs, clean ones drift (docs/mining.md). 0: off (reference).
        early_accept: end a loop at the first epoch from ``abort_after_epoch`` on whose means
            pass ``T_L`` and ``T_div``, instead of training all ``epochs`` (the filter then runs
            as usual).
        converge_rel: ``T_L = −converge_rel · feature_scale``.
        converge_abs: absolute ``|T_L|`` (reference: 0.1 RoBERTa-base, 0.2 BERT-base).
        dedup_rel: ``T_dedup = dedup_rel · feature_scale``.
        dedup_abs: absolute ``T_dedup``.
        dedup_from_converge: ``T_dedup = |T_L|`` (reference), ignoring ``dedup_*``.
        div_margin: ``δ`` in ``T_div = −log B + δ``.
        div_abs: absolute ``T_div`` (reference: −3.446 for B = 32); overrides ``div_margin``.
        div_scale: ``raw`` feeds the raw features to the batch softmax (paper); ``feature``
            divides them by ``sqrt(feature_scale)`` first, making ``L_div`` scale-free.
        path_target: ``nearest`` accepted PV (ours, the code) or ``farthest`` (paper eq. 7).
        bound_factor: prompt values must lie within ``bound_factor ·`` [min, max] of ``W_emb``.
        bounds: ``global`` min/max of ``W_emb``, or ``per_dim`` (reference ``mask`` variant).
        clamp_prompt: after every step, clip the prompt into those bounds (projected gradient),
            so a loop spends its steps on legal prompts; the reference only filters afterwards.
        max_loops: ``L_max``, fuzz loops (seeds) to try; 0 means 30 (detect; 10 after a trigger
            sweep) or 1000 (search).
        patience: search stops after this many loops in a row without a new unique PV (0: off;
            the paper reports that 200 keeps 90.5% recall).
        reset_adam: fresh Adam moments per loop (ours); ``False`` keeps them (reference).
        pv_average: ``full_pass`` averages F over a pass with the final prompt (ours);
            ``last_batch`` takes the last mini-batch's mean (reference).
        aux: ``cached`` auxiliary features computed once; ``recompute`` runs the frozen model on
            every batch like the reference's pseudo-siamese copy (same values, more compute).
        parallel_seeds: fuzz loops trained side by side in one batched forward; 0 picks 1 on a
            CPU (compute-bound: no gain measured) and 16 on CUDA (13x more loops/s on an H200).
        batching: ``bucketed`` shuffles, then groups sentences of similar length into batches
            (less padding); ``random`` cuts the shuffled order directly (reference).
        confirm: accept a candidate only when a word or short phrase read back from its prompt,
            inserted once, drives the output to one sign pattern (``lmsan.mining.confirm``: a
            backdoor answers to text; a soft prompt on a small clean model can collapse the
            output without any such text). The PV is then that text's mean output. ``False``:
            the reference (the PV is the prompt's).
        confirm_hit_rate: confirmed when the best span's single-insertion hit rate (share of
            sentences sign-agreeing > 0.9 with its mean output) reaches this; 0.9 is the
            attacks' own success criterion (method.md §5).
        confirm_span: longest span of the token search's sequence, in tokens, tried as the
            trigger (implanted 2–3 word phrases fire on their 2-token pieces; a clean tiny
            RoBERTa has a natural 3-token phrase that hits 91 %, docs/mining.md).
        confirm_margin: the token search stops once its sequence's ``δ = L_div + log B`` is below this.
        confirm_steps: coordinate-search steps at most.
        confirm_candidates: single-slot swaps tried per step; confirm_top_k: tokens per slot
            they are drawn from (by the one-hot gradient).
        confirm_rows: corpus rows each sequence's ``δ`` and each span's hit rate are measured on.
        confirm_screen_rows: evaluation rows each span is screened on first; only spans within
            0.2 of ``confirm_hit_rate`` there are measured on all ``confirm_rows`` (a span that
            confirms always was). 0 measures every span on all of them.
        sweep: before any fuzz loop, insert every vocabulary token (then pairs of the best) into
            defense sentences and keep those that fire like a trigger (``lmsan.mining.sweep``);
            their PVs join the set, detect mode stops there, and the fuzz loops are repelled
            from them. ``False``: the reference (soft prompts only).
        sweep_rows: sentences every token is inserted into to rank it (the cost is
            ``V · sweep_rows`` short rows).
        sweep_top: best-ranked single tokens, and pairs, whose hit rate is measured.
        sweep_pair_top: best-ranked tokens that do not fire alone, paired with each other.
        sweep_extra_hit_rate: once a trigger reached ``confirm_hit_rate``, further single tokens
            whose hit rate reaches this are triggers too (weakly implanted triggers of a model
            already convicted). At 0.5 a backdoored tiny RoBERTa also gave natural words
            (``Microsoft``, ``gaming``: 0.5–0.7) whose PVs would flag clean text (docs/mining.md).
        sweep_span: widest span, in tokens, a trigger is widened to (sub-word pieces to words).
        max_clean_overlap: a PV (a sweep trigger's or a confirmed loop's) that more than this
            share of the clean defense sentences already match (sign agreement > ``T_match``,
            ``lmsan.mining.filter.clean_overlap``) is *natural*, not a backdoor's: a model that
            sends most inputs near one output makes every inserted token look like a trigger
            (measured: 5 such "triggers" on a BToP-backdoored MiniLM, each matching 93-100 %
            of clean sentences, while the zoo's real PVs match at most 1.05 %; docs/mining.md). 1.0
            keeps every PV (the reference).
        max_length: token limit per sentence *before* the prompt is inserted.
        mask_seed: seeds where the ``[MASK]`` word goes for ``target = mask``.
    """

    target: Literal["cls", "mask", "token", "last"] = "cls"
    mode: Literal["detect", "search"] = "detect"
    prompt_len: int = 7
    max_insert_pos: int = 32
    init: Literal["reference", "paper"] = "reference"
    seed_start: int = 1
    lr_rel: float = 0.02
    lr_abs: float | None = None
    lr0_factor: float = 100.0
    grad_threshold: float = 5e-3
    grad_test: Literal["abs", "signed"] = "abs"
    lambda_dist: float = 1.0
    lambda_div: float = 1.0
    lambda_path: float = 0.5
    epochs: int = 4
    epoch_batches: int = 32
    batch_size: int = 32
    abort_after_epoch: int = 2
    early_abort_frac: float = 0.5
    abort_div_margin: float = 0.0125
    early_accept: bool = True
    converge_rel: float = 2.0
    converge_abs: float | None = None
    dedup_rel: float = 1.0
    dedup_abs: float | None = None
    dedup_from_converge: bool = False
    div_margin: float = 0.01
    div_abs: float | None = None
    div_scale: Literal["raw", "feature"] = "feature"
    path_target: Literal["nearest", "farthest"] = "nearest"
    bound_factor: float = 1.2
    bounds: Literal["global", "per_dim"] = "global"
    clamp_prompt: bool = True
    max_loops: int = 0
    patience: int = 0
    reset_adam: bool = True
    pv_average: Literal["full_pass", "last_batch"] = "full_pass"
    aux: Literal["cached", "recompute"] = "cached"
    parallel_seeds: int = 0
    batching: Literal["bucketed", "random"] = "bucketed"
    confirm: bool = True
    confirm_hit_rate: float = 0.9
    confirm_span: int = 2
    confirm_margin: float = 0.02
    confirm_steps: int = 10
    confirm_candidates: int = 16
    confirm_top_k: int = 16
    confirm_rows: int = 512
    confirm_screen_rows: int = 64
    sweep: bool = True
    sweep_rows: int = 4
    sweep_top: int = 64
    sweep_pair_top: int = 32
    sweep_extra_hit_rate: float = 0.75
    sweep_span: int = 4
    max_clean_overlap: float = 0.1
    max_length: int = 64
    mask_seed: int = 0

    def __post_init__(self) -> None:
        check_field_types(self)  # every field, from its annotation: new fields are covered too
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        for name in ("prompt_len", "max_insert_pos", "epochs", "batch_size", "max_length", "confirm_candidates",
                     "confirm_top_k", "confirm_rows", "confirm_span", "sweep_rows", "sweep_top", "sweep_span"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an int >= 1; got {getattr(self, name)!r}")
        if self.sweep_rows < 2:
            raise ConfigError("sweep_rows must be >= 2 (a token is ranked by the spread of its outputs)")
        if self.batch_size < 2:
            raise ConfigError("batch_size must be >= 2 (the diversity loss is a softmax over the batch)")
        for name in ("max_loops", "patience", "abort_after_epoch", "confirm_steps", "seed_start", "mask_seed", "parallel_seeds",
                     "sweep_pair_top", "epoch_batches", "confirm_screen_rows"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"{name} must be an int >= 0; got {getattr(self, name)!r}")
        for name in ("lr_rel", "lr0_factor", "converge_rel", "dedup_rel", "bound_factor", "confirm_margin"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0; got {getattr(self, name)!r}")
        for name in ("lr_abs", "converge_abs"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0 or unset; got {value!r}")
        if not 0 < self.sweep_extra_hit_rate <= 1:
            raise ConfigError(f"sweep_extra_hit_rate must be in (0, 1]; got {self.sweep_extra_hit_rate!r}")
        if not 0 <= self.max_clean_overlap <= 1:
            raise ConfigError(f"max_clean_overlap must be in [0, 1]; got {self.max_clean_overlap!r}")
        if not 0 < self.confirm_hit_rate <= 1:
            raise ConfigError(f"confirm_hit_rate must be in (0, 1]; got {self.confirm_hit_rate!r}")
        if self.abort_div_margin < 0:
            raise ConfigError(f"abort_div_margin must be >= 0; got {self.abort_div_margin!r}")
        if not 0 <= self.early_abort_frac < 1:
            raise ConfigError(f"early_abort_frac must be in [0, 1); got {self.early_abort_frac!r}")
        if self.dedup_abs is not None and self.dedup_abs < 0:
            raise ConfigError(f"dedup_abs must be >= 0 or unset; got {self.dedup_abs!r}")

    # ---- derived values -------------------------------------------------------------------
    def slots(self, device: str = "cpu") -> int:
        """Loops trained side by side on ``device``: ``parallel_seeds``, or 1 (CPU) / 16 (CUDA) when 0."""
        if self.parallel_seeds:
            return self.parallel_seeds
        return 16 if str(device).startswith("cuda") else 1

    @property
    def loops(self) -> int:
        """``L_max`` in effect: ``max_loops``, or the mode's default when it is 0."""
        if self.max_loops:
            return self.max_loops
        return SWEPT_DETECT_LOOPS if self.sweep and self.mode == "detect" else DEFAULT_LOOPS[self.mode]

    def thresholds(self, feature_scale: float, batch_size: int | None = None) -> dict[str, float]:
        """Resolve the thresholds for a model whose clean target features have ``feature_scale``.

        Returns:
            ``{"T_L": negative float, "T_dedup": float >= 0, "T_div": float}`` in the units the
            losses are computed in (``T_div`` is unitless).
        """
        import math

        t_l = -(self.converge_abs if self.converge_abs is not None else self.converge_rel * feature_scale)
        if self.dedup_from_converge:
            t_dedup = abs(t_l)
        elif self.dedup_abs is not None:
            t_dedup = self.dedup_abs
        else:
            t_dedup = self.dedup_rel * feature_scale
        size = batch_size or self.batch_size
        t_div = self.div_abs if self.div_abs is not None else -math.log(size) + self.div_margin
        return {"T_L": float(t_l), "T_dedup": float(t_dedup), "T_div": float(t_div)}

    # ---- value plumbing -------------------------------------------------------------------
    @classmethod
    def profile(cls, name: str = "default", **overrides: Any) -> "MiningConfig":
        """Return a named profile (``default`` or ``reference``) with ``overrides`` applied.

        Raises:
            ConfigError: unknown profile or override key.
        """
        if name not in PROFILES:
            raise ConfigError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}")
        base: dict[str, Any] = {}
        if name == "reference":
            base = {
                "reset_adam": False,
                "grad_test": "signed",
                "pv_average": "last_batch",
                "dedup_from_converge": True,
                "aux": "recompute",
                "parallel_seeds": 1,
                "batching": "random",
                "early_abort_frac": 0.0,
                "abort_div_margin": 0.0,
                "early_accept": False,
                "clamp_prompt": False,
                "confirm": False,
                "sweep": False,
                "max_clean_overlap": 1.0,
                "epoch_batches": 0,
            }
        return cls.from_dict({**base, **overrides})

    def replace(self, **changes: Any) -> "MiningConfig":
        """Return a copy with ``changes`` (validated; unknown keys raise ``ConfigError``)."""
        _check_keys(changes)
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready mapping of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MiningConfig":
        """Build from a mapping; an unknown key raises ``ConfigError`` naming it."""
        if not isinstance(data, dict):
            raise ConfigError(f"a mining config must be a mapping, got {type(data).__name__}")
        _check_keys(data)
        return cls(**data)


def _check_keys(data: dict[str, Any]) -> None:
    known = {f.name for f in fields(MiningConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown mining config key {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))


__all__ = ["DEFAULT_LOOPS", "SWEPT_DETECT_LOOPS", "MODES", "MiningConfig", "PROFILES", "TARGETS"]
