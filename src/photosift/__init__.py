"""photosift: classify a photo library offline with ONNX Runtime.

Public API (heavy modules load lazily)::

    from photosift import classify, open_catalog, load_model
    model = load_model("efficientnet-lite0")
    summary = classify(["~/Pictures"], db="catalog.db")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from photosift.core.catalog import Catalog
    from photosift.models.registry import ResolvedModel
    from photosift.run.driver import Progress, RunSummary


def load_model(name_or_path: str = "efficientnet-lite0", data_dir: Path | None = None) -> ResolvedModel:
    """Find a model by name or path and verify it (sha256 for registered models)."""
    from photosift.core.config import Settings
    from photosift.models.registry import resolve_model

    return resolve_model(name_or_path, data_dir or Settings().data_dir)


def open_catalog(db: str | Path | None = None, readonly: bool = False) -> Catalog:
    from photosift.core.catalog import Catalog
    from photosift.core.config import Settings

    return Catalog(db or Settings().db_path, readonly=readonly)


def classify(
    paths: Sequence[str | Path],
    db: str | Path | None = None,
    model: str = "efficientnet-lite0",
    provider: str = "auto",
    batch_size: int = 16,
    workers: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> RunSummary:
    """Classify every image under ``paths`` into the catalog ``db``; returns the run's summary."""
    from photosift.core.config import Settings
    from photosift.services import build_pipeline

    chosen: dict[str, Any] = {"model": model, "provider": provider, "batch_size": batch_size}
    settings = Settings(**chosen)  # validated: an unknown provider is a ValidationError naming it
    if workers is not None:
        settings.workers = workers
    if db is not None:
        settings.db = Path(db)
    pipeline = build_pipeline(settings)
    try:
        return pipeline.run([str(p) for p in paths], on_progress=on_progress)
    finally:
        pipeline.catalog.close()


__all__: list[Any] = ["__version__", "classify", "load_model", "open_catalog"]
