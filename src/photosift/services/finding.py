"""The finding services: search, similar, duplicates, the timeline's ids, hiding photos."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from photosift.core.catalog import Catalog, ResultRow
from photosift.core.config import Settings
from photosift.core.errors import CatalogError, PhotosiftError
from photosift.core.scanner import path_text
from photosift.services.library import NotInCatalog, catalog_path_of, open_catalog

if TYPE_CHECKING:
    from photosift.find.library import Finder
    from photosift.find.query import Query

log = logging.getLogger("photosift")


# -- finding photos ---------------------------------------------------------------------------------------------


@dataclass
class Found:
    """A photo that a search or a similarity query found: its result row plus why it is here."""

    row: ResultRow
    relevance: float | None = None  # search: mean per-term score (labels mass + category + name)
    similarity: float | None = None  # similar: cosine similarity of the embeddings
    why: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = self.row.to_dict()
        if self.relevance is not None:
            out["relevance"] = self.relevance
            out["why"] = self.why
        if self.similarity is not None:
            out["similarity"] = self.similarity
        return out


@dataclass
class SearchPage:
    query: Query
    total: int
    items: list[Found]


@dataclass
class DuplicateGroup:
    rows: list[ResultRow]  # the suggested keeper first
    similarity: float
    keeper_reason: str

    def to_dict(self) -> dict[str, Any]:
        shown = [path_text(r.path)[0] for r in self.rows]  # valid text for JSON, CSV and tables, any name
        return {
            "paths": shown,
            "similarity": self.similarity,
            "keeper": shown[0],
            "keeper_reason": self.keeper_reason,
            "photos": [
                {
                    "path": path_text(r.path)[0],
                    "size": r.size,
                    "width": r.width,
                    "height": r.height,
                    "taken_at": r.taken_at,
                    "taken_source": r.taken_source,
                }
                for r in self.rows
            ],
        }


def _finder(settings: Settings) -> Finder:
    from photosift.find.library import finder

    if not settings.db_path.is_file():
        raise CatalogError(f"{settings.db_path}: catalog not found (run `photosift classify` first)")
    return finder(settings.db_path)


def search(settings: Settings, query: str, *, limit: int | None = None, offset: int = 0) -> SearchPage:
    """Photos a query describes (labels through the WordNet hierarchy, categories, corrections, file and folder
    names, dates), most relevant first; see :mod:`photosift.find.search`."""
    f = _finder(settings)
    searcher = f.searcher()
    photos = searcher.photos
    parsed, hits = searcher.search(query)
    end = None if limit is None else offset + limit
    page = [
        (int(i), round(float(r), 4))
        for i, r in zip(hits.photos[offset:end], hits.relevance[offset:end], strict=True)
    ]
    rows = f.rows([int(photos.ids[i]) for i, _ in page])
    items = [
        Found(rows[int(photos.ids[i])], relevance=rel, why=searcher.explain(parsed, i))
        for i, rel in page
        if int(photos.ids[i]) in rows
    ]
    return SearchPage(parsed, len(hits), items)


def search_ids(settings: Settings, query: str) -> list[int]:
    """Every photo id a search finds, in its order (for stepping through the results)."""
    searcher = _finder(settings).searcher()
    photos = searcher.photos
    _, hits = searcher.search(query)
    return [int(i) for i in photos.ids[hits.photos]]


def browse_ids(settings: Settings, *, category: str | None = None, month: str | None = None) -> list[int]:
    """Visible photo ids of one category (None: uncategorized) by path, or of one month (YYYY-MM) by date."""
    photos = _finder(settings).photos()
    if month is not None:
        idx = [i for i in range(len(photos)) if str(photos.taken_at[i]).startswith(month)]
        idx.sort(key=lambda i: (str(photos.taken_at[i]), photos.paths[i]))
        return [int(photos.ids[i]) for i in idx]
    return [int(photos.ids[i]) for i, c in enumerate(photos.category) if c == category]


def warm_finding(settings: Settings) -> None:
    """Load what search and similar need for this catalog (the gallery calls it once at start); never raises."""
    try:
        f = _finder(settings)
        f.searcher()
        f.vectors()
    except Exception as exc:  # a missing or unreadable catalog is reported by the pages that need it
        log.debug("finding arrays not preloaded: %s", exc)


def close_finding(settings: Settings) -> None:
    """Drop the finding arrays and connection kept for this catalog (a benchmark's or a test's temporary one)."""
    from photosift.find.library import forget

    forget(settings.db_path)


def photo_by_path(settings: Settings, path: str | Path) -> int:
    """The catalog id of the photo at ``path``; NotInCatalog when it is not there."""
    where = catalog_path_of(path)
    photo_id = _finder(settings).photo_id(where)
    if photo_id is None:
        raise NotInCatalog(f"{where}: not in the catalog (or unreadable); classify it first")
    return photo_id


def similar(settings: Settings, photo_id: int, *, limit: int = 20) -> list[Found]:
    """The photos whose embeddings are closest to this photo's (cosine), most similar first; copies with the
    same content come first at similarity 1. The photo itself is left out."""
    f = _finder(settings)
    row = f.rows([photo_id]).get(photo_id)
    if row is None or row.content_hash is None or row.status != "ok":
        raise NotInCatalog(f"photo {photo_id}: not a readable photo in the catalog")
    index = f.vectors()
    query = f.full_vectors([row.content_hash]).get(row.content_hash)
    if index is None or query is None:
        raise FindError(f"{row.path}: no embedding stored for it (classify it with a model that has one)")
    photos = f.photos()
    by_hash = photos.by_hash()
    wanted = limit + 1 + len(by_hash.get(row.content_hash, []))
    rows_, sims = index.nearest(query, wanted if index.exact else max(4 * wanted, 100))
    scored = {index.hashes[r]: float(s) for r, s in zip(rows_, sims, strict=True)}
    if not index.exact:  # the reduced cosine proposed; the exact one ranks
        q = query / (np.linalg.norm(query) or 1.0)
        scored = {
            h: float(q @ v / (np.linalg.norm(v) or 1.0)) for h, v in f.full_vectors(list(scored)).items()
        }
    found: list[tuple[float, int]] = []
    for h, sim in scored.items():
        for i in by_hash.get(h, []):
            if int(photos.ids[i]) != photo_id:
                found.append((1.0 if h == row.content_hash else sim, i))
    found.sort(key=lambda t: (-t[0], photos.paths[t[1]]))
    found = found[:limit]
    rows = f.rows([int(photos.ids[i]) for _, i in found])
    return [
        Found(rows[int(photos.ids[i])], similarity=round(min(sim, 1.0), 4))
        for sim, i in found
        if int(photos.ids[i]) in rows
    ]


def duplicates(settings: Settings, *, threshold: float | None = None) -> list[DuplicateGroup]:
    """Groups of near-duplicate photos (same scene: copies, re-encodes, resizes, crops, bursts), the suggested
    keeper first in each; see :mod:`photosift.find.duplicates`. Nothing is deleted."""
    from photosift.find.duplicates import DEFAULT_THRESHOLD, find_groups

    bar = DEFAULT_THRESHOLD if threshold is None else threshold
    if not 0.0 < bar <= 1.0:
        raise FindError(f"threshold {bar}: must be above 0 and at most 1")
    f = _finder(settings)
    index = f.vectors()
    if index is None:
        return []
    photos = f.photos()
    groups = find_groups(photos, index, f.full_vectors, bar)
    rows = f.rows([int(photos.ids[i]) for g in groups for i in g.members])
    out = []
    for g in groups:
        members = [rows[int(photos.ids[i])] for i in g.members if int(photos.ids[i]) in rows]
        if len(members) > 1:
            out.append(DuplicateGroup(members, g.similarity, g.keeper_reason))
    return out


def set_hidden(
    settings: Settings, photo_ids: Sequence[int], hidden: bool, catalog: Catalog | None = None
) -> int:
    """Hide photos from the gallery and from finding, or show them again; files are never touched."""
    if catalog is not None:
        return catalog.set_hidden(photo_ids, hidden)
    with open_catalog(settings, create=False) as cat:
        return cat.set_hidden(photo_ids, hidden)


class FindError(PhotosiftError):
    """A search, similarity or duplicates request that cannot be answered (no embeddings, a bad threshold)."""
