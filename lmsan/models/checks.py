"""Load-time checks for ``load_model``: the tokenizer fits the model, the device exists, and a
failed load says why in one line (hub unreachable, unsafe pickle) instead of a library's advice.

Imports torch and huggingface_hub lazily; never mining, export or runtime.
"""

from __future__ import annotations

import os
import re
from typing import Any

from lmsan.errors import ConfigError, ModelLoadError

# Words every English-capable tokenizer knows; a tokenizer that maps all of them to its unknown
# token has no real vocabulary (e.g. transformers' 5-token fallback when tokenizer files are missing).
COMMON_WORDS = ("the", "of", "and", "to", "in", "is", "was", "for", "with", "water", "people", "time")
# A tokenizer may have fewer ids than embedding rows (rows padded to a multiple of 64/128, or a few
# reserved ids), but never fewer than this share of them.
MIN_VOCAB_SHARE = 0.5
DEVICE_SYNTAX = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_tokenizer(tokenizer: Any, model: Any, where: str) -> None:
    """Refuse a tokenizer that cannot belong to ``model``.

    Args:
        tokenizer: the loaded transformers tokenizer.
        model: the loaded transformers model (its input-embedding matrix has ``rows`` rows).
        where: the model directory or hub id, for the message.

    Raises:
        ModelLoadError: an id (special tokens included) >= ``rows``; fewer than
            ``MIN_VOCAB_SHARE · rows`` tokens; or every one of ``COMMON_WORDS`` maps to the
            unknown token.
    """
    rows = int(model.get_input_embeddings().weight.shape[0])
    vocab = tokenizer.get_vocab()
    size = max(vocab.values(), default=-1) + 1
    config_size = getattr(model.config, "vocab_size", None)
    sizes = f"the model's input embedding has {rows} rows" + (
        f" (config vocab_size {config_size})" if config_size not in (None, rows) else "")
    hint = "tokenizer files missing or from another model?"
    if size > rows:
        raise ModelLoadError(f"the tokenizer of {where} has ids up to {size - 1} but {sizes}: {hint}")
    for name, token_id in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids):
        if token_id is None or not 0 <= token_id < rows:
            raise ModelLoadError(f"the tokenizer of {where} gives special token {name!r} id {token_id}, "
                                 f"but {sizes}: {hint}")
    if size < MIN_VOCAB_SHARE * rows:
        raise ModelLoadError(f"the tokenizer of {where} has {size} tokens but {sizes}: {hint}")
    unk = tokenizer.unk_token_id
    if unk is not None:
        ids = [tokenizer(word, add_special_tokens=False)["input_ids"] for word in COMMON_WORDS]
        if all(set(word_ids) <= {unk} for word_ids in ids):
            raise ModelLoadError(f"the tokenizer of {where} maps common words ({', '.join(COMMON_WORDS[:4])}, ...) "
                                 f"to its unknown token {tokenizer.unk_token!r}: {hint}")


def resolve_device(device: str) -> str:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a device this machine has.

    ``auto`` is ``cuda`` when CUDA is available, else ``cpu``.

    Raises:
        ConfigError: other syntax, CUDA unavailable, or ``N`` >= the number of CUDA devices.
    """
    if not DEVICE_SYNTAX.fullmatch(device):
        raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    if device == "cpu":
        return device
    import torch

    available = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise ConfigError(f"--device {device}: CUDA is not available here (available: cpu)")
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"--device {device}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return device


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def check_hub_id(repo_id: str, *, timeout_s: float = 3.0) -> None:
    """Fail fast for a hub id that is invalid, or neither cached nor reachable.

    Without this, an unreachable hub costs minutes of huggingface_hub retries before the same
    answer. A cached id passes (transformers then loads it from the cache), and so does any id
    behind a proxy (the proxy, not a direct connection, decides reachability).

    Raises:
        ModelLoadError: not a valid hub id; not cached while offline or while the hub endpoint
            does not accept a TCP connection within ``timeout_s``.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            return
    except HFValidationError as exc:
        raise _invalid_id(repo_id) from exc
    if _offline():
        raise _offline_error(repo_id)
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        raise _unreachable(repo_id, exc) from exc


def hub_error(repo_id: str, exc: BaseException) -> ModelLoadError:
    """Word a failed hub load: unreachable (offline or no network), not found, gated, or other."""
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError)

    chain = _chain(exc)
    if any(isinstance(e, HFValidationError) for e in chain):
        return _invalid_id(repo_id)
    if any(isinstance(e, GatedRepoError) for e in chain):
        return ModelLoadError(f"{repo_id} is not a local directory, and on the hub it is gated: log in with "
                              "access, or download it first")
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return ModelLoadError(f"{repo_id} is not a local directory, and the hub has no model {repo_id!r} "
                              "(or it is private)")
    if _offline() or any(isinstance(e, OfflineModeIsEnabled) for e in chain):
        return _offline_error(repo_id)
    if any(isinstance(e, (LocalEntryNotFoundError, ConnectionError, TimeoutError)) or "ConnectError" in
           type(e).__name__ or "Timeout" in type(e).__name__ for e in chain):
        return _unreachable(repo_id, chain[-1])
    return ModelLoadError(f"cannot load {repo_id} from the hub: {type(exc).__name__}: {_first_line(exc)}")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _invalid_id(repo_id: str) -> ModelLoadError:
    return ModelLoadError(f"{repo_id} is not a local directory, nor a valid hub id (owner/name)")


def _offline_error(repo_id: str) -> ModelLoadError:
    return ModelLoadError(f"{repo_id} is not a local directory nor in the Hugging Face cache, and the hub is "
                          "unreachable: offline mode (HF_HUB_OFFLINE=1); pass a local directory, or download it "
                          "while online")


def _unreachable(repo_id: str, cause: BaseException) -> ModelLoadError:
    return ModelLoadError(f"{repo_id} is not a local directory nor in the Hugging Face cache, and the hub is "
                          f"unreachable ({type(cause).__name__}: {_first_line(cause)}); check the network, or "
                          "pass a local directory")


def pickle_error(where: str, exc: BaseException) -> ModelLoadError | None:
    """Word a failed pickle load without torch's advice to retry with ``weights_only=False``.

    Returns:
        The error to raise, or ``None`` when ``exc`` is not a pickle failure.
    """
    import pickle

    text = str(exc)
    if not ("weights_only" in text or isinstance(exc, pickle.UnpicklingError)):
        return None
    found = re.search(r"Unsupported global: GLOBAL [\w.]+", text)
    if found:  # torch's weights-only unpickler refused a class or function
        return ModelLoadError(f"the pickle weights in {where} hold more than tensors ({found.group(0)}); lmsan "
                              "loads pickle only as plain tensors and never runs its code. Convert the checkpoint "
                              "to safetensors where you trust it, then load that")
    reason = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    detail = reason.group(1) if reason else ("" if "weights_only" in text else _first_line(exc))
    return ModelLoadError(f"the pickle weights in {where} cannot be read as plain tensors (a damaged file, or "
                          f"more than tensors){': ' + detail if detail else ''}; lmsan never runs pickle code")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
