"""``lmsan``: one umbrella command over every tool (``lmsan mine`` = ``lmsan-mine``, ...).

Subcommands are registered lazily so ``lmsan --help`` imports nothing heavy.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from lmsan import __version__
from lmsan.cli._common import CONTEXT_SETTINGS, run

# subcommand -> (module, attribute of the click command)
SUBCOMMANDS = {
    "data": ("lmsan.cli.data", "data"),
    "attack": ("lmsan.cli.attack", "attack"),
    "mine": ("lmsan.cli.mine", "mine"),
    "export": ("lmsan.cli.export", "export"),
    "guard": ("lmsan.cli.guard", "guard"),
    "tune": ("lmsan.cli.tune", "tune"),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _) in SUBCOMMANDS.items() if importlib.util.find_spec(module)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module, attribute = SUBCOMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError):
            return None


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
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lmsan``."""
    run(cli, "lmsan", argv)
