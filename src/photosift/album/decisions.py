"""Album categories end to end: the rules, the learned head, the personal head, and re-derivation from storage.

Order of authority for the category a photo shows:

1. the user's correction (stored per content hash, applied at query time, never overridden);
2. the personal head (personal.py): the category of the nearest corrected photo, only within its similarity
   gate — so it speaks for near-duplicates of corrected photos and abstains everywhere else;
3. the learned category head (learned.py) where the rules in force switch it on (``learned_head: on``, as the
   shipped rules do) and it fits the model;
4. the rules (rules.py) over the model's full softmax, with the abstract-art detector (abstract.py, on the
   embedding) and the face signal for people.

3 and 4 are the model's decision, stored in ``results.category`` with a fingerprint of everything that made it
(:attr:`AlbumClassifier.fingerprint`: the rules, the abstract-art detector, the learned head, the personal head's
rule); a result decided under another fingerprint is stale, and :func:`recategorize` re-derives the stale ones
(or all) from stored outputs in vectorised chunks — the float16 embedding, through the base model's own
classifier weights, gives the full softmax back; top-k probabilities are the fallback for models whose
classifier cannot be read — so changing the rules never re-runs the model. 2 is stored beside it
(``personal_*``) and changes only near a correction (corrections.py).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from photosift.album import learned
from photosift.album.abstract import AbstractHead, head_for_model
from photosift.album.facegate import FaceGate, gate_for_model
from photosift.album.people import PeopleSignal
from photosift.album.personal import PersonalHead, cached_base_head
from photosift.album.rules import PEOPLE, Categorizer, CategoryResult, Rules
from photosift.core.catalog import Catalog, PersonalDecision, StoredChunk
from photosift.core.errors import ModelError
from photosift.models.tasks import softmax

RulesFor = Callable[[Sequence[str]], Rules]
"""A classifier's labels -> the rules that decide its categories (``rules.rules_for_model`` with the user's
settings bound)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A photo's category as the rules decided it (``category``, ``score``, ``fine``) and the personal head's
    decision where it spoke; ``shown`` is what the photo shows without a correction."""

    category: str
    score: float
    fine: str | None = None
    personal: PersonalDecision | None = None

    @property
    def shown(self) -> str:
        return self.personal.category if self.personal is not None else self.category


class AlbumClassifier:
    """rules -> learned head -> personal head; what the pipeline and recategorize call. Holds arrays only (no
    catalog), so an executor may ship it to other processes; the driver calls :meth:`before_run` and
    :meth:`after_run`."""

    def __init__(
        self,
        rules: Rules,
        head: PersonalHead | None = None,
        abstract: AbstractHead | None = None,
        model_sha256: str = "",
        index_dir: Path | None = None,
        category_head: learned.CategoryHead | None = None,
        face_gate: FaceGate | None = None,
    ) -> None:
        self.rules = rules
        self.categorizer = Categorizer(rules)
        self.head = head
        self.abstract = abstract
        self.model_sha256 = model_sha256
        self.index_dir = index_dir  # where corrections cache the embedding index (after_run uses it)
        # The learned head decides only where the rules ask for it and know its categories (a user's own rules
        # file leaves it off unless it says `learned_head: on`).
        fits = category_head is not None and rules.learned_head and category_head.fits(rules.categories)
        self.category_head = category_head if fits else None
        self.face_gate = face_gate  # which photos are worth searching for faces (facegate.py); None: all

    @classmethod
    def load(
        cls, rules: Rules, catalog: Catalog, model_sha256: str, index_dir: Path | None = None
    ) -> AlbumClassifier:
        """The classifier for ``model_sha256``'s outputs in ``catalog``: ``rules`` (for that model's labels), the
        personal head of that model's corrected photos, and the abstract-art detector where it fits the model."""
        head = PersonalHead.from_catalog(catalog, model_sha256)
        return cls(
            rules,
            head,
            head_for_model(model_sha256),
            model_sha256,
            index_dir,
            learned.head_for_model(model_sha256),
            gate_for_model(model_sha256),
        )

    @property
    def fingerprint(self) -> str:
        """Everything that decides a category, hashed: stored with each result; another one means stale."""
        parts = [self.rules.fingerprint, PersonalHead.fingerprint()]
        for weights in (
            (self.abstract.weight, np.array([self.abstract.bias])) if self.abstract is not None else None,
            (self.category_head.weight, self.category_head.bias) if self.category_head is not None else None,
        ):
            blob = b"".join(np.asarray(w, np.float32).tobytes() for w in weights) if weights else b"none"
            parts.append(hashlib.sha256(blob).hexdigest()[:12])
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    @property
    def needs_people(self) -> bool:
        """Whether face signals can change a decision (the rules have a people category)."""
        return PEOPLE in self.rules.categories

    def might_show_faces(self, embeddings: np.ndarray | None) -> np.ndarray | None:
        """(N,) bool: the photos whose embedding leaves a face worth looking for (the face gate), or None: no
        gate for this model (or no embeddings), look wherever the category allows."""
        if self.face_gate is None or embeddings is None:
            return None
        return self.face_gate.wanted(embeddings)

    def detector_scores(self, embeddings: np.ndarray | None) -> np.ndarray | None:
        """The abstract-art detector's probabilities, or None (no detector for this model, or no embeddings)."""
        if self.abstract is None or embeddings is None:
            return None
        return self.abstract.scores(embeddings)

    def categorize(
        self,
        probs: np.ndarray,
        people: Sequence[Any | None] | None = None,
        embeddings: np.ndarray | None = None,
        hashes: Sequence[str] | None = None,
    ) -> list[Decision]:
        base = self.base(probs, people, embeddings, self.detector_scores(embeddings))
        personal: list[PersonalDecision | None] = [None] * len(base)
        if self.head is not None and len(self.head) and embeddings is not None:
            personal = self.head.decide(embeddings, hashes)
        return [Decision(r.category, r.score, r.fine, p) for r, p in zip(base, personal, strict=True)]

    def base(
        self,
        probs: np.ndarray,
        people: Sequence[Any | None] | None,
        embeddings: np.ndarray | None,
        detector: np.ndarray | None,
    ) -> list[CategoryResult]:
        """The model's decision — the learned head's where it decides (rows with embeddings), else the rules' —
        from the softmax, faces, embeddings and the abstract-art detector's probabilities (``detector``)."""
        if self.category_head is not None and embeddings is not None:
            # The head reads the detector's probability whatever the rules' threshold: it is one of its inputs.
            return learned.decide(self.category_head, self.categorizer, probs, people, embeddings, detector)[
                0
            ]
        thresholded = detector if self.rules.abstract_threshold < 1.0 else None
        return self.categorizer.categorize(probs, people, thresholded)

    # -- run hooks (the pipeline's driver calls them around a run) -------------------------------------------------
    def before_run(self, catalog: Catalog, model_sha256: str) -> None:
        """Take in corrections made since the head was loaded (the gallery keeps its pipeline between scans)."""
        self.model_sha256 = model_sha256
        if self.head is None or self.head.version != catalog.corrections_version():
            self.head = PersonalHead.from_catalog(catalog, model_sha256)

    def after_run(self, catalog: Catalog, model_sha256: str) -> None:
        """Corrections made during the run (in the gallery, or another terminal) found the photos near them
        that were stored by then; photos this run stored afterwards were decided by the older head. Re-decide
        those near each such correction, then take the corrections in."""
        from photosift.album.corrections import refresh_near

        changed = catalog.changed_since(self.head.version if self.head is not None else 0)
        if changed:
            refresh_near(catalog, changed, self.index_dir, models=[model_sha256])
        self.before_run(catalog, model_sha256)


