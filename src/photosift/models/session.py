"""The one place that makes ONNX Runtime sessions, and the engine that runs a carded model on batches.

:func:`open_session` is the session factory every part of photosift uses (the pipeline's engine, the face
detector, the personal head, the toolchain, tools and tests): thread counts, graph optimization level, spinning,
provider options and the one-line error for a file ONNX Runtime cannot load live here and nowhere else.

:class:`OrtEngine` chooses the execution provider by trying, not by assuming: for each candidate it creates a
session *and* runs a warm-up batch, and only a provider that survives both is used. A provider that fails
either step is recorded with its reason and the next one is tried, so a broken CUDA install degrades to CPU
instead of crashing mid-library. ``auto`` never picks a provider that sends data off the machine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from photosift.core.errors import ModelError, ProviderError
from photosift.models.card import ModelCard, card_from_metadata
from photosift.models.registry import ResolvedModel

# Best first. Names users type -> ORT provider names. Remote providers (AzureExecutionProvider, which some
# onnxruntime builds list) are deliberately absent: photosift never sends a photo anywhere.
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER = list(PROVIDER_ALIASES.values())
CPU = "CPUExecutionProvider"
# Providers whose inputs live in device memory: large batches are bound (IO binding) so ORT copies the input
# once, asynchronously, instead of staging it per run, and outputs are written straight to host memory.
IO_BINDING_PROVIDERS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}
IO_BINDING_MIN_BATCH = 8
_LEVELS = ("none", "basic", "extended", "all")


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(
            "onnxruntime is not installed: pip install 'photosift[cpu]' (or 'photosift[gpu]' for CUDA)"
        ) from None
    return onnxruntime


def provider_options(name: str, cache_dir: str | None) -> dict[str, Any]:
    """Options that make each GPU provider usable for a photo library rather than a demo."""
    if name == "TensorrtExecutionProvider":
        opts: dict[str, Any] = {"trt_fp16_enable": True}
        if cache_dir:
            # Building a TensorRT engine takes minutes; cache it next to the catalog.
            opts.update(
                trt_engine_cache_enable=True, trt_engine_cache_path=cache_dir, trt_timing_cache_enable=True
            )
        return opts
    if name == "CUDAExecutionProvider":
        return {"cudnn_conv_algo_search": "HEURISTIC"}
    return {}


def open_session(
    model: Path | str | bytes,
    *,
    provider: str = CPU,
    threads: int | None = None,
    level: str = "all",
    spinning: bool = False,
    cache_dir: str | None = None,
    optimized_path: Path | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model`` (a file or serialized bytes) on ``provider``.

    ``threads``: intra-op threads (None: ORT's default, one per core). ``level``: graph optimization, none |
    basic | extended | all. ``optimized_path``: also write the optimized graph there (offline optimization).
    A file ONNX Runtime cannot load raises :class:`ModelError` naming it; a GPU provider that fails to start
    raises whatever ORT raised, so :class:`OrtEngine` can record it and fall back.
    """
    ort = _ort()
    if level not in _LEVELS:
        raise ValueError(f"unknown optimization level {level!r}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    # Spinning threads burn the cores the decoder threads need between batches (measured: no gain).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    providers: list[Any] = [CPU]
    if provider != CPU:
        providers = [(provider, provider_options(provider, cache_dir)), CPU]
    source = model if isinstance(model, bytes) else str(model)
    where = "model" if isinstance(model, bytes) else str(model)
    try:
        session = ort.InferenceSession(source, sess_options=opts, providers=providers)
    except Exception as exc:
        if provider == CPU:
            raise ModelError(f"{where}: not a loadable ONNX model ({one_line(exc)})") from None
        raise
    if provider != CPU and session.get_providers()[0] != provider:
        raise ProviderError(f"{provider} was not applied by onnxruntime")
    return session


@dataclass
class ProviderAttempt:
    provider: str
    ok: bool
    reason: str = ""


@dataclass
class EngineInfo:
    provider: str
    attempts: list[ProviderAttempt] = field(default_factory=list)
    intra_op_threads: int = 0


def available_providers() -> list[str]:
    return list(_ort().get_available_providers())


def candidate_providers(requested: str, available: Sequence[str]) -> list[str]:
    """The providers to try, best first. 'auto' tries every available local one; a named one must be available."""
    requested = requested.lower()
    if requested == "auto":
        return [p for p in AUTO_ORDER if p in available]
    if requested not in PROVIDER_ALIASES:
        raise ProviderError(
            f"unknown provider {requested!r} (choose from auto, {', '.join(PROVIDER_ALIASES)})"
        )
    name = PROVIDER_ALIASES[requested]
    if name not in available:
        raise ProviderError(
            f"provider {requested} is not available in this onnxruntime build "
            f"(available: {', '.join(available)}; for CUDA/TensorRT install photosift[gpu])"
        )
    # A named provider still falls back to CPU when its warm-up fails, and says so.
    return [name] if name == CPU else [name, CPU]


class OrtEngine:
    """Runs a carded model on batches of CHW float32 tensors; returns its outputs by role.

    Roles are what the card's task reads (``logits``, ``embedding``; see :mod:`photosift.models.tasks`), so the
    pipeline never needs to know a graph's output names.
    """

    card: ModelCard

    def __init__(
        self,
        model: ResolvedModel,
        provider: str = "auto",
        intra_op_threads: int | None = None,
        spinning: bool = False,
        cache_dir: str | None = None,
        warmup_batch: int = 1,
        candidates: list[str] | None = None,
    ) -> None:
        """``candidates`` overrides the provider order that ``provider`` implies (ORT provider names)."""
        self.model = model
        # The card is read from the session's own metadata: a second session just for the card would cost
        # ~60 ms of every cold start.
        known_card: ModelCard | None = model.__dict__.get("card")
        threads = intra_op_threads if intra_op_threads is not None else (os.cpu_count() or 1)
        attempts: list[ProviderAttempt] = []
        self.session: Any = None
        order = candidates if candidates is not None else candidate_providers(provider, available_providers())
        for name in order:
            try:
                session = open_session(
                    model.path, provider=name, threads=threads, spinning=spinning, cache_dir=cache_dir
                )
                if known_card is None:
                    known_card = card_from_metadata(session.get_modelmeta().custom_metadata_map, model.path)
                    model.__dict__["card"] = known_card  # ResolvedModel.card is a cached_property
                self.card = known_card
                self._roles = self._check_io(session)
                self._warm_up(session, warmup_batch)
            except ModelError:
                raise  # the model itself is wrong: another provider will not help
            except Exception as exc:  # any other failure means: try the next provider
                attempts.append(ProviderAttempt(name, False, one_line(exc)))
                continue
            attempts.append(ProviderAttempt(name, True))
            self.session = session
            break
        if self.session is None:
            detail = "; ".join(f"{a.provider}: {a.reason}" for a in attempts) or "no provider available"
            raise ProviderError(f"{model.path}: no execution provider could run the model ({detail})")
        used = self.session.get_providers()[0]
        self.info = EngineInfo(provider=used, attempts=attempts, intra_op_threads=threads)
        self._names = list(self._roles.values())
        # None on the CPU path: plain session.run, unchanged.
        self.io_device: str | None = IO_BINDING_PROVIDERS.get(used)

    @property
    def provider(self) -> str:
        return self.info.provider

    @property
    def roles(self) -> tuple[str, ...]:
        """The output roles this model provides ("logits", "embedding")."""
        return tuple(self._roles)

    def _check_io(self, session: Any) -> dict[str, str]:
        """The card's input and outputs must exist in the graph; returns role -> output name, present ones."""
        card, path = self.card, self.model.path
        inputs = {i.name: i for i in session.get_inputs()}
        if card.input_name not in inputs:
            raise ModelError(f"{path}: model has no input named {card.input_name!r}")
        shape = inputs[card.input_name].shape
        size = card.preprocess.input_size
        if len(shape) != 4 or shape[1:] != [3, size, size]:
            raise ModelError(f"{path}: input shape {shape} does not match the card (N,3,{size},{size})")
        outputs = {o.name for o in session.get_outputs()}
        roles = {role: name for role, name in card.output_names().items() if name in outputs}
        required = "logits" if card.task == "classify" else "embedding"
        if required not in roles:
            wanted = card.output_names()[required]
            raise ModelError(f"{path}: model has no output named {wanted!r} (its card's {required})")
        return roles

    def _warm_up(self, session: Any, batch: int) -> None:
        size = self.card.preprocess.input_size
        x = np.zeros((batch, 3, size, size), dtype=np.float32)
        outs = session.run(list(self._roles.values()), {self.card.input_name: x})
        for role, out in zip(self._roles, outs, strict=True):
            if out.ndim != 2 or out.shape[0] != batch:
                raise ModelError(f"{self.model.path}: output {role} has shape {out.shape}, expected (N, D)")
            if role == "logits" and out.shape[1] != len(self.card.labels):
                raise ModelError(
                    f"{self.model.path}: output shape {out.shape} does not match {len(self.card.labels)} labels"
                )
            if not np.isfinite(out).all():
                raise ProviderError("warm-up produced non-finite outputs")

    def run(self, batch: Any) -> dict[str, np.ndarray]:
        """(N,3,S,S) float32 -> {role: (N, D) float32} for every role the model provides.

        ``batch`` is a numpy array, or (GPU decode) a contiguous float32 CUDA torch tensor, which is bound
        in place when the session runs on CUDA/TensorRT.
        """
        if self.io_device is not None and (_is_device_tensor(batch) or len(batch) >= IO_BINDING_MIN_BATCH):
            return self.run_bound(batch, self.io_device)
        if _is_device_tensor(batch):
            batch = batch.cpu().numpy()
        outs = self.session.run(self._names, {self.card.input_name: batch})
        return dict(zip(self._roles, outs, strict=True))

    def run_bound(self, batch: Any, device: str) -> dict[str, np.ndarray]:
        """Run with IO binding: the input is placed on ``device`` once, outputs are bound to host memory."""
        binding = self.session.io_binding()
        name = self.card.input_name
        if _is_device_tensor(batch):
            binding.bind_input(
                name, "cuda", batch.device.index or 0, np.float32, list(batch.shape), batch.data_ptr()
            )
        else:
            value = _ort().OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch), device, 0)
            binding.bind_ortvalue_input(name, value)
        for out in self._names:
            binding.bind_output(out, "cpu")
        self.session.run_with_iobinding(binding)
        return dict(zip(self._roles, binding.copy_outputs_to_cpu(), strict=True))


def _is_device_tensor(batch: Any) -> bool:
    """A torch tensor on a GPU (the GPU decode path); numpy arrays are never device tensors."""
    return (
        not isinstance(batch, np.ndarray) and getattr(getattr(batch, "device", None), "type", None) == "cuda"
    )


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line, for error messages."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
