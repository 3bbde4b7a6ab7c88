"""``lmsan-tune``: prompt-tune a frozen backbone for a downstream task and save the task directory.

    lmsan-tune MODEL (--task NAME | --data FILE [--task NAME]) --out DIR [--method prefix|prompt]
               [--length N] [--epochs N] [--lr X] [--batch-size N] [--seed N] [--max-length N]
               [--head linear|verbalizer] [--verbalizer w1,w2,...] [--train-size N] [--test-size N] [--config FILE]
               [--device auto|cpu|cuda|cuda:N] [--force] [--json]
    lmsan-tune --list-tasks [--json]

Writes ``DIR/task.safetensors`` and ``DIR/task.json`` (``lmsan.tuning.store``); an existing DIR is
replaced only with ``--force`` and only when it is a task directory. Exit 0 done, 2 error, 4 usage.
Torch is imported inside the command, so ``--help`` and ``--list-tasks`` stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lmsan.cli._common import (
    CONTEXT_SETTINGS,
    EXIT_CLEAN,
    common_options,
    config_overrides,
    configure_logging,
    emit_json,
    read_config_file,
    run,
)
from lmsan.errors import ConfigError

# Options that set a TuningConfig key: option -> key.
CONFIG_OPTIONS = {"--method": "method", "--length": "length", "--epochs": "epochs", "--lr": "lr",
                  "--batch-size": "batch_size", "--seed": "seed", "--max-length": "max_length", "--head": "head",
                  "--verbalizer": "verbalizer", "--train-size": "train_size", "--test-size": "test_size",
                  "--data": "data"}


def tuning_config(task: str, config_file: str | None, options: dict[str, Any]) -> Any:
    """Build the run's ``TuningConfig``: the method's preset, then ``--config``, then the options given.

    An option given (not ``None``) that ``--config`` sets to another value is an error: neither
    silently wins. ``--verbalizer`` implies ``--head verbalizer``.

    Raises:
        ConfigError: unreadable ``--config``, a conflict, or an invalid value.
    """
    from lmsan.tuning import TuningConfig

    overrides = read_config_file(config_file)
    if "task" in overrides and overrides.pop("task") != task:
        raise ConfigError(f"--task {task} conflicts with the task in --config {config_file}: drop one")
    if isinstance(overrides.get("verbalizer"), list):
        overrides["verbalizer"] = tuple(overrides["verbalizer"])
    if options.get("verbalizer") is not None and options.get("head") is None and "head" not in overrides:
        options = {**options, "head": "verbalizer"}
    overrides = config_overrides(config_file, options, CONFIG_OPTIONS, overrides)
    method = overrides.pop("method", "prefix")
    return TuningConfig.preset(task, method, **overrides)


def _words(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    words = tuple(w.strip() for w in value.split(","))
    if not all(words):
        raise click.BadParameter(f"expected comma-separated words, one per label; got {value!r}",
                                 param_hint="--verbalizer")
    return words


def _list_tasks(as_json: bool) -> int:
    from lmsan.tuning.tasks import TASKS

    rows = [{"name": t.name, "kind": t.kind, "labels": list(t.label_names), "pairs": t.pairs,
             "train_size": t.train_size, "test_size": t.test_size, "verbalizers": [list(v) for v in t.verbalizers],
             "description": t.description}
            for t in TASKS.values()]
    if as_json:
        emit_json({"tasks": rows})
        return EXIT_CLEAN
    for row in rows:
        kind = "a tag per word" if row["kind"] == "tokens" else "pairs" if row["pairs"] else "texts"
        click.echo(f"{row['name']:<10} {'/'.join(row['labels'])} ({kind}, {row['train_size']} train / "
                   f"{row['test_size']} test): {row['description']}")
    return EXIT_CLEAN


@click.command("lmsan-tune", context_settings=CONTEXT_SETTINGS)
@click.argument("model", required=False)
@click.option("--task", default=None,
              help="Task to tune (see --list-tasks): sms-spam, polarity, bbcnews, bbc-pair, or oanc-pos (token "
                   "classification: a part-of-speech tag per word; method prefix, linear head).")
@click.option("--data", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Your own labelled examples instead of a registered task: .csv/.tsv (with a header) or .jsonl, "
                   "with a text column (text or sentence; pairs: text_a and text_b, as lmsan-guard --file reads "
                   "them, or sentence1 and sentence2) and a label column "
                   "(label, labels, class or category). Split stratified (each label keeps its share): a fifth, at "
                   "most 400, for the test [default sizes]. --task names the task [default: the file's stem].")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Task directory to write (task.safetensors + task.json).")
@click.option("--method", type=click.Choice(["prefix", "prompt"]), default=None,
              help="prefix = P-tuning v2: trainable key/value prefixes in every layer, linear head on [CLS]; "
                   "prompt = P-tuning: trainable prompt vectors before a [MASK], scored by the backbone's MLM "
                   "head on verbalizer words [default: prefix].")
@click.option("--length", type=click.IntRange(min=1), default=None,
              help="Prefix rows per layer (prefix) or prompt vectors (prompt) [default: 16 prefix, 8 prompt].")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Passes over the training set [default: 10].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="AdamW learning rate [default: 5e-3 prefix, 3e-2 prompt].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Examples per step [default: 32].")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Init and batch-order seed [default: 0].")
@click.option("--max-length", type=click.IntRange(min=8), default=None,
              help="Tokens per input, special tokens included [default: 64].")
@click.option("--head", type=click.Choice(["linear", "verbalizer"]), default=None,
              help="linear: a trainable Linear(d, C); verbalizer: the frozen MLM head at [MASK] on one word per "
                   "label (method prompt only) [default: linear for prefix, verbalizer for prompt]. A backbone "
                   "without a stored MLM head (e.g. all-MiniLM-L6-v2) needs linear.")
@click.option("--verbalizer", "verbalizer", default=None, metavar="W1,W2,...",
              help="Verbalizer words, one per label in label order, each a single vocabulary token (implies "
                   "--head verbalizer) [default: the task's first word set the tokenizer holds].")
@click.option("--train-size", type=click.IntRange(min=1), default=None, help="Training examples [default: the task's].")
@click.option("--test-size", type=click.IntRange(min=1), default=None, help="Test examples [default: the task's].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="JSON object of TuningConfig fields (unknown keys and values that contradict an option given "
                   "are errors); the task.json 'config' of an earlier run works.")
@click.option("--device", default="auto", show_default=True,
              help="torch device: auto (cuda when available, else cpu), cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads [default: torch's].")
@click.option("--force", is_flag=True, help="Replace --out if it is a task directory (never anything else).")
@click.option("--allow-pickle", is_flag=True, help="Also load pickle (.bin) weights; only for trusted models.")
@click.option("--list-tasks", is_flag=True, help="List the tasks and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the result (or the task list) as JSON on stdout.")
@common_options
def tune(model: str | None, task: str | None, data: str | None, out: str | None, method: str | None,
         length: int | None, epochs: int | None, lr: float | None, batch_size: int | None, seed: int | None,
         max_length: int | None, head: str | None, verbalizer: str | None, train_size: int | None, test_size: int | None,
         config_file: str | None, device: str, threads: int | None, force: bool, allow_pickle: bool,
         list_tasks: bool, as_json: bool, verbose: int, quiet: bool, debug: bool) -> int:
    """Prompt-tune a task on MODEL (a local directory or hub id), whose weights stay frozen.

    \b
    Trains only the prompt (and a linear head), reports train / test accuracy on the task's
    held-out split (a token task: per word, plus the macro-F1 over tags), and writes
    --out/task.safetensors + --out/task.json, which lmsan-export --task bakes into a guard.
    Examples:
      lmsan-tune MODEL --task sms-spam --out tasks/spam
      lmsan-tune MODEL --task polarity --method prompt --verbalizer bad,good --out tasks/pol
      lmsan-tune MODEL --task oanc-pos --out tasks/pos     (export it with a --target token PV set)
      lmsan-tune MODEL --data tickets.jsonl --out tasks/tickets   (your own labelled examples)
      lmsan-tune --list-tasks

    Exit status: 0 done, 2 error, 4 usage.
    """
    configure_logging(verbose, quiet)
    if list_tasks:
        return _list_tasks(as_json)
    if data is not None and task is None:
        task = Path(data).stem
    missing = [name for name, value in (("MODEL", model), ("--task", task), ("--out", out)) if value is None]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)} (or pass --list-tasks)")
    config = tuning_config(task, config_file, {
        "method": method, "length": length, "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
        "max_length": max_length, "head": head, "verbalizer": _words(verbalizer), "train_size": train_size,
        "test_size": test_size, "data": data})
    from lmsan.models.checks import resolve_device
    from lmsan.tuning.store import check_out_dir

    device = resolve_device(device)
    out_dir = Path(out)
    check_out_dir(out_dir, overwrite=force)  # before any slow work
    return _run(model, config, out_dir, device=device, threads=threads, force=force, allow_pickle=allow_pickle,
                as_json=as_json, quiet=quiet)


def _run(model: str, config: Any, out_dir: Path, *, device: str, threads: int | None, force: bool,
         allow_pickle: bool, as_json: bool, quiet: bool) -> int:
    """Load the data and the model, tune, save and report; returns the exit code."""
    from lmsan.tuning.tasks import task_data

    data = task_data(config.task, train_size=config.train_size, test_size=config.test_size, seed=config.data_seed,
                     source=config.data)
    config = config.replace(train_size=len(data.train), test_size=len(data.test))  # a file task's, resolved
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    from lmsan.models import load_model
    from lmsan.tuning.store import read_task_manifest, save_task
    from lmsan.tuning.train import tune as run_tuning

    loaded = load_model(model, allow_pickle=allow_pickle, device=device, with_mlm_head=config.head == "verbalizer")
    tuned = run_tuning(loaded, data, config, progress=not quiet)
    save_task(out_dir, tuned, loaded, overwrite=force)
    metrics = tuned.metrics
    if not quiet:
        f1 = f", test F1 {metrics['test_f1']:.3f}" if "test_f1" in metrics else ""
        click.echo(f"{config.task} ({config.method}, P={config.length}, {config.head} head): train accuracy "
                   f"{metrics['train_accuracy']:.3f}, test accuracy {metrics['test_accuracy']:.3f}{f1} "
                   f"(chance {metrics['chance']:.3f}, {metrics['wall_s']:.1f} s)", err=True)
        click.echo(f"wrote {out_dir / 'task.safetensors'} and {out_dir / 'task.json'}", err=True)
    if as_json:
        emit_json({"out": str(out_dir), "manifest": read_task_manifest(out_dir)})
    else:
        click.echo(str(out_dir))
    return EXIT_CLEAN


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``lmsan-tune``; exits once with the mapped code."""
    run(tune, "lmsan-tune", argv)


if __name__ == "__main__":
    main()
