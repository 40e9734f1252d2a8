"""OrtEngine: the one place that knows about ONNX Runtime sessions and execution providers.

Provider choice is verified, not assumed: for each candidate we create a session *and* run a warm-up batch,
and only a provider that survives both is used. A provider that fails either step is recorded with its reason
and the next one is tried, so a broken CUDA install degrades to CPU instead of crashing mid-library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from photosift.core.errors import ModelError, ProviderError
from photosift.models.registry import ModelCard, ResolvedModel, card_from_metadata

# Best first. Names users type -> ORT provider names.
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER = list(PROVIDER_ALIASES.values())
# Providers whose inputs live in device memory: large batches are bound (IO binding) so ORT copies the input
# once, asynchronously, instead of staging it per run, and outputs are written straight to host memory.
IO_BINDING_PROVIDERS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}
IO_BINDING_MIN_BATCH = 8


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


def candidate_providers(requested: str, available: list[str]) -> list[str]:
    """The providers to try, best first. 'auto' tries every available one; a named one must be available."""
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
            f"(available: {', '.join(available)}; for CUDA/TensorRT install onnxruntime-gpu)"
        )
    # A named provider still falls back to CPU when its warm-up fails, and says so.
    return [name] if name == "CPUExecutionProvider" else [name, "CPUExecutionProvider"]


class OrtEngine:
    """Runs a classifier model on batches of CHW float32 tensors."""

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
        import onnxruntime as ort

        self.model = model
        # The card is read from the session's own metadata: a second session just for the card would cost
        # ~60 ms of every cold start.
        known_card: ModelCard | None = model.__dict__.get("card")
        self._ort = ort
        available = ort.get_available_providers()
        threads = intra_op_threads if intra_op_threads is not None else (os.cpu_count() or 1)
        attempts: list[ProviderAttempt] = []
        self.session: Any = None
        for name in candidates if candidates is not None else candidate_providers(provider, available):
            try:
                session = self._create(name, threads, spinning, cache_dir)
                if known_card is None:
                    known_card = card_from_metadata(session.get_modelmeta().custom_metadata_map, model.path)
                    model.__dict__["card"] = known_card  # ResolvedModel.card is a cached_property
                self.card = known_card
                self._check_io(session)
                self._warm_up(session, warmup_batch)
            except ModelError:
                raise  # the model itself is wrong: another provider will not help
            except Exception as exc:  # any other failure means: try the next provider
                attempts.append(ProviderAttempt(name, False, _one_line(exc)))
                continue
            attempts.append(ProviderAttempt(name, True))
            self.session = session
            break
        if self.session is None:
            detail = "; ".join(f"{a.provider}: {a.reason}" for a in attempts) or "no provider available"
            raise ProviderError(f"{model.path}: no execution provider could run the model ({detail})")
        used = self.session.get_providers()[0]
        self.info = EngineInfo(provider=used, attempts=attempts, intra_op_threads=threads)
        self._outputs = [self.card.logits_name]
        if self.has_embedding and self.card.embedding_name:
            self._outputs.append(self.card.embedding_name)
        # None on the CPU path: plain session.run, unchanged.
        self.io_device: str | None = IO_BINDING_PROVIDERS.get(used)

    @property
    def provider(self) -> str:
        return self.info.provider

    @property
    def has_embedding(self) -> bool:
        name = self.card.embedding_name
        return name is not None and name in {o.name for o in self.session.get_outputs()}

    def _create(self, provider: str, threads: int, spinning: bool, cache_dir: str | None) -> Any:
        ort = self._ort
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning threads burn the cores the decoder threads need between batches (measured: no gain).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        providers: list[Any] = [provider]
        if provider != "CPUExecutionProvider":
            providers = [(provider, provider_options(provider, cache_dir)), "CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(str(self.model.path), sess_options=opts, providers=providers)
        except Exception as exc:
            if provider == "CPUExecutionProvider":
                raise ModelError(f"{self.model.path}: cannot load model ({_one_line(exc)})") from None
            raise
        if provider != "CPUExecutionProvider" and session.get_providers()[0] != provider:
            raise ProviderError(f"{provider} was not applied by onnxruntime")
        return session

    def _check_io(self, session: Any) -> None:
        card = self.card
        inputs = {i.name: i for i in session.get_inputs()}
        if card.input_name not in inputs:
            raise ModelError(f"{self.model.path}: model has no input named {card.input_name!r}")
        shape = inputs[card.input_name].shape
        if len(shape) != 4 or shape[1:] != [3, card.input_size, card.input_size]:
            raise ModelError(
                f"{self.model.path}: input shape {shape} does not match the card (N,3,{card.input_size},{card.input_size})"
            )
        if card.logits_name not in {o.name for o in session.get_outputs()}:
            raise ModelError(f"{self.model.path}: model has no output named {card.logits_name!r}")

    def _warm_up(self, session: Any, batch: int) -> None:
        size = self.card.input_size
        x = np.zeros((batch, 3, size, size), dtype=np.float32)
        (out,) = session.run([self.card.logits_name], {self.card.input_name: x})
        if out.shape != (batch, len(self.card.labels)):
            raise ModelError(
                f"{self.model.path}: output shape {out.shape} does not match {len(self.card.labels)} labels"
            )
        if not np.isfinite(out).all():
            raise ProviderError("warm-up produced non-finite outputs")

    def run(self, batch: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """(N,3,S,S) float32 -> (logits (N,C) float32, embedding (N,D) float32 or None).

        ``batch`` is a numpy array, or (GPU decode) a contiguous float32 CUDA torch tensor, which is bound
        in place when the session runs on CUDA/TensorRT.
        """
        if self.io_device is not None and (_is_device_tensor(batch) or len(batch) >= IO_BINDING_MIN_BATCH):
            return self.run_bound(batch, self.io_device)
        if _is_device_tensor(batch):
            batch = batch.cpu().numpy()
        outs = self.session.run(self._outputs, {self.card.input_name: batch})
        return outs[0], (outs[1] if len(outs) > 1 else None)

    def run_bound(self, batch: Any, device: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Run with IO binding: the input is placed on ``device`` once, outputs are bound to host memory."""
        binding = self.session.io_binding()
        name = self.card.input_name
        if _is_device_tensor(batch):
            binding.bind_input(
                name, "cuda", batch.device.index or 0, np.float32, list(batch.shape), batch.data_ptr()
            )
        else:
            value = self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch), device, 0)
            binding.bind_ortvalue_input(name, value)
        for out in self._outputs:
            binding.bind_output(out, "cpu")
        self.session.run_with_iobinding(binding)
        outs = binding.copy_outputs_to_cpu()
        return outs[0], (outs[1] if len(outs) > 1 else None)


def _is_device_tensor(batch: Any) -> bool:
    """A torch tensor on a GPU (the GPU decode path); numpy arrays are never device tensors."""
    return (
        not isinstance(batch, np.ndarray) and getattr(getattr(batch, "device", None), "type", None) == "cuda"
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
