"""``lmsan-export``: bake a model and its PV set into a guard directory (ONNX + tokenizer + manifest).

    lmsan-export MODEL --pvs out/pvs.safetensors --out guard/ [--task TASK_DIR ...] [--optimize] [--fp16 | --int8]

With ``--task`` (a task directory from ``lmsan-tune``) the one graph answers the prompt-tuned task
and checks the input against the PVs; the guard returns the answer for the sanitized input.
``--monitor bare`` (default) checks a second pass of the backbone without the task's prompt (as
the PVs were mined); ``--monitor task`` checks the task's own pass (one pass). Several ``--task``
share one graph whose task tensors are inputs.

``--force`` replaces an existing ``--out`` only when it is a guard directory.

Torch is imported inside the command, so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from lmsan.cli._common import CONTEXT_SETTINGS, EXIT_CLEAN, common_options, configure_logging, emit_json, run

MONITORS = ("bare", "task")  # lmsan.export.tasks.MONITORS (not imported: --help stays fast)
DEFAULT_MONITOR = "bare"
MATCH_THRESHOLD = 0.8  # lmsan.pvset.MATCH_THRESHOLD (not imported: numpy)


@click.command("lmsan-export", context_settings=CONTEXT_SETTINGS)
@click.argument("model")
@click.option("--pvs", "pvs", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PV set (pvs.safetensors) from lmsan-mine.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Guard directory to write.")
@click.option("--task", "task", type=click.Path(exists=True, file_okay=False, path_type=Path), multiple=True,
              help="Task directory from lmsan-tune (tuned on MODEL): the graph also answers the task (logits), "
                   "and the monitor reads where its head reads (see --monitor). Repeat it for one "
                   "shared graph that serves several tasks (lmsan-guard --task picks one).")
@click.option("--shared", is_flag=True,
              help="Feed the task's prompt and head as graph inputs even for one task (more tasks can then use "
                   "the same graph); implied by several --task.")
@click.option("--monitor", type=click.Choice(MONITORS), default=DEFAULT_MONITOR, show_default=True,
              help="With --task, which forward pass the PV monitor reads. bare: the backbone again without the "
                   "task's prompt, as the PVs were mined (a prompt can push clean inputs onto a PV or triggered "
                   "ones off it); about 2 backbone passes per session call, the second pruned to one row in its "
                   "last layer. task: the task's own prompted pass, one pass; only for a task whose monitor has "
                   "been measured to flag as the bare one does.")
@click.option("--target", type=click.Choice(["cls", "token", "last", "mask"]), default=None,
              help="Target position; default (and only accepted value): the PV set's.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, max_open=True), default=MATCH_THRESHOLD, show_default=True,
              help="Default T_match stored in guard.json (adjustable at load time).")
@click.option("--optimize", is_flag=True,
              help="Run onnxruntime's transformer optimizer (fused Attention with legacy; for GPUs: slower on CPU).")
@click.option("--fp16", is_flag=True, help="float16 backbone (GPU); the sign-match head stays float32.")
@click.option("--int8", is_flag=True,
              help="Dynamic int8 MatMuls (CPU serving: 2-3x faster, same verdicts on MiniLM); the head stays float32.")
@click.option("--features", is_flag=True, help="Also output the target-position features [B, d].")
@click.option("--saliency/--no-saliency", default=True, show_default=True,
              help="Output the last layer's attention from the target position [B, T]; the guard's trigger "
                   "removal tries the word it points at first. Unpruned graphs: needs eager attention, off with "
                   "--optimize.")
@click.option("--prune/--no-prune", default=True, show_default=True,
              help="Run the last layer for the target row only (BERT-style layers; others run in full): "
                   "the guard skips most of one layer. Parity is checked against the full forward.")
@click.option("--exporter", type=click.Choice(["auto", "legacy", "dynamo"]), default="auto", show_default=True,
              help="torch.onnx exporter: auto = legacy (fastest on CPU, measured), dynamo if legacy fails.")
@click.option("--opset", type=click.IntRange(min=14), default=None, help="ONNX opset (default 17 legacy, 18 dynamo).")
@click.option("--force", is_flag=True,
              help="Replace an existing --out that is a guard directory (never a model directory or other files).")
@click.option("--allow-pickle", is_flag=True, help="Accept pickle-format weights (unsafe: runs code).")
@click.option("--json", "as_json", is_flag=True, help="Print the written guard.json as JSON.")
@common_options
def export(model: str, pvs: Path, out: Path, task: tuple[Path, ...], shared: bool, monitor: str, target: str | None,
           threshold: float, optimize: bool, fp16: bool, int8: bool, features: bool, saliency: bool, prune: bool, exporter: str,
           opset: int | None, force: bool, allow_pickle: bool, as_json: bool, verbose: int, quiet: bool, debug: bool) -> int:
    """Export MODEL with the fused sign-match node for the PVs in --pvs to the guard directory --out.

    With --task, the graph also runs the prompt-tuned task and lmsan-guard prints its answer;
    --monitor picks the pass the PV monitor reads (bare: the backbone without the prompt, default).
    """
    configure_logging(verbose, quiet)
    from lmsan.export import export_guard

    result = export_guard(model, pvs, out, target=target, threshold=threshold, optimize=optimize, fp16=fp16,
                          int8=int8, features=features, saliency=saliency, prune=prune, exporter=exporter,
                          opset=opset, allow_pickle=allow_pickle, overwrite=force, task=list(task) or None, shared=shared,
                          monitor=monitor)
    if as_json:
        emit_json(result.manifest)
    else:
        click.echo(str(result.path))
    parity = result.parity
    click.echo(f"parity: max_rel_diff={parity.max_rel_diff:.2e} count_mismatches={parity.count_mismatches} "
               f"({result.wall_s:.1f} s)", err=True)
    click.echo(f"digest: {result.manifest['digest']} (pin it: lmsan-guard --expect-digest)", err=True)
    return EXIT_CLEAN


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lmsan-export``."""
    run(export, "lmsan-export", argv)


if __name__ == "__main__":
    main()
