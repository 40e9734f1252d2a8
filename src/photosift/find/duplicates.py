"""Near-duplicates: groups of photos of the same scene — copies, re-encodes, resizes, crops, burst shots.

Two photos are a pair when the exact cosine similarity of their embeddings reaches the threshold ``T``
(default 0.90), or reaches ``T - PHASH_RELAX`` while their perceptual hashes differ in at most
``PHASH_MAX_BITS`` of 64 bits (the same picture, only recompressed or resized, whose embedding moved a little).
Copies with identical bytes share their content and are pairs with similarity 1. Pairs join into groups
(a burst of five shots is one group even when the first and the last differ more); a group's ``similarity`` is
its weakest link. Measured on the test photos (docs/FIND.md): re-encoded and resized copies 0.93–0.99, 92 %
crops 0.92–0.98, different photos at most 0.36.

The keeper suggested for each group is the photo with the most pixels, then the largest file, then the
earliest date, then the shortest path. Nothing here deletes or moves a file: the CLI can write the list, and the
gallery can mark the others hidden in the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from photosift.core.photometa import hamming
from photosift.find.library import Photos
from photosift.find.vectors import VectorIndex

DEFAULT_THRESHOLD = 0.90
PHASH_RELAX = 0.10
PHASH_MAX_BITS = 10
REDUCED_MARGIN = 0.05  # the reduced cosine proposes pairs this far below the bar; the exact one decides


@dataclass
class Group:
    """Photos (indices into :class:`Photos`) of one scene, the keeper first."""

    members: list[int]
    similarity: float
    keeper_reason: str


def keeper_key(photos: Photos, i: int) -> tuple[int, int, str, int, str]:
    taken = str(photos.taken_at[i]) or "9999"
    path = photos.paths[i]
    return (-int(photos.pixels[i]), -int(photos.size[i]), taken, len(path), path)


def _reason(photos: Photos, keeper: int, others: Sequence[int]) -> str:
    if any(photos.pixels[keeper] > photos.pixels[o] for o in others):
        return "most pixels"
    if any(photos.size[keeper] > photos.size[o] for o in others):
        return "largest file"
    if any(str(photos.taken_at[keeper]) < str(photos.taken_at[o]) for o in others):
        return "earliest"
    return "shortest path"


class _Union:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.weakest: dict[int, float] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, a: int, b: int, sim: float) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        self.weakest[ra] = min(sim, self.weakest.get(ra, 1.0), self.weakest.get(rb, 1.0))


def find_groups(
    photos: Photos,
    index: VectorIndex,
    exact: Callable[[Sequence[str]], dict[str, np.ndarray]],
    threshold: float = DEFAULT_THRESHOLD,
) -> list[Group]:
    """Groups of near-duplicate photos, largest first. ``exact(hashes)`` returns the full embeddings of a few
    contents (the index may hold reduced ones)."""
    floor = threshold - PHASH_RELAX
    proposed = index.pairs_above(floor - (0 if index.exact else REDUCED_MARGIN))
    if not index.exact and proposed:
        rows = sorted({r for pair in proposed for r in pair})
        full = exact([index.hashes[r] for r in rows])
        unit = {h: v / (np.linalg.norm(v) or 1.0) for h, v in full.items()}
        checked = {}
        for (a, b), _ in proposed.items():
            ha, hb = index.hashes[a], index.hashes[b]
            if ha in unit and hb in unit:
                checked[(a, b)] = float(unit[ha] @ unit[hb])
        proposed = checked
    by_hash = photos.by_hash()
    union = _Union()
    for members in by_hash.values():  # identical bytes at several paths
        for other in members[1:]:
            union.join(members[0], other, 1.0)
    edges = sorted(proposed.items(), key=lambda kv: -kv[1])
    for (a, b), sim in edges:
        left, right = by_hash.get(index.hashes[a], []), by_hash.get(index.hashes[b], [])
        if not left or not right:
            continue  # content without a findable photo (hidden, missing)
        if sim < threshold and not _same_picture(photos, left[0], right[0]):
            continue
        union.join(left[0], right[0], sim)
    groups: dict[int, list[int]] = {}
    for x in list(union.parent):
        groups.setdefault(union.find(x), []).append(x)
    out = []
    for root, members in groups.items():
        if len(members) < 2:
            continue
        members.sort(key=lambda i: keeper_key(photos, i))
        sim = round(union.weakest.get(root, 1.0), 4)
        out.append(Group(members, sim, _reason(photos, members[0], members[1:])))
    out.sort(key=lambda g: (-len(g.members), -g.similarity, photos.paths[g.members[0]]))
    return out


def _same_picture(photos: Photos, a: int, b: int) -> bool:
    ha, hb = photos.phash[a], photos.phash[b]
    return ha is not None and hb is not None and hamming(ha, hb) <= PHASH_MAX_BITS
