"""What the CLI and the web gallery call: classify, results, correct, recategorize, known categories, eval.

Each service takes :class:`~photosift.core.config.Settings` (read once at the edge) and plain arguments, builds
what it needs from the layers below (catalog, models, album, run), and returns data; it never prints and never
picks an exit code or an HTTP status. Library errors stay typed (:mod:`photosift.core.errors`) for the edges to
turn into messages. Nothing here imports ONNX Runtime until a service needs a model.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from photosift.album.rules import Rules, check_category, rules_for_model
from photosift.core.catalog import Catalog, ResultRow
from photosift.core.config import Settings
from photosift.core.errors import CatalogError, ModelError, PhotosiftError

if TYPE_CHECKING:
    import numpy as np

    from photosift.album.corrections import CorrectionReport
    from photosift.album.decisions import Progress as RederiveProgress
    from photosift.album.decisions import RecategorizeReport, RulesFor
    from photosift.models.session import OrtEngine
    from photosift.run.driver import Pipeline, Progress, RunSummary

log = logging.getLogger("photosift")


def rules_for(settings: Settings) -> RulesFor:
    """A classifier's labels -> the rules that decide its categories under these settings."""

    def pick(labels: Sequence[str]) -> Rules:
        return rules_for_model(labels, settings.rules, settings.user_rules)

    return pick


def open_catalog(settings: Settings, *, readonly: bool = False, create: bool = True) -> Catalog:
    return Catalog(settings.db_path, readonly=readonly, create=create)


def index_dir(settings: Settings) -> Path:
    """Where the embedding indexes that corrections query are cached (album.personal.EmbeddingIndex)."""
    return settings.data_dir / "index"


# -- classify ------------------------------------------------------------------------------------------------


def build_engine(settings: Settings) -> OrtEngine:
    from photosift.models.registry import resolve_model
    from photosift.models.session import OrtEngine

    model = resolve_model(settings.model, settings.data_dir)
    cache = settings.data_dir / "trt-cache"
    return OrtEngine(model, provider=settings.provider, cache_dir=str(cache))


def build_pipeline(settings: Settings, catalog: Catalog | None = None) -> Pipeline:
    """The engine, the album classifier for its labels, the face detector when categories need faces."""
    from photosift.album.decisions import AlbumClassifier
    from photosift.run.driver import ClassifyOptions, Pipeline

    engine = build_engine(settings)
    catalog = catalog or open_catalog(settings)
    album = None
    notes: list[str] = []
    if engine.card.task == "classify":
        rules = rules_for(settings)(engine.card.labels)
        album = AlbumClassifier.load(rules, catalog, engine.model.sha256, index_dir(settings))
    people = None
    if settings.people and album is not None and album.needs_people:
        try:
            from photosift.album.people import PeopleDetector

            detector = PeopleDetector()
            people = lambda: detector  # noqa: E731 - one detector shared by the decode threads
        except ModelError as exc:
            notes.append(f"faces not detected: {exc}")
            log.warning(notes[-1])
    options = ClassifyOptions(
        batch_size=settings.batch_size, workers=settings.workers, gpu_decode=settings.gpu_decode
    )
    pipeline = Pipeline(engine, catalog, categorizer=album, people=people, options=options)
    pipeline.notes = notes
    return pipeline


