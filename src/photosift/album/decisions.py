"""Album categories end to end: rules, the personal head, corrections and re-derivation from the catalog.

Order of authority for a photo's category (see personal.py for why):

1. the user's correction (stored per content hash in the catalog, applied at query time, never overridden);
2. the personal head trained from those corrections, when confident;
3. the learned category head (learned.py) where the rules in force switch it on (``learned_head: on``, as the
   shipped rules do) and it fits the model;
4. the rules (categories.py) over the model's full softmax, with the abstract-art detector (abstract.py, on the
   embedding; ``abstract_threshold`` in the rules) and the face signal for people.

Categories are stored at classify time; :func:`recategorize` re-derives them from what the catalog stored
(the float16 embedding, through the base model's own classifier weights, gives the full softmax back; top-k
probabilities are the fallback for models whose classifier cannot be read), so changing the rules or the
corrections never re-runs the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from photosift.album import learned
from photosift.album.abstract import AbstractHead, head_for_model
from photosift.album.people import PeopleSignal
from photosift.album.personal import PersonalHead, base_head, combine, load_head, train_head
from photosift.album.rules import PEOPLE, Categorizer, CategoryResult, Rules
from photosift.core.catalog import Catalog, StoredOutput
from photosift.core.errors import CatalogError, ModelError, UnknownCategory
from photosift.models.tasks import softmax

MIN_CORRECTIONS = 3  # fewer corrections than this teach the head nothing it can generalise


def head_path(data_dir: Path, catalog_path: Path, model_sha256: str) -> Path:
    """One head per catalog (it learns that catalog's corrections) and per base model (each model has its own
    embedding space), kept in the data dir."""
    catalog_key = hashlib.sha256(str(Path(catalog_path).resolve()).encode()).hexdigest()[:12]
    return data_dir / "personal" / f"{catalog_key}-{model_sha256[:16]}.onnx"


class AlbumClassifier:
    """rules -> learned head -> personal head; what the pipeline and recategorize call."""

    def __init__(
        self,
        rules: Rules,
        head: PersonalHead | None = None,
        abstract: AbstractHead | None = None,
        category_head: learned.CategoryHead | None = None,
    ) -> None:
        self.rules = rules
        self.categorizer = Categorizer(rules)
        self.head = head
        self.abstract = abstract
        # The learned head decides only where the rules ask for it and know its categories (a user's own rules
        # file leaves it off unless it says `learned_head: on`).
        fits = category_head is not None and rules.learned_head and category_head.fits(rules.categories)
        self.category_head = category_head if fits else None

    @classmethod
    def load(cls, rules: Rules, data_dir: Path, catalog_path: Path, model_sha256: str) -> AlbumClassifier:
        """The classifier for ``model_sha256``'s outputs in the catalog at ``catalog_path``: ``rules`` (for that
        model's labels), the catalog's personal head, and the abstract-art detector where it fits the model."""
        head = load_head(head_path(data_dir, catalog_path, model_sha256))
        return cls(rules, head, head_for_model(model_sha256), learned.head_for_model(model_sha256))

    @property
    def needs_people(self) -> bool:
        """Whether face signals can change a decision (the rules have a people category)."""
        return PEOPLE in self.rules.categories

    def abstract_scores(self, embeddings: np.ndarray | None) -> np.ndarray | None:
        """The abstract-art detector's probabilities, or None (no detector for this model, or it is off)."""
        if self.abstract is None or embeddings is None or self.rules.abstract_threshold >= 1.0:
            return None
        return self.abstract.scores(embeddings)

    def base(
        self,
        probs: np.ndarray,
        people: Sequence[Any | None] | None = None,
        embeddings: np.ndarray | None = None,
    ) -> tuple[list[CategoryResult], np.ndarray]:
        """The decision below the personal head — the learned head where it decides, else the rules — and its
        distribution over ``rules.categories``, which the personal head starts from (training and applying)."""
        if self.category_head is not None and embeddings is not None:
            # The head reads the detector's probability whatever the rules' threshold: it is one of its inputs.
            abstract = self.abstract.scores(embeddings) if self.abstract is not None else None
            return learned.decide(self.category_head, self.categorizer, probs, people, embeddings, abstract)
        results = self.categorizer.categorize(probs, people, self.abstract_scores(embeddings))
        return results, self.categorizer.posterior(probs, people, results)

    def categorize(
        self,
        probs: np.ndarray,
        people: Sequence[Any | None] | None = None,
        embeddings: np.ndarray | None = None,
    ) -> list[CategoryResult]:
        results, posterior = self.base(probs, people, embeddings)
        if self.head is None or embeddings is None:
            return results
        predictions = self.head.predict(np.asarray(embeddings, dtype=np.float32), posterior)
        return [combine(r, p) for r, p in zip(results, predictions, strict=True)]


