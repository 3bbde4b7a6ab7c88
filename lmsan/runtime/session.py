"""onnxruntime session for a guard: provider choice, TensorRT engine cache, no silent fallback.

onnxruntime-gpu falls back to CPU (with a log line only) when CUDA or TensorRT libraries are
missing. ``open_session`` compares the provider actually in use with the one asked for and raises
``ProviderError`` instead, unless ``allow_fallback`` is set (then it logs a WARNING).

onnxruntime-gpu finds the CUDA and cuDNN libraries of the ``nvidia-*`` wheels only once torch has
loaded them, and the runtime never imports torch: ``open_session`` calls
``onnxruntime.preload_dlls()`` first whenever a GPU provider is asked for.
Imports onnxruntime only (numpy through it).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from lmsan.errors import ProviderError

log = logging.getLogger(__name__)

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
ALIASES = {"cpu": CPU, "cuda": CUDA, "gpu": CUDA, "tensorrt": TENSORRT, "trt": TENSORRT}
ProviderSpec = str | tuple[str, dict]


def resolve_providers(providers: Sequence[ProviderSpec] | str | None, *, inputs: Sequence[str],
                      max_batch: int, max_length: int, cache: Path | None) -> list[tuple[str, dict]]:
    """Expand aliases, check availability and add per-provider defaults.

    Args:
        providers: provider names (or ``(name, options)``), aliases ``cpu``/``cuda``/``tensorrt``;
            ``None`` means CPU. TensorRT is followed by CUDA (if available) and CPU for the nodes
            it cannot take; CUDA by CPU.
        inputs: the graph's sequence input names (for TensorRT optimization profiles).
        max_batch: largest batch the guard sends (TensorRT profile maximum).
        max_length: longest sequence (TensorRT profile maximum).
        cache: TensorRT engine and timing cache directory.

    Raises:
        ProviderError: a provider is unknown or not available in this onnxruntime build.
    """
    import onnxruntime as ort

    if providers is None:
        providers = [CPU]
    elif isinstance(providers, str):
        providers = [providers]
    available = ort.get_available_providers()
    resolved: list[tuple[str, dict]] = []
    for spec in providers:
        name, options = (spec, {}) if isinstance(spec, str) else (spec[0], dict(spec[1]))
        name = ALIASES.get(name.lower(), name)
        if name not in available:
            raise ProviderError(
                f"execution provider {name} is not available in this onnxruntime build; available: "
                f"{', '.join(available)} (for CUDA/TensorRT: pip uninstall onnxruntime && pip install onnxruntime-gpu)"
            )
        if name == TENSORRT:
            options = {**_tensorrt_defaults(inputs, max_batch, max_length, cache), **options}
        resolved.append((name, options))
    names = [name for name, _ in resolved]
    if TENSORRT in names and CUDA not in names and CUDA in available:
        resolved.append((CUDA, {}))
    if CPU not in [name for name, _ in resolved]:
        resolved.append((CPU, {}))
    return resolved


def _tensorrt_defaults(inputs: Sequence[str], max_batch: int, max_length: int, cache: Path | None) -> dict:
    """Engine + timing cache, and one optimization profile covering every shape the guard sends."""
    def shapes(batch: int, seq: int) -> str:
        return ",".join(f"{name}:{batch}x{seq}" for name in inputs)

    options = {
        "trt_profile_min_shapes": shapes(1, 1),
        "trt_profile_opt_shapes": shapes(1, min(64, max_length)),
        "trt_profile_max_shapes": shapes(max_batch, max_length),
    }
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        options.update({
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
        })
    return options


def open_session(graph: Path, providers: list[tuple[str, dict]], *, threads: int | None = None,
                 allow_fallback: bool = False) -> Any:
    """Create the (thread-safe, shared) inference session and check the provider in use.

    Args:
        graph: the ONNX graph.
        providers: output of ``resolve_providers``.
        threads: intra-op threads; ``None`` lets onnxruntime decide.
        allow_fallback: accept a session whose first provider is not the requested one.

    Raises:
        ProviderError: onnxruntime fell back from the requested provider, or failed to create it.
    """
    import onnxruntime as ort

    if any(name in (CUDA, TENSORRT) for name, _ in providers):
        preload_gpu_libraries(ort)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the library does not log to stderr by itself
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(graph), options, providers=providers)
    except Exception as exc:
        raise ProviderError(f"cannot create an onnxruntime session on {providers[0][0]}: {exc}") from exc
    in_use = session.get_providers()[0]
    if in_use != providers[0][0]:
        message = (f"asked for {providers[0][0]} but onnxruntime runs on {in_use} (missing CUDA/TensorRT "
                   f"libraries?); session providers: {', '.join(session.get_providers())}")
        if not allow_fallback:
            raise ProviderError(message)
        log.warning(message)
    return session


def preload_gpu_libraries(ort: Any) -> None:
    """Load the CUDA/cuDNN libraries that onnxruntime-gpu needs from the ``nvidia-*`` wheels.

    A no-op on onnxruntime builds without ``preload_dlls`` (before 1.21) and where torch already
    loaded them. The function prints its warnings: they go to stderr, stdout stays for results
    (the redirect is process-wide while it runs, once per GPU session created).
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        with contextlib.redirect_stdout(sys.stderr):
            preload()
    except Exception as exc:  # the session creation that follows reports what is really missing
        log.warning("onnxruntime.preload_dlls() failed: %s", exc)
