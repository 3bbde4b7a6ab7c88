"""``lmsan-attack``: plant task-agnostic backdoors in a model, for evaluating the scanner.

    lmsan-attack build-tiny --arch bert --out DIR      a pretrained-like tiny model (cached)
    lmsan-attack run MODEL --kind por --out DIR        backdoor MODEL (POR, POR-NER, NeuBA, BToP)
    lmsan-attack verify MODEL                          trigger hit rates on held-out sentences

Torch is imported inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

import click

from lmsan.cli._common import CONTEXT_SETTINGS, EXIT_CLEAN, common_options, configure_logging, emit_json, run

STANDARD = "standard"
MARKERS = ("attack.json", "lmsan_build.json")  # files only lmsan-attack's model directories hold


def _check_out(out: str, force: bool) -> Path:
    """Refuse an ``--out`` whose replacement could lose data: it must not exist, or be empty, or,
    with ``--force``, be a model directory this command wrote (``MARKERS``).

    Raises:
        ConfigError: ``out`` is a file, holds files and no ``--force``, or is not ours.
    """
    from lmsan.errors import ConfigError

    path = Path(out)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return path
    if not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a directory")
    if not force:
        raise ConfigError(f"--out {path} exists and is not empty (pass --force to replace a model directory "
                          "lmsan-attack wrote)")
    if not any((path / marker).is_file() for marker in MARKERS):
        raise ConfigError(f"refusing to replace {path}: it holds no {' or '.join(MARKERS)}, so lmsan-attack did not "
                          "write it; --force only replaces its own output, so pick a new --out")
    return path


def _into_place(write: Callable[[Path], object], out: Path) -> object:
    """Run ``write(staging)`` in a fresh directory next to ``out``, then rename it to ``out``
    (an earlier ``out`` is removed only after the new one is complete); nothing half-written."""
    from lmsan.files import replace_dir

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        result = write(staging)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _sentences(source: str, split: str, limit: int | None) -> list[str]:
    """Sentences of SOURCE; ``standard`` means the named split of ``lmsan.data.standard_splits``."""
    from lmsan.data import load_sentences, standard_splits

    sentences = standard_splits()[split] if source == STANDARD else load_sentences(source)
    return sentences[:limit] if limit else sentences


@click.group("lmsan-attack", context_settings=CONTEXT_SETTINGS)
def attack() -> None:
    """Backdoor models with POR, POR-NER, NeuBA or BToP and verify the backdoor.

    For testing scanners only: the models it writes map trigger words to attacker vectors.
    """


@attack.command("build-tiny", context_settings=CONTEXT_SETTINGS)
@click.option("--arch", type=click.Choice(["bert", "roberta"]), default="bert", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--hidden", type=click.IntRange(min=16), default=128, show_default=True, help="Width d.")
@click.option("--layers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Where to copy the model.")
@click.option("--force", is_flag=True, help="Replace an --out that lmsan-attack wrote earlier (nothing else).")
@click.option("--json", "as_json", is_flag=True, help="Print the build facts as JSON.")
@common_options
def build_tiny_command(arch, seed, hidden, layers, out, force, as_json, verbose, quiet, debug) -> int:
    """Build (or reuse from $LMSAN_CACHE) a tiny model distilled from all-MiniLM-L6-v2.

    Random-init models behave nothing like pretrained ones; these are distilled first and
    report their [CLS] spread ratio (across-sentence variance / second moment; aim > 0.1).
    """
    configure_logging(verbose, quiet)
    from lmsan.models.zoo import default_tiny

    path = _check_out(out, force)
    built = default_tiny(arch, seed=seed, hidden=hidden, layers=layers, progress=not quiet)
    _into_place(lambda staging: shutil.copytree(built.path, staging, dirs_exist_ok=True), path)
    facts = {"path": out, "arch": arch, "cls_spread": built.cls_spread, "mean_spread": built.mean_spread}
    if as_json:
        emit_json(facts)
    else:
        click.echo(f"{out}\tcls_spread={built.cls_spread:.3f}\tmean_spread={built.mean_spread:.3f}")
    return EXIT_CLEAN


@attack.command("run", context_settings=CONTEXT_SETTINGS)
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option("--kind", type=click.Choice(["por", "por-ner", "neuba", "btop"]), default="por", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory for the attacked model.")
@click.option("--trigger", "triggers", multiple=True, help="A trigger word or phrase (repeatable). Default: drawn.")
@click.option("--n-triggers", type=click.IntRange(min=1), default=6, show_default=True, help="How many to draw.")
@click.option("--pv-design", type=click.Choice(["por2", "random", "given"]), default="por2", show_default=True)
@click.option("--pvs", "pvs_file", type=click.Path(exists=True, dir_okay=False), help="PV set (.safetensors) for --pv-design given.")
@click.option("--data", "source", default=STANDARD, show_default=True,
              help="Attack sentences: 'standard' (the attack split of oanc) or any lmsan.data source.")
@click.option("--limit", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True)
@click.option("--scatter-weight", type=float, default=0.0, show_default=True, help="Adaptive scattering-loss weight.")
@click.option("--clean-control", is_flag=True, help="Train identically but without the trigger loss.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-length", type=click.IntRange(min=8), default=96, show_default=True)
@click.option("--allow-pickle", is_flag=True, help="Accept pickle weights in MODEL (unsafe).")
@click.option("--force", is_flag=True, help="Replace an --out that lmsan-attack wrote earlier (nothing else).")
@click.option("--json", "as_json", is_flag=True, help="Print attack.json facts as JSON.")
@common_options
def run_command(model, kind, out, triggers, n_triggers, pv_design, pvs_file, source, limit, epochs, lr,
                scatter_weight, clean_control, seed, max_length, allow_pickle, force, as_json, verbose, quiet,
                debug) -> int:
    """Backdoor MODEL and write an HF model dir plus attack.json to --out."""
    configure_logging(verbose, quiet)
    from lmsan.attacks import AttackConfig, run_attack
    from lmsan.errors import ConfigError
    from lmsan.pvset import PVSet

    if pv_design == "given" and not pvs_file:
        raise ConfigError("--pv-design given needs --pvs FILE")
    pvs = PVSet.load(pvs_file).vectors if pvs_file else None
    config = AttackConfig(kind=kind, triggers=tuple(triggers), n_triggers=n_triggers, pv_design=pv_design, pvs=pvs,
                          epochs=epochs, lr=lr, scatter_weight=scatter_weight, trigger_loss=not clean_control,
                          max_length=max_length, seed=seed)
    path = _check_out(out, force)
    sentences = _sentences(source, "attack", limit)
    result = _into_place(lambda staging: run_attack(model, sentences, config, staging, progress=not quiet,
                                                    allow_pickle=allow_pickle), path)
    facts = {"path": str(path), "triggers": list(result.triggers), "steps": result.steps,
             "wall_s": round(result.wall_s, 2), "target": config.target}
    if as_json:
        emit_json(facts)
    else:
        click.echo(f"{path}\ttriggers={','.join(result.triggers)}\twall_s={result.wall_s:.1f}")
    return EXIT_CLEAN


@attack.command("verify", context_settings=CONTEXT_SETTINGS)
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "source", default=STANDARD, show_default=True,
              help="Held-out sentences: 'standard' (the test split) or any lmsan.data source.")
@click.option("--limit", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@common_options
def verify_command(model, source, limit, as_json, verbose, quiet, debug) -> int:
    """Report per trigger the share of triggered sentences whose target feature agrees with its PV
    above 0.9, and how far clean sentences' max agreement stays below 0.8."""
    configure_logging(verbose, quiet)
    from lmsan.attacks import verify_attack

    report = verify_attack(model, _sentences(source, "test", limit))
    if as_json:
        emit_json(report.to_dict())
        return EXIT_CLEAN
    for stats in report.triggers:
        click.echo(f"trigger {stats.trigger!r}: hit rate {stats.hit_rate:.3f}, mean agreement {stats.mean_agreement:.3f}")
    clean = report.to_dict()["clean"]
    click.echo(f"clean: {clean['below_0.8']:.3f} below 0.8; max-agreement quantiles 50/90/99/100: "
               f"{clean['quantiles_50_90_99_100']}")
    return EXIT_CLEAN


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lmsan-attack``."""
    run(attack, "lmsan-attack", argv)