def known_categories(rules: Sequence[Rules], catalog: Catalog) -> list[str]:
    """Every category a photo in ``catalog`` can have: those of the rules in force for its models, in order,
    then the categories the user created."""
    names = [c for r in rules for c in r.categories]
    return list(dict.fromkeys([*names, *catalog.user_categories()]))


class _Softmaxer:
    """Full softmax from a stored output: embedding @ W.T + b with the base model's classifier, else top-k."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._heads: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}

    def _weights(self, model_sha: str) -> tuple[np.ndarray, np.ndarray] | None:
        if model_sha not in self._heads:
            path = self.catalog.model_path(model_sha)
            try:
                self._heads[model_sha] = base_head(Path(path)) if path and Path(path).is_file() else None
            except (ModelError, ImportError, OSError):
                self._heads[model_sha] = None
        return self._heads[model_sha]

    def probs(self, rows: Sequence[StoredOutput], num_classes: int) -> np.ndarray:
        out = np.zeros((len(rows), num_classes), dtype=np.float32)
        for i, row in enumerate(rows):
            weights = self._weights(row.model_sha256)
            if weights is not None and row.embedding is not None:
                w, b = weights
                out[i] = softmax((row.embedding.astype(np.float32) @ w.T + b)[None])[0]
            elif row.topk_index is not None and row.topk_prob is not None:
                out[i, row.topk_index.astype(np.int64)] = row.topk_prob.astype(np.float32)
        return out


def _people(rows: Sequence[StoredOutput]) -> list[PeopleSignal | None]:
    return [PeopleSignal.from_dict(r.people) if r.people else None for r in rows]


def _embeddings(rows: Sequence[StoredOutput]) -> np.ndarray | None:
    if any(r.embedding is None for r in rows):
        return None
    return np.stack([r.embedding for r in rows]).astype(np.float32)  # type: ignore[misc]


@dataclass
class RecategorizeReport:
    photos: int = 0
    changed: int = 0
    categories: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"results": self.photos, "changed": self.changed, "categories": self.categories}


RulesFor = Callable[[Sequence[str]], Rules]
"""A classifier's labels -> the rules that decide its categories (``rules.rules_for_model`` with the user's
settings bound)."""


def recategorize(catalog: Catalog, rules_for: RulesFor, data_dir: Path) -> RecategorizeReport:
    """Re-derive every stored classification's category from stored outputs (no inference)."""
    report = RecategorizeReport()
    softmaxer = _Softmaxer(catalog)
    labels = {m.sha256: m.labels for m in catalog.models() if m.task == "classify"}
    classifiers: dict[str, AlbumClassifier] = {}
    old = {
        (h, m): c
        for h, m, c in catalog.db.execute("SELECT content_hash, model_sha256, category FROM results")
    }
    updates: list[tuple[str, str, str, float, str | None]] = []
    for rows in catalog.stored_outputs():
        by_model: dict[str, list[StoredOutput]] = {}
        for row in rows:
            by_model.setdefault(row.model_sha256, []).append(row)
        for model_sha, group in by_model.items():
            if model_sha not in labels:
                continue  # an embedding model: no classes, no category
            if model_sha not in classifiers:
                classifiers[model_sha] = AlbumClassifier.load(
                    rules_for(labels[model_sha]), data_dir, catalog.path, model_sha
                )
            album = classifiers[model_sha]
            probs = softmaxer.probs(group, album.rules.num_classes)
            results = album.categorize(probs, _people(group), _embeddings(group))
            for row, res in zip(group, results, strict=True):
                updates.append((row.content_hash, model_sha, res.category, float(res.score), res.fine))
                report.changed += int(old.get((row.content_hash, model_sha)) != res.category)
                report.categories[res.category] = report.categories.get(res.category, 0) + 1
    catalog.update_categories(updates)
    report.photos = len(updates)
    return report