def classify(
    settings: Settings,
    paths: Sequence[str | Path],
    *,
    retry_errors: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> RunSummary:
    """Classify every image under ``paths`` into the catalog; returns the run's summary."""
    pipeline = build_pipeline(settings)
    try:
        pipeline.options.retry_errors = retry_errors
        return pipeline.run([str(p) for p in paths], on_progress=on_progress, cancel=cancel)
    finally:
        pipeline.catalog.close()


# -- the catalog -----------------------------------------------------------------------------------------------


def known_categories(settings: Settings, catalog: Catalog) -> list[str]:
    """Every category a photo in ``catalog`` can have: those of the rules for each classifier with results
    here (newest first; the default model's when there is none yet), then the user's own."""
    from photosift.album.decisions import known_categories as album_known

    pick = rules_for(settings)
    labels = [m.labels for m in catalog.models() if m.task == "classify"]
    if not labels:
        from photosift.models.card import imagenet_labels

        labels = [tuple(imagenet_labels())]
    return album_known([pick(lab) for lab in labels], catalog)


def results(
    settings: Settings,
    *,
    category: str | None = None,
    status: str | None = None,
    label: str | None = None,
    model: str | None = None,
    limit: int | None = None,
) -> list[ResultRow]:
    """Result rows by path (``model``: a model's name or sha256 prefix; default: each photo's newest result)."""
    with open_catalog(settings, readonly=True) as cat:
        if category is not None:
            check_category(category, known_categories(settings, cat))
        model_sha = cat.find_model(model).sha256 if model is not None else None
        return cat.results(category=category, status=status, label=label, limit=limit, model_sha256=model_sha)


def catalog_path_of(path: str | Path) -> str:
    """How the catalog spells a path the user typed: absolute, normalised (``a/../b`` is ``b``), not resolved
    through symlinks (the scanner keeps the path the user sees)."""
    return os.path.abspath(os.path.expanduser(str(path)))


def _hash_of(cat: Catalog, where: str) -> str:
    content_hash = cat.content_hash_of(where)
    if content_hash is None:
        raise NotInCatalog(f"{where}: not in the catalog (or unreadable); classify it first")
    return content_hash


def correct(
    settings: Settings, path: str | Path, category: str | None, *, create: bool = False
) -> CorrectionReport:
    """Set (or with ``category=None`` clear) the album category of the photo at ``path``; the report says which
    other photos the personal head moved."""
    where = catalog_path_of(path)
    with open_catalog(settings, create=False) as cat:
        return correct_hash(settings, cat, _hash_of(cat, where), category, create=create, path=where)


def undo(settings: Settings, path: str | Path) -> CorrectionReport:
    """Take back the latest correction of the photo at ``path`` and what it moved."""
    where = catalog_path_of(path)
    with open_catalog(settings, create=False) as cat:
        return undo_hash(settings, cat, _hash_of(cat, where), path=where)


def correct_hash(
    settings: Settings,
    catalog: Catalog,
    content_hash: str,
    category: str | None,
    *,
    create: bool = False,
    path: str = "",
) -> CorrectionReport:
    """A correction by content hash through an open catalog (the gallery's connection)."""
    from photosift.album.corrections import correct as apply

    return apply(
        catalog,
        rules_for(settings),
        content_hash,
        category,
        create=create,
        path=path,
        index_dir=index_dir(settings),
    )


def undo_hash(
    settings: Settings, catalog: Catalog, content_hash: str, *, event: int | None = None, path: str = ""
) -> CorrectionReport:
    """Undo by content hash (``event``: only if it is still the photo's latest correction)."""
    from photosift.album.corrections import undo as take_back

    return take_back(catalog, content_hash, event=event, path=path, index_dir=index_dir(settings))


def recategorize(
    settings: Settings,
    *,
    only_stale: bool = False,
    on_progress: RederiveProgress | None = None,
    cancel: threading.Event | None = None,
    catalog: Catalog | None = None,
) -> RecategorizeReport:
    """Re-derive stored categories from stored outputs (``only_stale``: those decided under other rules or
    heads than those in force now); no inference. ``catalog``: an open one (the gallery's job has its own)."""
    from photosift.album.decisions import recategorize as rederive

    if catalog is None:
        with open_catalog(settings, create=False) as cat:
            return recategorize(
                settings, only_stale=only_stale, on_progress=on_progress, cancel=cancel, catalog=cat
            )
    return rederive(
        catalog, rules_for(settings), only_stale=only_stale, on_progress=on_progress, cancel=cancel
    )


def stale_results(settings: Settings, catalog: Catalog) -> int:
    """How many stored categories were decided under other rules or heads than those in force now."""
    from photosift.album.decisions import stale_results as count

    return count(catalog, rules_for(settings))


class NotInCatalog(CatalogError):
    """A path the user named is not in the catalog."""


# -- evaluation -------------------------------------------------------------------------------------------------


def eval_categorize(
    settings: Settings,
) -> Callable[[Path, np.ndarray, np.ndarray | None, list[Path]], list[str]]:
    """What classify does to model outputs, for ``photosift eval``: the rules for the model's labels, the
    abstract-art detector where it fits the model and, when the settings and rules want faces, the face detector
    (run once per photo and shared by the model and its reference)."""
    from photosift.album.abstract import head_for_model
    from photosift.album.decisions import AlbumClassifier
    from photosift.core import imaging
    from photosift.models.card import read_card
    from photosift.models.registry import sha256_file

    pick = rules_for(settings)
    faces: dict[Path, Any] = {}
    detector: list[Any] = []

    def categorize(
        model: Path, probs: np.ndarray, embeddings: np.ndarray | None, files: list[Path]
    ) -> list[str]:
        card = read_card(model)
        album = AlbumClassifier(pick(card.labels), abstract=head_for_model(sha256_file(model)))
        people = None
        if settings.people and album.needs_people:
            if not detector:
                from photosift.album.people import PeopleDetector

                detector.append(PeopleDetector())
            for f in files:
                if f not in faces:
                    image = imaging.decode(imaging.read_bytes(f), f, min_side=card.preprocess.resize_size)
                    faces[f] = detector[0].detect(image)
            people = [faces[f] for f in files]
        return [r.category for r in album.categorize(probs, people, embeddings)]

    return categorize


__all__ = [
    "NotInCatalog",
    "PhotosiftError",
    "build_engine",
    "build_pipeline",
    "catalog_path_of",
    "classify",
    "correct",
    "correct_hash",
    "eval_categorize",
    "index_dir",
    "known_categories",
    "recategorize",
    "results",
    "rules_for",
    "stale_results",
    "undo",
    "undo_hash",
]