def known_categories(rules: Sequence[Rules], catalog: Catalog) -> list[str]:
    """Every category a photo in ``catalog`` can have: those of the rules in force for its models, in order,
    then the categories the user created."""
    names = [c for r in rules for c in r.categories]
    return list(dict.fromkeys([*names, *catalog.user_categories()]))


class _FullSoftmax:
    """Full softmax of stored outputs in batches: embeddings @ W.T + b with the base model's classifier (one
    matrix product per chunk), else the stored top-k probabilities."""

    def __init__(self, catalog: Catalog, cache_dir: Path | None = None) -> None:
        self.catalog = catalog
        self.cache_dir = cache_dir  # where the classifier weights read from model files are kept
        self._weights: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}

    def weights(self, model_sha: str) -> tuple[np.ndarray, np.ndarray] | None:
        if model_sha not in self._weights:
            path = self.catalog.model_path(model_sha)
            try:
                self._weights[model_sha] = (
                    cached_base_head(Path(path), model_sha, self.cache_dir)
                    if path and Path(path).is_file()
                    else None
                )
            except (ModelError, ImportError, OSError):
                self._weights[model_sha] = None
        return self._weights[model_sha]

    def probs(
        self, model_sha: str, chunk: StoredChunk, embeddings: np.ndarray | None, num_classes: int
    ) -> np.ndarray:
        """(n, C) probabilities of a chunk; ``embeddings``: the chunk's as float32."""
        out = np.zeros((len(chunk.hashes), num_classes), dtype=np.float32)
        weights = self.weights(model_sha)
        from_embedding = chunk.has_embedding if weights is not None else np.zeros(len(chunk.hashes), bool)
        if from_embedding.any():
            assert weights is not None and embeddings is not None
            w, b = weights
            rows = embeddings if from_embedding.all() else embeddings[from_embedding]
            out[from_embedding] = softmax(rows @ w.T + b)
        for i in np.nonzero(~from_embedding)[0]:
            index, prob = chunk.topk_index[i], chunk.topk_prob[i]
            if index is not None and prob is not None:
                out[i, index.astype(np.int64)] = prob.astype(np.float32)
        return out


