"""Export a model with the fused sign-match head to ONNX, with a ``guard.json`` manifest.

``export_guard`` (``lmsan.export.pipeline``) is the entry point; ``lmsan.export.head`` holds the
torch modules. Importing this package does not import torch. Never imports mining or runtime.
"""

from lmsan.export.manifest import GUARD_FORMAT, MANIFEST
from lmsan.export.pipeline import ExportResult, export_guard

__all__ = ["ExportResult", "GUARD_FORMAT", "MANIFEST", "export_guard"]
