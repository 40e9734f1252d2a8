"""The catalog as arrays for finding: visible photos, the stored top-k of a classifier, the stored embeddings.

Search, similar photos and duplicates all read what the catalog already holds, once, into contiguous numpy
arrays, and keep them while the catalog does not change:

* :class:`Photos` — every photo that can be found (readable, not missing, not hidden): id, path, content,
  effective category (corrections win), date and what the duplicates page shows. Reloaded whenever anything was
  committed (SQLite's ``PRAGMA data_version`` on a connection of our own tells: one cheap query).
* :class:`TopK` — the top-100 class indices and probabilities per content from the classifier with the most
  results (about 40 MB at 100,000 photos); reloaded only when that model's results change.
* the embeddings of the model with the most of them: :mod:`photosift.find.vectors` builds its index from them.

A :class:`Finder` holds these for one catalog file; :func:`finder` keeps one per path for the process (the web
gallery asks it on every search; the CLI once).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from photosift.core.catalog import TOPK_STORED, Catalog, ResultRow, from_db_path

if TYPE_CHECKING:
    from photosift.find.search import Searcher
    from photosift.find.vectors import VectorIndex


@dataclass
class Photos:
    """The findable photos, one entry per path, in path order."""

    ids: np.ndarray  # int64
    paths: list[str]
    hashes: list[str]
    category: list[str | None]  # effective: the correction, else the personal head's, else the rules'
    corrected: np.ndarray  # bool
    taken_at: np.ndarray  # str (ISO; "" when unknown)
    taken_source: list[str | None]
    size: np.ndarray  # int64 bytes
    pixels: np.ndarray  # int64 width * height (0 when unknown)
    phash: list[int | None]
    _by_hash: dict[str, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def by_hash(self) -> dict[str, list[int]]:
        """Content hash -> the photos (indices) that hold it; built once per snapshot."""
        if self._by_hash is None:
            self._by_hash = {}
            for i, h in enumerate(self.hashes):
                self._by_hash.setdefault(h, []).append(i)
        return self._by_hash


@dataclass
class TopK:
    """A classifier's stored top-k per content: rows follow ``hashes``."""

    model_sha256: str
    labels: tuple[str, ...]
    hashes: list[str]
    index: np.ndarray  # (M, K) uint16 class indices, as stored
    prob: np.ndarray  # (M, K) float16, as stored
    _postings: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def postings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """By class: (offsets (C+1,), content rows int32, probabilities float32) — an inverted index, so a
        term's mass touches only the entries of its classes, not all M x K."""
        if self._postings is None:
            k = self.index.shape[1] if self.index.ndim == 2 else 0
            flat = self.index.ravel()
            order = np.argsort(flat, kind="stable")
            rows = (order // max(k, 1)).astype(np.int32)
            probs = self.prob.ravel()[order].astype(np.float32)
            offsets = np.searchsorted(flat[order], np.arange(len(self.labels) + 1))
            self._postings = (offsets, rows, probs)
        return self._postings

    def mass(self, weights: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
        """Per content row: the stored probability on these classes, and the same weighted."""
        offsets, rows, probs = self.postings()
        classes = [c for c in weights if 0 <= c < len(self.labels)]
        m = len(self.hashes)
        if not classes:
            return np.zeros(m), np.zeros(m)
        # Each class's postings are one contiguous slice: no index arrays, one bincount per output.
        r = np.concatenate([rows[offsets[c] : offsets[c + 1]] for c in classes])
        p = np.concatenate([probs[offsets[c] : offsets[c + 1]] for c in classes])
        w = np.repeat(
            np.array([weights[c] for c in classes], np.float32),
            [offsets[c + 1] - offsets[c] for c in classes],
        )
        return np.bincount(r, weights=p, minlength=m), np.bincount(r, weights=p * w, minlength=m)

    def rows_of(self, hashes: Sequence[str]) -> np.ndarray:
        """Row of each content hash, -1 where this model has no result."""
        where = {h: i for i, h in enumerate(self.hashes)}
        return np.fromiter((where.get(h, -1) for h in hashes), dtype=np.int64, count=len(hashes))


def _best_model(cat: Catalog, table: str, task: str | None) -> tuple[str, tuple[str, ...]] | None:
    """The model with the most rows in ``table`` (results of a ``task`` model, or embeddings). Counted on the
    table's primary-key index alone: the rows themselves (blobs) are never read."""
    counts = cat.db.execute(f"SELECT model_sha256, COUNT(*) FROM {table} GROUP BY model_sha256").fetchall()
    for sha, _ in sorted(counts, key=lambda r: -r[1]):
        row = cat.db.execute("SELECT labels, task FROM models WHERE sha256 = ?", (sha,)).fetchone()
        if row is not None and (task is None or row[1] == task):
            return sha, tuple(json.loads(row[0]))
    return None


def load_photos(cat: Catalog, model_sha256: str | None) -> Photos:
    """Readable, present, visible photos with the category of ``model_sha256``'s result (or the correction)."""
    rows = cat.db.execute(
        "SELECT p.id, p.path, p.content_hash, COALESCE(c.category, r.personal_category, r.category), c.category IS NOT NULL, "
        "p.taken_at, p.taken_source, p.size, p.width, p.height, p.phash FROM photos p "
        "LEFT JOIN results r ON r.content_hash = p.content_hash AND r.model_sha256 = ? "
        "LEFT JOIN corrections c ON c.content_hash = p.content_hash "
        "WHERE p.status = 'ok' AND p.hidden = 0 AND p.content_hash IS NOT NULL ORDER BY p.path",
        (model_sha256 or "",),
    ).fetchall()
    n = len(rows)
    cols = list(zip(*rows, strict=True)) if rows else [()] * 11
    return Photos(
        ids=np.fromiter(cols[0], dtype=np.int64, count=n),
        paths=[from_db_path(p) for p in cols[1]],  # the str open() needs, for any file name
        hashes=list(cols[2]),
        category=list(cols[3]),
        corrected=np.fromiter(cols[4], dtype=bool, count=n),
        taken_at=np.array([t or "" for t in cols[5]], dtype=str) if n else np.array([], dtype=str),
        taken_source=list(cols[6]),
        size=np.fromiter(cols[7], dtype=np.int64, count=n),
        pixels=np.fromiter(((w or 0) * (h or 0) for w, h in zip(cols[8], cols[9], strict=True)), np.int64, n),
        phash=list(cols[10]),
    )


def load_topk(cat: Catalog, model_sha256: str, labels: tuple[str, ...]) -> TopK:
    """Every stored top-k of one classifier, as two (M, K) arrays (one join of the blobs, no per-row parsing)."""
    rows = cat.db.execute(
        "SELECT content_hash, topk_index, topk_prob FROM results WHERE model_sha256 = ? "
        "AND topk_index IS NOT NULL",
        (model_sha256,),
    ).fetchall()
    k = min(TOPK_STORED, len(labels))
    hashes = [r[0] for r in rows]
    full = [r for r in rows if len(r[1]) == 2 * k]  # every row has k entries; a foreign one is skipped
    if len(full) != len(rows):
        hashes = [r[0] for r in full]
    index = np.frombuffer(b"".join(r[1] for r in full), dtype=np.uint16).reshape(-1, k)
    prob = np.frombuffer(b"".join(r[2] for r in full), dtype=np.float16).reshape(-1, k)
    return TopK(model_sha256, labels, hashes, index, prob)


def load_vectors(
    cat: Catalog, model_sha256: str, hashes: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Stored embeddings of one model (all, or those of ``hashes``): (content hashes, (N, D) float16)."""
    sql = "SELECT content_hash, vector FROM embeddings WHERE model_sha256 = ?"
    rows: list[Any] = []
    if hashes is None:
        rows = cat.db.execute(sql, (model_sha256,)).fetchall()
    else:
        wanted = list(dict.fromkeys(hashes))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows += cat.db.execute(sql + f" AND content_hash IN ({marks})", (model_sha256, *chunk)).fetchall()
    if not rows:
        return [], np.zeros((0, 0), dtype=np.float16)
    dim = len(rows[0][1]) // 2
    rows = [r for r in rows if len(r[1]) == 2 * dim]
    return [r[0] for r in rows], np.frombuffer(b"".join(r[1] for r in rows), np.float16).reshape(-1, dim)


def _signature(cat: Catalog, table: str, model_sha256: str) -> tuple[int, int]:
    row = cat.db.execute(
        f"SELECT COUNT(*), COALESCE(MAX(rowid), 0) FROM {table} WHERE model_sha256 = ?", (model_sha256,)
    ).fetchone()
    return int(row[0]), int(row[1])


class Finder:
    """What finding needs from one catalog, kept while the catalog does not change. Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._catalog: Catalog | None = None
        self._version: int | None = None
        self._photos: Photos | None = None
        self._topk: TopK | None = None
        self._topk_sig: tuple[str, tuple[int, int]] | None = None
        self._vectors: VectorIndex | None = None
        self._vectors_sig: tuple[str, tuple[int, int]] | None = None
        self._searcher: Searcher | None = None
        self._checked: dict[str, int | None] = {}  # data_version at which each heavy part was last checked
        self.classifier: tuple[str, tuple[str, ...]] | None = None
        self.embedder: str | None = None

    @property
    def catalog(self) -> Catalog:
        """Our own connection: its ``data_version`` moves whenever another connection commits."""
        if self._catalog is None:
            self._catalog = Catalog.for_reading(self.path)
        return self._catalog

    def _refresh(self) -> None:
        version = int(self.catalog.db.execute("PRAGMA data_version").fetchone()[0])
        if version == self._version and self._photos is not None:
            return
        cat = self.catalog
        self.classifier = _best_model(cat, "results", "classify")
        best_embed = _best_model(cat, "embeddings", None)
        self.embedder = best_embed[0] if best_embed else None
        self._photos = load_photos(cat, self.classifier[0] if self.classifier else None)
        self._version = version

    def photos(self) -> Photos:
        with self._lock:
            self._refresh()
            assert self._photos is not None
            return self._photos

    def topk(self) -> TopK | None:
        with self._lock:
            self._refresh()
            if self.classifier is None:
                return None
            sha, labels = self.classifier
            if self._topk is not None and self._checked.get("topk") == self._version:
                return self._topk
            sig = (sha, _signature(self.catalog, "results", sha))
            self._checked["topk"] = self._version
            if self._topk is None or sig != self._topk_sig:
                self._topk = load_topk(self.catalog, sha, labels)
                self._topk_sig = sig
            return self._topk

    def searcher(self) -> Searcher:
        """The search over the current photos and top-k (its arrays built once per snapshot)."""
        from photosift.find.search import Searcher

        with self._lock:
            photos, topk = self.photos(), self.topk()
            if (
                self._searcher is None
                or self._searcher.photos is not photos
                or self._searcher.topk is not topk
            ):
                self._searcher = Searcher(photos, topk)
            return self._searcher

    def vectors(self) -> VectorIndex | None:
        from photosift.find.vectors import VectorIndex

        with self._lock:
            self._refresh()
            if self.embedder is None:
                return None
            if self._vectors is not None and self._checked.get("vectors") == self._version:
                return self._vectors
            sig = (self.embedder, _signature(self.catalog, "embeddings", self.embedder))
            self._checked["vectors"] = self._version
            if self._vectors is None or sig != self._vectors_sig:
                hashes, matrix = load_vectors(self.catalog, self.embedder)
                self._vectors = VectorIndex.build(hashes, matrix)
                self._vectors_sig = sig
            return self._vectors

    def full_vectors(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Exact float32 embeddings of a few contents (for re-ranking what the reduced index proposes)."""
        with self._lock:
            if self.embedder is None:
                return {}
            found, matrix = load_vectors(self.catalog, self.embedder, hashes)
        return dict(zip(found, matrix.astype(np.float32), strict=True))

    def rows(self, ids: Sequence[int]) -> dict[int, ResultRow]:
        """Result rows of these photo ids, for showing what was found."""
        with self._lock:
            return self.catalog.photos_by_id(ids)

    def photo_id(self, path: str) -> int | None:
        with self._lock:
            return self.catalog.photo_id(path)

    def close(self) -> None:
        with self._lock:
            if self._catalog is not None:
                self._catalog.close()
                self._catalog = None


_FINDERS: dict[Path, Finder] = {}
_FINDERS_LOCK = threading.Lock()


def finder(path: Path) -> Finder:
    """The process's Finder for a catalog file (one per path: the gallery keeps its arrays between requests)."""
    key = Path(path).absolute()
    with _FINDERS_LOCK:
        if key not in _FINDERS:
            _FINDERS[key] = Finder(key)
        return _FINDERS[key]


def forget(path: Path) -> None:
    """Drop the Finder of a catalog file (tests that replace a catalog, a closing gallery)."""
    with _FINDERS_LOCK:
        f = _FINDERS.pop(Path(path).absolute(), None)
    if f is not None:
        f.close()
