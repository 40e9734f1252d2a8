"""The library services: classify, results, correct and undo, recategorize, doctor, known categories, eval."""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from photosift.album.rules import Rules, check_category, rules_for_model
from photosift.core.catalog import Catalog, ResultRow
from photosift.core.catalog_health import DoctorReport, inspect_catalog, recover_catalog
from photosift.core.config import Settings
from photosift.core.errors import CatalogError, ModelError

if TYPE_CHECKING:
    from photosift.album.corrections import CorrectionReport
    from photosift.album.decisions import AlbumClassifier, RecategorizeReport, RulesFor
    from photosift.album.decisions import Progress as RederiveProgress
    from photosift.album.people import PeopleDetector
    from photosift.models.session import OrtEngine
    from photosift.run.driver import Pipeline, Progress, RunSummary
    from photosift.run.ray_executor import RayExecutor

log = logging.getLogger("photosift")


def rules_for(settings: Settings) -> RulesFor:
    """A classifier's labels -> the rules that decide its categories under these settings."""

    def pick(labels: Sequence[str]) -> Rules:
        return rules_for_model(labels, settings.rules, settings.user_rules)

    return pick


def open_catalog(settings: Settings, *, readonly: bool = False, create: bool = True) -> Catalog:
    return Catalog(settings.db_path, readonly=readonly, create=create, busy_timeout=settings.busy_timeout_s)


def index_dir(settings: Settings) -> Path:
    """Where arrays derived from the catalog are cached: the embedding indexes that corrections query
    (album.neighbours.EmbeddingIndex) and the classifier weights recategorize reads (album.personal)."""
    return settings.data_dir / "index"


# -- classify ------------------------------------------------------------------------------------------------


def build_engine(settings: Settings) -> OrtEngine:
    from photosift.models.registry import resolve_model
    from photosift.models.session import OrtEngine

    model = resolve_model(settings.model, settings.data_dir)
    cache = settings.data_dir / "trt-cache"
    return OrtEngine(model, provider=settings.provider, cache_dir=str(cache))


@functools.cache
def shared_people_detector() -> PeopleDetector:
    """One face detector per process, shared by its decode threads. A module-level function, so a cluster
    worker gets it by name (pickled by reference) and builds its own."""
    from photosift.album.people import PeopleDetector

    return PeopleDetector()


def build_pipeline(settings: Settings, catalog: Catalog | None = None) -> Pipeline:
    """The engine, the album classifier for its labels, the face detector when categories need faces, and the
    executor the settings choose (threads here, or Ray Data)."""
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
            shared_people_detector()
            people = shared_people_detector
        except ModelError as exc:
            notes.append(f"faces not detected: {exc}")
            log.warning(notes[-1])
    gpu_decode = settings.gpu_decode
    executor = None
    if settings.engine == "ray":
        executor = ray_executor(settings, engine, album, people)
        notes.append(executor.describe())
        if gpu_decode:
            notes.append("--gpu-decode is for the local engine; the ray engine decodes on the workers' CPUs")
            gpu_decode = False
    options = ClassifyOptions(
        batch_size=settings.batch_size,
        workers=settings.workers,
        gpu_decode=gpu_decode,
        max_file_bytes=settings.max_file_mb * 2**20,
        decode_memory=settings.decode_memory_mb * 2**20,
    )
    pipeline = Pipeline(engine, catalog, categorizer=album, people=people, options=options, executor=executor)
    pipeline.notes = notes
    return pipeline


