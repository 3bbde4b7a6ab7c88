"""lmsan: find task-agnostic backdoors in Transformer language models and guard against them.

Pipeline: ``lmsan.mining`` (PV mining and filtering) -> ``lmsan.export`` (fused ONNX graph) ->
``lmsan.runtime`` (torch-free guard). Supports: ``lmsan.data``, ``lmsan.models``, ``lmsan.attacks``.
This module imports nothing heavy.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
