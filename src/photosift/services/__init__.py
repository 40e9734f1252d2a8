"""What the CLI and the web gallery call: classify, results, correct, recategorize, doctor, known categories, eval
(``library``); search, similar, duplicates, hiding (``finding``).

Each service takes :class:`~photosift.core.config.Settings` (read once at the edge) and plain arguments, builds
what it needs from the layers below (catalog, models, album, run), and returns data; it never prints and never
picks an exit code or an HTTP status. Library errors stay typed (:mod:`photosift.core.errors`) for the edges to
turn into messages. Nothing here imports ONNX Runtime until a service needs a model.
"""

from photosift.core.catalog_health import DoctorReport
from photosift.core.errors import PhotosiftError
from photosift.services.finding import (
    DuplicateGroup,
    FindError,
    Found,
    browse_ids,
    close_finding,
    duplicates,
    photo_by_path,
    search,
    search_ids,
    set_hidden,
    similar,
    warm_finding,
)
from photosift.services.library import (
    NotInCatalog,
    build_engine,
    build_pipeline,
    catalog_path_of,
    classify,
    correct,
    correct_hash,
    correct_many,
    corrected_photos,
    doctor,
    eval_categorize,
    imagenet_concepts,
    index_dir,
    known_categories,
    open_catalog,
    page_classifier,
    ray_executor,
    recategorize,
    results,
    rules_for,
    shared_people_detector,
    stale_results,
    undo,
    undo_hash,
)

__all__ = [
    "DoctorReport",
    "DuplicateGroup",
    "FindError",
    "Found",
    "NotInCatalog",
    "PhotosiftError",
    "browse_ids",
    "build_engine",
    "build_pipeline",
    "catalog_path_of",
    "classify",
    "close_finding",
    "correct",
    "correct_hash",
    "correct_many",
    "corrected_photos",
    "doctor",
    "duplicates",
    "eval_categorize",
    "imagenet_concepts",
    "index_dir",
    "known_categories",
    "open_catalog",
    "page_classifier",
    "photo_by_path",
    "ray_executor",
    "recategorize",
    "results",
    "rules_for",
    "search",
    "search_ids",
    "set_hidden",
    "shared_people_detector",
    "similar",
    "stale_results",
    "undo",
    "undo_hash",
    "warm_finding",
]