def ray_executor(
    settings: Settings,
    engine: OrtEngine,
    album: AlbumClassifier | None,
    people: Callable[[], PeopleDetector] | None,
) -> RayExecutor:
    """The Ray Data executor for these settings; its workers rebuild the driver's stages from a picklable spec
    (the model by path and sha256, its card, this album classifier, the face detector's factory)."""
    from photosift.run.ray_executor import RayExecutor, WorkerSpec

    threads = max(1, round(settings.cpus_per_worker))
    spec = WorkerSpec(
        model_name=engine.model.name,
        model_path=str(engine.model.path),
        model_sha256=engine.model.sha256,
        card=engine.card,
        provider=settings.provider,
        intra_op_threads=threads,
        categorizer=album,
        people=people,
        max_file_bytes=settings.max_file_mb * 2**20,
        decode_memory=settings.decode_memory_mb * 2**20,
    )
    return RayExecutor(
        spec,
        address=settings.ray_address,
        workers=settings.ray_workers,
        cpus_per_worker=settings.cpus_per_worker,
        gpus_per_worker=settings.gpus_per_worker,
        batch_size=settings.batch_size,
    )


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


def page_classifier(settings: Settings) -> tuple[Path, dict[str, Any]]:
    """The model file and what a web page needs to classify with it in the browser (the gallery's "Classify
    here"): its card, the rules for its labels as data, the cut-out framing constants."""
    from photosift.album.rules import page_rules
    from photosift.core.imaging import cutout_framing
    from photosift.models.registry import resolve_model

    model = resolve_model(settings.model, settings.data_dir)
    card = model.card
    if card.task != "classify":
        raise ModelError(f"{model.path}: an embedding model has no labels to show (set PHOTOSIFT_MODEL)")
    payload = {
        "name": model.name,
        "sha256": model.sha256,
        "card": card.model_dump(mode="json"),
        "rules": page_rules(rules_for(settings)(card.labels)),
        "framing": cutout_framing(),
    }
    return model.path, payload


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
    since: str | None = None,
    until: str | None = None,
    order: str = "path",
) -> list[ResultRow]:
    """Result rows by path or date (``model``: a model's name or sha256 prefix; default: each photo's newest
    result; ``since``/``until``: an ISO date or its prefix, inclusive)."""
    with Catalog.for_reading(settings.db_path, settings.busy_timeout_s) as cat:
        if category is not None:
            check_category(category, known_categories(settings, cat))
        model_sha = cat.find_model(model).sha256 if model is not None else None
        return cat.results(
            category=category,
            status=status,
            label=label,
            limit=limit,
            model_sha256=model_sha,
            since=since,
            until=until,
            order=order,
        )


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


def correct_many(
    settings: Settings, catalog: Catalog, changes: Sequence[tuple[str, str | None]]
) -> dict[str, str | None]:
    """Several corrections (content hash, category or None to clear) through an open catalog in one transaction,
    the photos near all of them re-decided once. Returns each content's correction before, so the caller can
    restore them."""
    from photosift.album.corrections import correct_many as apply

    before = catalog.corrections()
    previous = {h: before.get(h) for h, _ in changes}
    apply(catalog, rules_for(settings), changes, index_dir=index_dir(settings))
    return previous


def recategorize(
    settings: Settings,
    *,
    only_stale: bool = False,
    exact_only: bool = False,
    on_progress: RederiveProgress | None = None,
    cancel: threading.Event | None = None,
    catalog: Catalog | None = None,
) -> RecategorizeReport:
    """Re-derive stored categories from stored outputs (``only_stale``: those decided under other rules or
    heads than those in force now; ``exact_only``: of models whose own classifier gives the full softmax back);
    no inference. ``catalog``: an open one (the gallery's job has its own)."""
    from photosift.album.decisions import recategorize as rederive

    if catalog is None:
        with open_catalog(settings, create=False) as cat:
            return recategorize(
                settings,
                only_stale=only_stale,
                exact_only=exact_only,
                on_progress=on_progress,
                cancel=cancel,
                catalog=cat,
            )
    return rederive(
        catalog,
        rules_for(settings),
        only_stale=only_stale,
        exact_only=exact_only,
        on_progress=on_progress,
        cancel=cancel,
        cache_dir=index_dir(settings),
    )


