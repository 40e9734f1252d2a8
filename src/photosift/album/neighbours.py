"""The photos near a corrected photo: one model's stored embeddings as contiguous float32 matrices.

A correction re-decides only the photos within the personal head's similarity gate of the corrected photo
(personal.py), so it needs every stored embedding whose cosine with that photo's reaches the gate — exactly, not
approximately, since the answer must equal what re-deriving everything would give. One matrix-vector product
over all of them does it: 100,000 × 1280 float32 rows of length 1 is 512 MB read in ~40 ms by one quiet core
(a float16 matrix would halve the bytes, but numpy has no fast float16 product: 0.45 s).

**Cache.** The rows are kept in ``cache_dir`` as ``.npy`` *segments*, each holding the embeddings of one range
of the catalog's rowids (``<catalog>-<model>-<lo>-<hi>.npy`` and ``.hashes.npy``), memory-mapped on load. A scan
appends embeddings with new rowids, so the next correction writes only a segment for those; a segment whose
range lost or changed a row (a replaced embedding gets a new rowid) no longer matches its count in the catalog
and is rebuilt, with the ones after it. So a stale cache is never used, and a correction after a scan costs the
new photos, not the library. A process keeps what it opened (the gallery answers corrections without reloading).
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np

from photosift.album.personal import SIMILARITY, unit
from photosift.core.catalog import Catalog
from photosift.core.files import write_replacing

MAX_SEGMENTS = 12  # more than this after many scans: merged into one


@dataclass
class Segment:
    lo: int  # rowids in (lo, hi]
    hi: int
    hashes: np.ndarray  # (n,) bytes, content hashes in ASCII
    matrix: np.ndarray  # (n, D) float32, rows of length 1


class EmbeddingIndex:
    """The unit embeddings of one model in one catalog, in rowid segments; :meth:`near` finds neighbours."""

    _opened: ClassVar[dict[tuple[str, str], EmbeddingIndex]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, segments: list[Segment], state: tuple[int, int]) -> None:
        self.segments = segments
        self.state = state  # the catalog's (count, highest rowid) of the model's embeddings

    def __len__(self) -> int:
        return sum(len(s.hashes) for s in self.segments)

    @classmethod
    def open(cls, catalog: Catalog, model_sha256: str, cache_dir: Path | None = None) -> EmbeddingIndex:
        """The index as the catalog is now: kept in the process, else from the cache, rebuilding only the
        segments that no longer match the catalog and adding one for rows stored since."""
        key = (str(Path(catalog.path).resolve()), model_sha256)
        state = catalog.embedding_state(model_sha256)
        with cls._lock:
            known = cls._opened.get(key)
        if known is not None and known.state == state:
            return known
        stem = _stem(catalog.path, model_sha256)
        segments = _load_segments(cache_dir, stem) if cache_dir is not None else []
        if not segments and known is not None:
            segments = known.segments
        valid: list[Segment] = []
        for seg in segments:  # a chain from rowid 0, each with as many rows as the catalog holds in its range
            start = valid[-1].hi if valid else 0
            if seg.lo != start or catalog.embedding_count(model_sha256, seg.lo, seg.hi) != len(seg.hashes):
                break
            valid.append(seg)
        top = valid[-1].hi if valid else 0
        changed = len(valid) != len(segments) or state[1] > top
        if state[1] > top:
            valid.append(_build(catalog, model_sha256, top, state[1]))
        if len(valid) > MAX_SEGMENTS:
            valid = [_merged(valid)]
        index = cls(valid, state)
        if changed and cache_dir is not None and catalog.embedding_state(model_sha256) == state:
            _save(cache_dir, stem, valid)  # only what the catalog still holds as read
        with cls._lock:
            cls._opened[key] = index
        return index

    def near(self, vectors: np.ndarray, similarity: float = SIMILARITY) -> tuple[list[str], np.ndarray]:
        """Content hashes of the photos within ``similarity`` of any of ``vectors`` (one, or (k, D)), and their
        (n, D) unit vectors. Several at once are one matrix product per segment (a bulk correction)."""
        queries = unit(vectors)
        hashes: list[str] = []
        rows: list[np.ndarray] = []
        for seg in self.segments:
            if not len(seg.hashes):
                continue
            sims = np.asarray(seg.matrix @ queries.T)
            hits = np.nonzero((sims >= similarity).any(axis=1))[0]
            hashes.extend(h.decode() for h in seg.hashes[hits])
            rows.append(np.asarray(seg.matrix[hits]))
        return hashes, (np.concatenate(rows) if rows else np.zeros((0, queries.shape[1]), np.float32))


def _stem(catalog_path: Path, model_sha256: str) -> str:
    catalog_key = hashlib.sha256(str(Path(catalog_path).resolve()).encode()).hexdigest()[:12]
    return f"{catalog_key}-{model_sha256[:16]}"


def _build(catalog: Catalog, model_sha256: str, lo: int, hi: int) -> Segment:
    hashes: list[str] = []
    parts: list[np.ndarray] = []
    for chunk_hashes, chunk in catalog.embedding_chunks(model_sha256, lo, hi):
        hashes.extend(chunk_hashes)
        parts.append(unit(chunk))
    matrix = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    return Segment(lo, hi, np.array(hashes, dtype="S64"), matrix)


def _merged(segments: list[Segment]) -> Segment:
    mats = [np.asarray(s.matrix) for s in segments if len(s.hashes)]
    return Segment(
        segments[0].lo,
        segments[-1].hi,
        np.concatenate([s.hashes for s in segments]),
        np.concatenate(mats) if mats else np.zeros((0, 0), np.float32),
    )


_NAME = re.compile(r"-(\d+)-(\d+)\.npy$")


def _load_segments(cache_dir: Path, stem: str) -> list[Segment]:
    segments = []
    for path in cache_dir.glob(f"{stem}-*.npy"):
        m = _NAME.search(path.name)
        if m is None or path.name.endswith(".hashes.npy"):
            continue
        try:
            matrix = np.load(path, mmap_mode="r")
            hashes = np.load(path.with_name(path.name[: -len(".npy")] + ".hashes.npy"))
        except (OSError, ValueError):
            continue
        if matrix.ndim == 2 and matrix.dtype == np.float32 and len(hashes) == len(matrix):
            segments.append(Segment(int(m.group(1)), int(m.group(2)), hashes, matrix))
    return sorted(segments, key=lambda s: (s.lo, -s.hi))


def _save(cache_dir: Path, stem: str, segments: list[Segment]) -> None:
    """Write the segments not on disk yet (temporary names, then renames: a concurrent reader never sees half a
    file) and drop the files of segments no longer in the chain."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        keep = set()
        for seg in segments:
            name = f"{stem}-{seg.lo}-{seg.hi}"
            keep |= {f"{name}.npy", f"{name}.hashes.npy"}
            if (cache_dir / f"{name}.npy").is_file():
                continue
            for suffix, array in ((".hashes.npy", seg.hashes), (".npy", np.asarray(seg.matrix))):
                write_replacing(cache_dir / f"{name}{suffix}", partial(np.save, arr=array))
        for old in cache_dir.glob(f"{stem}-*.npy"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
    except OSError:
        pass  # a cache we cannot write costs time at the next correction, nothing else