@dataclass
class RecategorizeReport:
    photos: int = 0
    changed: int = 0
    categories: dict[str, int] = field(default_factory=dict)
    cancelled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": self.photos,
            "changed": self.changed,
            "categories": self.categories,
            "cancelled": self.cancelled,
        }


def classifiers(
    catalog: Catalog, rules_for: RulesFor, index_dir: Path | None = None, exact_only: bool = False
) -> list[AlbumClassifier]:
    """The album classifier of every classifier model with results in ``catalog``, newest first.
    ``exact_only``: only models whose classifier weights can be read (their stored embeddings give the full
    softmax back, so re-deriving gives what classify would; otherwise only the stored top-100 is at hand)."""
    softmax_of = _FullSoftmax(catalog, index_dir)
    return [
        AlbumClassifier.load(rules_for(m.labels), catalog, m.sha256, index_dir)
        for m in catalog.models()
        if m.task == "classify" and (not exact_only or softmax_of.weights(m.sha256) is not None)
    ]


def stale_results(
    catalog: Catalog, rules_for: RulesFor, exact_only: bool = False, cache_dir: Path | None = None
) -> int:
    """How many classified results were decided under other rules or heads than those in force."""
    albums = classifiers(catalog, rules_for, cache_dir, exact_only=exact_only)
    return sum(catalog.stale_count(a.model_sha256, a.fingerprint) for a in albums)


Progress = Callable[[int, int], None]
"""(results done, results to do)."""