def stale_results(settings: Settings, catalog: Catalog, *, exact_only: bool = False) -> int:
    """How many stored categories were decided under other rules or heads than those in force now."""
    from photosift.album.decisions import stale_results as count

    return count(catalog, rules_for(settings), exact_only=exact_only, cache_dir=index_dir(settings))


class NotInCatalog(CatalogError):
    """A path the user named is not in the catalog."""


# -- training ---------------------------------------------------------------------------------------------------


def corrected_photos(settings: Settings) -> list[tuple[Path, str]]:
    """(path, category) of every photo the user corrected: what ``photosift train --from-catalog`` learns."""
    with open_catalog(settings, readonly=True, create=False) as cat:
        rows = cat.results()
    return [(Path(r.path), r.corrected_category) for r in rows if r.corrected_category and r.status == "ok"]


def imagenet_concepts(min_classes: int = 2) -> np.ndarray:
    """ImageNet-1k classes x WordNet concepts, 0/1: one column per synset above at least ``min_classes`` classes
    ("vehicle", "fruit", "dog"). ``photosift train`` gives it to a transfer head (toolchain.transfer)."""
    import numpy as np

    from photosift.find.hierarchy import ancestors
    from photosift.models.card import imagenet_labels

    classes = len(imagenet_labels())
    members: dict[str, list[int]] = {}
    for index in range(classes):
        for _depth, wnid, _lemmas in ancestors(index):
            members.setdefault(wnid, []).append(index)
    kept = sorted(w for w, m in members.items() if len(m) >= min_classes)
    matrix = np.zeros((classes, len(kept)), dtype=np.float32)
    for column, wnid in enumerate(kept):
        matrix[members[wnid], column] = 1.0
    return matrix


# -- doctor --------------------------------------------------------------------------------------------------------


def doctor(settings: Settings, recover_to: Path | None = None) -> DoctorReport:
    """Check the catalog (integrity, schema, whose file it is, rows) and the models (present, sha256 verified);
    with ``recover_to``, copy every readable row into a new catalog there. Changes nothing else."""
    from photosift.models.registry import verify_models

    health = inspect_catalog(settings.db_path)
    models, problems, warnings = verify_models(settings.data_dir, health.models)
    report = DoctorReport(health, models, [*health.problems, *problems], warnings)
    if recover_to is not None:
        report.recovery = recover_catalog(settings.db_path, recover_to)
    return report


# -- evaluation -------------------------------------------------------------------------------------------------


def eval_categorize(
    settings: Settings,
) -> Callable[[Path, np.ndarray, np.ndarray | None, list[Path]], list[str]]:
    """What classify does to model outputs, for ``photosift eval``: the rules for the model's labels, the
    abstract-art detector and the learned category head where they fit the model and, when the settings and
    rules want faces, the face detector (run once per photo and shared by the model and its reference)."""
    from photosift.album import learned
    from photosift.album.abstract import head_for_model
    from photosift.album.decisions import AlbumClassifier
    from photosift.album.facegate import gate_for_model
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
        sha = sha256_file(model)
        album = AlbumClassifier(
            pick(card.labels),
            abstract=head_for_model(sha),
            category_head=learned.head_for_model(sha),
            face_gate=gate_for_model(sha),
        )
        people: list[Any] | None = None
        if settings.people and album.needs_people:
            if not detector:
                from photosift.album.people import PeopleDetector

                detector.append(PeopleDetector())
            # As the pipeline does it: faces only where the classifier's decision leaves them worth looking for.
            first = album.categorize(probs, None, embeddings)
            search = detector[0].to_search(first, album.might_show_faces(embeddings))
            people = []
            for f, wanted in zip(files, search, strict=True):
                if not wanted:
                    people.append(None)
                    continue
                if f not in faces:
                    image = imaging.decode(imaging.read_bytes(f), f, min_side=card.preprocess.resize_size)
                    faces[f] = detector[0].detect(image)
                people.append(faces[f])
        return [r.category for r in album.categorize(probs, people, embeddings)]

    return categorize