@dataclass
class TrainReport:
    corrections: int
    trained: bool
    path: Path | None
    reason: str = ""


def train_personal_head(catalog: Catalog, rules: Rules, data_dir: Path, model_sha256: str) -> TrainReport:
    """Fit the personal head on every corrected photo that has an embedding from ``model_sha256``."""
    corrections = catalog.corrections()
    target = head_path(data_dir, catalog.path, model_sha256)
    rows = [r for batch in catalog.stored_outputs(model_sha256, hashes=corrections) for r in batch]
    rows = [r for r in rows if r.embedding is not None]
    if len(rows) < MIN_CORRECTIONS:
        target.unlink(missing_ok=True)
        return TrainReport(len(rows), False, None, f"needs at least {MIN_CORRECTIONS} corrected photos")
    album = AlbumClassifier(
        rules, abstract=head_for_model(model_sha256), category_head=learned.head_for_model(model_sha256)
    )
    probs = _Softmaxer(catalog).probs(rows, rules.num_classes)
    embeddings = _embeddings(rows)
    _, posterior = album.base(probs, _people(rows), embeddings)
    # The head centres embeddings on the whole library's mean, not just the corrected photos'.
    total, count = np.zeros(rows[0].embedding.shape[0]), 0  # type: ignore[union-attr]
    for batch in catalog.stored_outputs(model_sha256):
        for r in batch:
            if r.embedding is not None:
                total += r.embedding
                count += 1
    assert embeddings is not None
    head = train_head(
        embeddings,
        [corrections[r.content_hash] for r in rows],
        posterior,
        list(rules.categories),
        library_mean=total / count,
        # Few corrections, strong pull towards "agree with the rules"; l2=0.01 was tuned at 50 corrections.
        l2=max(0.01, 0.5 / len(rows)),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    head.save(target)
    return TrainReport(len(rows), True, target)


@dataclass
class CorrectionReport:
    path: str
    category: str
    train: TrainReport | None
    recategorized: RecategorizeReport | None


def correct(
    catalog: Catalog,
    rules_for: RulesFor,
    data_dir: Path,
    content_hash: str,
    category: str | None,
    *,
    create: bool = False,
    path: str = "",
    retrain: bool = True,
) -> CorrectionReport:
    """Store (or with ``category=None`` clear) a correction, retrain the personal head, re-derive categories.

    The personal head learns in the embedding space of the model with the newest results."""
    latest = next((m for m in catalog.models() if m.task == "classify"), None)
    if latest is None:
        raise CatalogError(f"{catalog.path}: no classified photos yet")
    rules = rules_for(latest.labels)
    if category is not None:
        if category not in [*rules.categories, *catalog.user_categories()]:
            if not create:
                rules.check_category(category, extra=catalog.user_categories())  # raises, with a suggestion
            if not category.strip() or len(category) > 64 or category != category.strip():
                raise UnknownCategory(f"invalid category name {category!r}")
            catalog.add_user_category(category)
        catalog.set_correction(content_hash, category)
    else:
        catalog.clear_correction(content_hash)
    if not retrain:
        return CorrectionReport(path, category or "", None, None)
    train = train_personal_head(catalog, rules, data_dir, latest.sha256)
    return CorrectionReport(path, category or "", train, recategorize(catalog, rules_for, data_dir))
