"""PyTorch -> ONNX export with a dynamic batch axis, an embedded model card and a parity check.

The parity check runs PyTorch and ONNX Runtime on the same real images, preprocessed exactly as at inference,
and fails (leaving no output file) unless max |Δlogit| <= tolerance and every top-1 agrees.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from photosift.core.errors import PhotosiftError, ToolchainError
from photosift.models.card import ModelCard, imagenet_labels
from photosift.models.registry import sha256_file
from photosift.toolchain.archs import ArchDefaults, build
from photosift.toolchain.modelfile import (
    PARITY_TOLERANCE,
    ParityReport,
    check_parity,
    list_images,
    ort_optimize,
    session,
    set_card,
)

OPSET = 17


@dataclass
class ExportResult:
    path: Path
    sha256: str
    card: ModelCard
    parity: ParityReport


def parity_images(folder: Path, limit: int = 16) -> list[Path]:
    if not folder.is_dir():
        raise ToolchainError(f"{folder}: parity image folder not found")
    files = list_images(folder)
    if not files:
        raise ToolchainError(f"{folder}: no images for the parity check")
    return files[:limit]


def _batch(card: ModelCard, images: Sequence[Path]) -> np.ndarray:
    from photosift.core.imaging import load_tensor

    tensors = []
    for path in images:
        try:
            tensors.append(load_tensor(path, card.preprocess))
        except PhotosiftError:
            continue
    if not tensors:
        raise ToolchainError("none of the parity images could be decoded")
    return np.stack(tensors)


def _torch_parity(
    module: Any, onnx_path: Path, card: ModelCard, batch: np.ndarray, tolerance: float
) -> ParityReport:
    """PyTorch and ONNX Runtime on the same inputs (real photos, preprocessed exactly as at inference)."""
    import torch

    with torch.no_grad():
        out = module(torch.from_numpy(batch))
    ref = (out[0] if isinstance(out, tuple) else out).numpy()
    role, name = next(iter(card.output_names().items()))
    got = session(onnx_path).run([name], {card.input_name: batch})[0]
    return check_parity(ref, got, f"the exported model's {role}", tolerance)


def _torch_export(module: Any, size: int, tmp: Path, two_outputs: bool) -> None:
    torch_to_onnx(module, size, tmp, ["logits", "embedding"] if two_outputs else ["logits"])


def torch_to_onnx(module: Any, size: int, path: Path, outputs: Sequence[str]) -> None:
    """``module`` (image batch -> ``outputs``) to ONNX at ``path``: opset 17, every axis 0 dynamic ("batch")."""
    import torch

    dummy = torch.zeros(2, 3, size, size)
    axes = {name: {0: "batch"} for name in ["input", *outputs]}
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter's constant-folding notes and its advice to move to the dynamo exporter
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=["input"],
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


def _set_card(path: Path, card: ModelCard, out: Path) -> None:
    import onnx

    model = onnx.load(str(path))
    set_card(model, card)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def export(
    arch: str,
    weights: Path,
    out: Path,
    *,
    name: str | None = None,
    images: Sequence[Path] = (),
    labels: list[str] | None = None,
    defaults: ArchDefaults | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportResult:
    """Export ``arch`` + ``weights`` to ``out`` (ORT-optimized, portable), checking parity on ``images``."""
    module, arch_defaults = build(arch, weights)
    defaults = defaults or arch_defaults
    import torch

    with torch.no_grad():
        probe = module(torch.zeros(1, 3, defaults.preprocess.input_size, defaults.preprocess.input_size))
    two_outputs = isinstance(probe, tuple)
    logits = probe[0] if two_outputs else probe
    num_classes = int(logits.shape[-1])
    labels = labels or defaults.labels
    if labels is None:
        labels = imagenet_labels() if num_classes == 1000 else [f"class {i}" for i in range(num_classes)]
    if len(labels) != num_classes:
        raise ToolchainError(f"{len(labels)} labels for a model with {num_classes} outputs")
    card = ModelCard(
        name=name or out.stem,
        arch=arch,
        preprocess=defaults.preprocess,
        embedding_name="embedding" if two_outputs else None,
        labels=labels,
        source=defaults.source,
        license=defaults.license,
    )
    parity = _batch(card, images) if images else None
    return export_module(module, out, card, parity, tolerance)


def export_module(
    module: Any,
    out: Path,
    card: ModelCard,
    parity_inputs: np.ndarray | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportResult:
    """Export an in-memory PyTorch ``module`` (eval mode; image -> logits or (logits, embedding)) with ``card``
    to ``out``: dynamic batch axis on the input and every output, opset 17, ORT 'basic' optimization, and the
    parity check on ``parity_inputs`` (preprocessed photos). Nothing is written unless every step succeeds."""
    module.eval()  # dropout off, batch-norm statistics frozen: the graph and the parity reference alike
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".photosift-export-") as tmpdir:
        raw = Path(tmpdir) / "raw.onnx"
        carded = Path(tmpdir) / "carded.onnx"
        final = Path(tmpdir) / "final.onnx"
        try:
            _torch_export(module, card.preprocess.input_size, raw, card.embedding_name is not None)
        except Exception as exc:
            raise ToolchainError(
                f"torch.onnx.export failed for {card.arch}: {str(exc).splitlines()[0][:300]}"
            ) from None
        _set_card(raw, card, carded)
        ort_optimize(carded, final, "basic")
        parity = (
            _torch_parity(module, final, card, parity_inputs, tolerance)
            if parity_inputs is not None and len(parity_inputs)
            else ParityReport(0, 0.0, 0)
        )
        os.replace(final, out)
    return ExportResult(out, sha256_file(out), card, parity)
