"""Exception hierarchy for lmsan.

Every error the library raises on purpose is an ``LmsanError``; where a builtin fits, the
subclass inherits it too, so callers may catch either. Only ``lmsan.cli._common`` maps these to
exit codes. Stdlib only.
"""

from __future__ import annotations


class LmsanError(Exception):
    """Base class of every deliberate lmsan error."""


class ConfigError(LmsanError, ValueError):
    """A configuration value or file is invalid (unknown key, out-of-range value)."""


class DataError(LmsanError, ValueError):
    """A data source is missing, malformed, empty or too small."""


class InputError(DataError):
    """One scan input is unusable; ``index`` is its position in the batch, ``reason`` the cause."""

    def __init__(self, reason: str, *, index: int | None = None) -> None:
        super().__init__(reason if index is None else f"input {index}: {reason}")
        self.reason, self.index = reason, index


class PVSetError(LmsanError, ValueError):
    """A PV-set file is missing, malformed, or does not fit the model."""


class ModelLoadError(LmsanError, OSError):
    """A model directory or hub id cannot be loaded."""


class UnsafeModelError(ModelLoadError):
    """The model holds only pickle weights and the caller did not opt in to loading them."""


class IntegrityError(LmsanError):
    """A file's SHA-256 does not match the hash recorded for it."""


class ExportError(LmsanError):
    """ONNX export or its parity check failed."""


class ProviderError(LmsanError):
    """A requested onnxruntime execution provider is unavailable."""