def recategorize(
    catalog: Catalog,
    rules_for: RulesFor,
    *,
    only_stale: bool = False,
    exact_only: bool = False,
    on_progress: Progress | None = None,
    cancel: threading.Event | None = None,
    chunk: int = 4096,
    cache_dir: Path | None = None,
) -> RecategorizeReport:
    """Re-derive the categories of stored classifications (``only_stale``: those not decided by the rules and
    heads in force; ``exact_only``: of models whose classifier weights can be read) in chunks of ``chunk``
    results, each chunk one matrix product and one transaction; no inference. A cancel stops between chunks;
    what was done is kept. ``cache_dir``: where derived arrays (the classifier weights) are kept."""
    report = RecategorizeReport()
    softmax_of = _FullSoftmax(catalog, cache_dir)
    albums = classifiers(catalog, rules_for, cache_dir, exact_only=exact_only)
    todo = sum(catalog.stale_count(a.model_sha256, a.fingerprint if only_stale else None) for a in albums)
    if on_progress:
        on_progress(0, todo)
    for album in albums:
        fingerprint = album.fingerprint
        stale_for = fingerprint if only_stale else None
        for part in _read_ahead(catalog, album.model_sha256, stale_for, chunk):
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                return report
            decisions, embeddings = _rules_for_chunk(album, softmax_of, part)
            with catalog.atomic():
                # Under the write lock: a correction made since the head was loaded is taken in, so this chunk
                # never writes back what that correction's neighbours were before it.
                if album.head is None or album.head.version != catalog.corrections_version():
                    album.head = PersonalHead.from_catalog(catalog, album.model_sha256)
                decisions = _with_personal(album.head, decisions, embeddings, part)
                catalog.update_categories(
                    (
                        (rowid, d.category, d.score, d.fine, d.personal)
                        for rowid, d in zip(part.rowids, decisions, strict=True)
                    ),
                    fingerprint,
                )
            for old, d in zip(part.shown, decisions, strict=True):
                report.changed += int(old != d.shown)
                report.categories[d.shown] = report.categories.get(d.shown, 0) + 1
            report.photos += len(part.hashes)
            if on_progress:
                on_progress(report.photos, todo)
    return report


def _read_ahead(
    catalog: Catalog, model_sha256: str, stale_for: str | None, chunk: int
) -> Iterator[StoredChunk]:
    """The stored chunks, read one ahead by a thread with a connection of its own: SQLite reads (a third of the
    time) overlap the matrix products. Stopping early stops the reader."""
    ready: queue.Queue[StoredChunk | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def hand_over(item: StoredChunk | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            with Catalog(catalog.path, readonly=True) as own:
                for part in own.stored_chunks(model_sha256, stale_for=stale_for, batch=chunk):
                    if not hand_over(part):
                        return
            hand_over(None)
        except BaseException as exc:  # handed to the consumer, which raises it
            hand_over(exc)

    reader = threading.Thread(target=read, name="photosift-recategorize-read", daemon=True)
    reader.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def _rules_for_chunk(
    album: AlbumClassifier, softmax_of: _FullSoftmax, part: StoredChunk
) -> tuple[list[Decision], np.ndarray | None]:
    """The model's decisions for a chunk (one matrix product for the softmax), and its float32 embeddings."""
    embeddings = part.embeddings.astype(np.float32) if part.embeddings is not None else None
    probs = softmax_of.probs(album.model_sha256, part, embeddings, album.rules.num_classes)
    people = [PeopleSignal.from_dict(p) if p else None for p in part.people]
    detector = album.detector_scores(part.embeddings)  # float16 as stored: what the detector reads
    stored = part.embeddings  # float16: the heads read these (float32 only for the matrix products)
    if stored is None or part.has_embedding.all():
        base = album.base(probs, people, stored, detector)
    else:  # rows without an embedding: the rules alone, as at classify time
        base = [CategoryResult("", 0.0)] * len(part.hashes)
        for rows, emb in (
            (np.nonzero(part.has_embedding)[0], stored),
            (np.nonzero(~part.has_embedding)[0], None),
        ):
            if rows.size:
                decided = album.base(
                    probs[rows],
                    [people[i] for i in rows],
                    emb[rows] if emb is not None else None,
                    detector[rows] if detector is not None and emb is not None else None,
                )
                for i, r in zip(rows, decided, strict=True):
                    base[i] = r
    return [Decision(r.category, r.score, r.fine) for r in base], embeddings


def _with_personal(
    head: PersonalHead, decisions: list[Decision], embeddings: np.ndarray | None, part: StoredChunk
) -> list[Decision]:
    """The decisions with the personal head's added where it speaks (rows with embeddings only)."""
    if not len(head) or embeddings is None:
        return decisions
    rows = np.nonzero(part.has_embedding)[0]
    personal = head.decide(embeddings[rows], [part.hashes[i] for i in rows])
    out = list(decisions)
    for i, p in zip(rows, personal, strict=True):
        if p is not None:
            d = out[i]
            out[i] = Decision(d.category, d.score, d.fine, p)
    return out
