"""Which optional extra each command needs, and the one-line error when it is not installed.

``pip install lmsan`` is the torch-free runtime (``lmsan-guard``, ``lmsan-calibrate``, ``lmsan.runtime``,
``lmsan data``).
Everything else lives in extras (``pyproject.toml``); a command run without its extra fails with
``MissingExtraError`` naming the extra and the pip command (``lmsan.cli._common`` prints it and
exits 2). Detection uses ``importlib.util.find_spec``, so checking imports nothing. Stdlib only.
"""

from __future__ import annotations

import importlib.util

from lmsan.errors import LmsanError

# extra -> the top-level modules it installs (import names, not distribution names)
EXTRAS: dict[str, tuple[str, ...]] = {
    "mine": ("torch", "transformers", "onnx", "onnxscript"),
    "serve": ("starlette", "uvicorn"),
    "ray": ("ray",),
}

# command (``lmsan <command>`` = ``lmsan-<command>``) -> the extras it needs; absent: the core install
COMMANDS: dict[str, tuple[str, ...]] = {
    "attack": ("mine",),
    "mine": ("mine",),
    "export": ("mine",),
    "tune": ("mine",),
    "serve": ("serve",),
    "scan-many": ("ray", "mine"),
}


class MissingExtraError(LmsanError, ImportError):
    """A command needs an optional extra whose packages are not installed."""


def installed(module: str) -> bool:
    """Say whether top-level ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-imported package counts as missing
        return False


def missing_extras(command: str) -> list[str]:
    """Return the extras ``command`` needs that are not (fully) installed, in ``COMMANDS`` order."""
    return [extra for extra in COMMANDS.get(command, ()) if not all(map(installed, EXTRAS[extra]))]


def extra_of(module: str) -> str | None:
    """Return the extra that installs ``module`` (dotted names count by their top level), or None."""
    top = module.partition(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)


def missing_extra_error(extras: list[str]) -> MissingExtraError:
    """Build the error for ``extras`` (non-empty), naming their missing packages and the pip command.

    Example: ``this command needs the 'mine' extra (torch is not installed): pip install 'lmsan[mine]'``.
    """
    packages = [module for extra in extras for module in EXTRAS[extra] if not installed(module)]
    names = " and ".join(f"'{extra}'" for extra in extras)
    noun = "extra" if len(extras) == 1 else "extras"
    verb = "is" if len(packages) == 1 else "are"
    return MissingExtraError(f"this command needs the {names} {noun} ({', '.join(packages)} {verb} not installed): "
                             f"pip install 'lmsan[{','.join(sorted(extras))}]'")


def explain(exc: ModuleNotFoundError, command: str | None = None) -> MissingExtraError | None:
    """Turn a failed import of an extra's package into ``MissingExtraError``; None for any other.

    Args:
        exc: the import failure; only a top-level package of a known extra that is really not
            installed counts (a missing submodule of an installed package is a different bug).
        command: the command that ran, if known: the message then names all the extras it lacks.
    """
    extra = extra_of(exc.name or "")
    if extra is None or installed(exc.name.partition(".")[0]):
        return None
    extras = missing_extras(command) if command else []
    return missing_extra_error(extras if extra in extras else [*extras, extra])
