"""Corrections: store what the user said, re-decide only the photos near it, say what moved, undo.

A correction (or a clear, or an undo) is one transaction: the correction, its history event, and the personal
head's new decisions for the photos within its similarity gate (found by a nearest-neighbour query on the stored
embeddings, :class:`~photosift.album.neighbours.EmbeddingIndex`), plus those that followed the photo before. No
other photo can change — the head is local by construction — so a correction costs O(neighbours), not a pass
over the library, and its report lists every photo whose shown category changed.

Undo restores the photo's correction as it was before its latest correction; the personal head is a function of
the corrections, so re-deciding the same neighbours restores their categories too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from photosift.album.decisions import RulesFor
from photosift.album.neighbours import EmbeddingIndex
from photosift.album.personal import PersonalHead
from photosift.album.rules import check_category_name
from photosift.core.catalog import Catalog
from photosift.core.errors import CatalogError, NothingToUndo


@dataclass(frozen=True, slots=True)
class Moved:
    """Another photo whose shown category a correction changed."""

    content_hash: str
    before: str | None
    after: str | None
    photo_id: int | None = None
    path: str | None = None
    via: str | None = None  # the corrected photo it follows now, or followed before (content hash)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "id": self.photo_id, "from": self.before, "to": self.after}


@dataclass
class CorrectionReport:
    """What a correction, clear or undo did: the photo's correction before and after (None: none), its history
    event, the event it undid, and the other photos it moved."""

    path: str
    content_hash: str
    before: str | None
    after: str | None
    event: int
    moved: list[Moved] = field(default_factory=list)
    undid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "corrected_category": self.after,
            "previous": self.before,
            "event": self.event,
            "undid": self.undid,
            "moved": [m.to_dict() for m in self.moved],
        }


def _check_category(catalog: Catalog, rules_for: RulesFor, category: str, create: bool) -> None:
    """``category`` is known (the rules of the newest classifier, or the user's own); ``create`` adds it."""
    latest = next((m for m in catalog.models() if m.task == "classify"), None)
    if latest is None:
        raise CatalogError(f"{catalog.path}: no classified photos yet")
    rules = rules_for(latest.labels)
    if category in [*rules.categories, *catalog.user_categories()]:
        return
    if not create:
        rules.check_category(category, extra=catalog.user_categories())  # raises, with a suggestion
    catalog.add_user_category(check_category_name(category))


def correct(
    catalog: Catalog,
    rules_for: RulesFor,
    content_hash: str,
    category: str | None,
    *,
    create: bool = False,
    path: str = "",
    index_dir: Path | None = None,
) -> CorrectionReport:
    """Store (``category=None``: clear) the photo's correction and re-decide the photos near it."""
    if category is not None:
        _check_category(catalog, rules_for, category, create)
    with catalog.atomic():
        before = catalog.correction_of(content_hash)
        catalog.set_correction(content_hash, category)
        event = catalog.add_history(content_hash, before, category)
        moved = refresh_near(catalog, [content_hash], index_dir)
        catalog.set_history_moved(event, [[m.content_hash, m.before, m.after] for m in moved])
    return CorrectionReport(path, content_hash, before, category, event, moved)


def undo(
    catalog: Catalog,
    content_hash: str,
    *,
    event: int | None = None,
    path: str = "",
    index_dir: Path | None = None,
) -> CorrectionReport:
    """Take back the photo's latest correction (``event``: only if that is the one): its correction becomes what
    it was before, and the photos that correction moved move back."""
    with catalog.atomic():
        target = catalog.undo_target(content_hash)
        if event is not None and (target is None or target.id != event):
            raise NothingToUndo(f"{path or content_hash}: that correction was undone or replaced already")
        if target is None:
            raise NothingToUndo(f"{path or content_hash}: no correction to undo")
        current = catalog.correction_of(content_hash)
        catalog.set_correction(content_hash, target.before)
        done = catalog.add_history(content_hash, current, target.before, undoes=target.id)
        moved = refresh_near(catalog, [content_hash], index_dir)
        catalog.set_history_moved(done, [[m.content_hash, m.before, m.after] for m in moved])
    return CorrectionReport(path, content_hash, current, target.before, done, moved, undid=target.id)


def correct_many(
    catalog: Catalog,
    rules_for: RulesFor,
    changes: Sequence[tuple[str, str | None]],
    *,
    index_dir: Path | None = None,
) -> list[Moved]:
    """Several corrections (content hash, category or None) in one transaction, each recorded in the history;
    the photos near all of them are re-decided once (one matrix product). Returns every photo that moved; each
    history event records those that follow (or followed) its photo."""
    for _, category in changes:
        if category is not None:
            _check_category(catalog, rules_for, category, False)
    with catalog.atomic():
        events: dict[str, int] = {}
        for content_hash, category in changes:
            before = catalog.correction_of(content_hash)
            catalog.set_correction(content_hash, category)
            events[content_hash] = catalog.add_history(content_hash, before, category)
        moved = refresh_near(catalog, list(events), index_dir)
        for content_hash, event in events.items():
            mine = [[m.content_hash, m.before, m.after] for m in moved if m.via == content_hash]
            catalog.set_history_moved(event, mine)
    return moved


def refresh_near(
    catalog: Catalog, changed: Sequence[str], index_dir: Path | None, models: Sequence[str] | None = None
) -> list[Moved]:
    """Re-decide the personal head for the photos near the corrected photos ``changed`` (and those that followed
    them) under each classifier's embeddings (``models``: only these); store what changed; return the photos
    whose shown category changed, except photos with a correction of their own (theirs still wins)."""
    corrected = catalog.corrections()
    shas = models if models is not None else [m.sha256 for m in catalog.models() if m.task == "classify"]
    moved: dict[str, Moved] = {}
    for sha in shas:  # newest model first: a photo is reported as its newest result shows it
        head = PersonalHead.from_catalog(catalog, sha)
        candidates: set[str] = set()
        _, vectors = catalog.embeddings_of(sha, changed)
        if vectors is not None:
            index = EmbeddingIndex.open(catalog, sha, index_dir)
            candidates.update(index.near(vectors, head.similarity)[0])
        for h in changed:
            candidates.update(catalog.moved_by(sha, h))
        hashes, matrix = catalog.embeddings_of(sha, sorted(candidates))
        if matrix is None:
            continue
        stored = catalog.personal_of(sha, hashes)
        updates = []
        for h, decision in zip(hashes, head.decide(matrix, hashes), strict=True):
            if h not in stored or stored[h][0] == decision:
                continue  # an embedding without a classification, or nothing changed
            old, rules_category = stored[h]
            updates.append((h, decision))
            before = old.category if old is not None else rules_category
            after = decision.category if decision is not None else rules_category
            if before != after and h not in corrected and h not in moved:
                follows = decision if decision is not None else old
                moved[h] = Moved(h, before, after, via=follows.source if follows is not None else None)
        catalog.set_personal(sha, updates)
    photos = catalog.photos_of(list(moved))
    shown = [
        Moved(m.content_hash, m.before, m.after, *photos[m.content_hash], via=m.via)
        for m in moved.values()
        if m.content_hash in photos
    ]
    return sorted(shown, key=lambda m: m.path or "")
