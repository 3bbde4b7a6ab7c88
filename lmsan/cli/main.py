"""``lmsan``: one umbrella command over every tool (``lmsan mine`` = ``lmsan-mine``, ...).

Subcommands are registered lazily so ``lmsan --help`` imports nothing heavy.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from lmsan import __version__
from lmsan.cli._common import CONTEXT_SETTINGS, run
from lmsan.extras import explain, missing_extras

# subcommand -> (module, attribute of the click command)
SUBCOMMANDS = {
    "data": ("lmsan.cli.data", "data"),
    "attack": ("lmsan.cli.attack", "attack"),
    "mine": ("lmsan.cli.mine", "mine"),
    "export": ("lmsan.cli.export", "export"),
    "guard": ("lmsan.cli.guard", "guard"),
    "calibrate": ("lmsan.cli.calibrate", "calibrate"),
    "tune": ("lmsan.cli.tune", "tune"),
    "serve": ("lmsan.cli.serve", "serve"),
    "scan-many": ("lmsan.cli.scan_many", "scan_many"),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used.

    A subcommand whose optional extra is not installed stays listed (marked with the pip command)
    and fails with ``MissingExtraError`` naming the extra, never with "No such command".
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _) in SUBCOMMANDS.items() if importlib.util.find_spec(module)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module, attribute = SUBCOMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attribute)
        except ModuleNotFoundError as exc:  # a module that imports its extra at the top
            missing = explain(exc, name)
            if missing is None:
                raise
            raise missing from exc

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:  # the subcommand imported its extra on use
            missing = explain(exc, ctx.invoked_subcommand)
            if missing is None:
                raise
            raise missing from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List every subcommand; one whose extra is missing ends with ``[needs lmsan[EXTRA]]``."""
        names = self.list_commands(ctx)
        width = formatter.width - 6 - max(map(len, names), default=0)
        rows = []
        for name in names:
            missing = missing_extras(name)
            note = f" [needs lmsan[{','.join(sorted(missing))}]]" if missing else ""
            try:
                command = self.get_command(ctx, name)
            except Exception:  # noqa: BLE001 - listing never fails; running the command reports the error
                command = None
            rows.append((name, (command.get_short_help_str(width - len(note)) if command else "") + note))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group("lmsan", cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="lmsan")
def cli() -> None:
    """Scan Transformer language models for task-agnostic backdoors and guard their inputs.

    \b
    lmsan data     fetch and inspect offline corpora
    lmsan attack   plant backdoors in test models (evaluation only)
    lmsan mine     PV mining: is this model backdoored?  (= lmsan-mine)
    lmsan export   bake backbone + fused sign-match node into ONNX  (= lmsan-export)
    lmsan guard    scan inputs with the ONNX guard, removing triggers  (= lmsan-guard)
    lmsan tune     prompt-tune a frozen backbone for a task  (= lmsan-tune)
    lmsan serve    HTTP service around one guard, with micro-batching
    lmsan scan-many  scan many models on a Ray cluster, resumable
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lmsan``."""
    run(cli, "lmsan", argv)
