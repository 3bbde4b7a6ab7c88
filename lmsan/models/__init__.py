"""Models: safe loading, target positions, tiny pretrained-like builders.

Imports torch and transformers lazily (inside functions), so importing this package is cheap.
"""

from lmsan.models.loading import LoadedModel, load_model, minilm_path, weights_fingerprint

__all__ = ["LoadedModel", "load_model", "minilm_path", "weights_fingerprint"]
