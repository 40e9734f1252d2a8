"""Wiring: build the engine, catalog, album classifier and pipeline from Settings (CLI, web and API)."""

from __future__ import annotations

from photosift.core.catalog import Catalog
from photosift.core.config import Settings
from photosift.models.registry import resolve_model
from photosift.models.session import OrtEngine
from photosift.run.driver import ClassifyOptions, Pipeline


def build_engine(settings: Settings) -> OrtEngine:
    model = resolve_model(settings.model, settings.data_dir)
    cache = settings.data_dir / "trt-cache"
    return OrtEngine(model, provider=settings.provider, cache_dir=str(cache))


def build_pipeline(settings: Settings, catalog: Catalog | None = None) -> Pipeline:
    from photosift.album.decisions import AlbumClassifier
    from photosift.album.people import PeopleDetector

    engine = build_engine(settings)
    catalog = catalog or Catalog(settings.db_path)
    album = AlbumClassifier.load(settings.rules_path, settings.data_dir, catalog.path, engine.model.sha256)
    options = ClassifyOptions(
        batch_size=settings.batch_size, workers=settings.workers, gpu_decode=settings.gpu_decode
    )
    detector = PeopleDetector() if settings.people else None
    return Pipeline(
        engine, catalog, categorizer=album, people=(lambda: detector) if detector else None, options=options
    )
