"""The catalog's corrections, their history, the personal head's decisions, and the stored outputs that
re-derivation reads. :class:`CorrectionsStore` is mixed into :class:`~photosift.core.catalog.Catalog`.

Three sources decide what a photo shows, each stored where its own trigger can update it alone:

* ``corrections``: what the user said (per content hash; always wins, applied at query time);
* ``results.personal_*``: the personal head's decision (photosift.album.personal) — the category of the nearest
  corrected photo within its similarity gate, or NULL where it abstains. A correction changes it only for the
  photos near that correction, so a correction updates O(neighbours) rows;
* ``results.category``: the rules' decision, with ``decided_by`` the fingerprint of the rules and heads that
  made it; a row whose fingerprint is not the current one is stale and re-derived in chunks.

``correction_history`` records every correction, clear and undo, with the other photos it moved, so a user can
be told what changed and take it back.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK_PARAMS = 900  # SQLite's default limit on bound parameters is 999 on old builds


@dataclass(frozen=True, slots=True)
class PersonalDecision:
    """The personal head moved a photo: to ``category``, because it is ``similarity``-close to the corrected
    photo ``source`` (a content hash)."""

    category: str
    similarity: float
    source: str


@dataclass(slots=True)
class StoredChunk:
    """A chunk of one model's stored classification outputs: enough to re-derive categories without it."""

    rowids: list[
        int
    ]  # of the results rows: updates go to exactly these (a row replaced meanwhile is left alone)
    hashes: list[str]
    embeddings: np.ndarray | None  # (n, D) float16 (zeros where a row has none), None when no row has one
    has_embedding: np.ndarray  # (n,) bool
    topk_index: list[np.ndarray | None]  # uint16, best first
    topk_prob: list[np.ndarray | None]  # float16
    people: list[dict[str, Any] | None]
    shown: list[str | None]  # the category each row shows now (the personal head's, else the rules')


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One correction, clear or undo: the photo's correction ``before`` and ``after`` (None: none), the event it
    undoes, the event that undid it, and the other photos it moved ([content_hash, from, to] each)."""

    id: int
    content_hash: str
    before: str | None
    after: str | None
    undoes: int | None
    undone_by: int | None
    moved: list[list[str | None]]
    created_at: float


def _chunks(items: Sequence[str], size: int = _CHUNK_PARAMS) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _matrix(blobs: Sequence[bytes]) -> np.ndarray:
    """(n, D) float16 from n embedding blobs of equal length, in one copy."""
    return np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), -1)


class CorrectionsStore:
    """Corrections, history, personal decisions and stored outputs. Needs ``db``, ``path`` and ``atomic``."""

    db: sqlite3.Connection
    path: Path

    def atomic(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # Catalog provides it

    # -- corrections --------------------------------------------------------------------------------------------
    def correction_of(self, content_hash: str) -> str | None:
        row = self.db.execute(
            "SELECT category FROM corrections WHERE content_hash = ?", (content_hash,)
        ).fetchone()
        return row[0] if row else None

    def corrections(self) -> dict[str, str]:
        return {h: c for h, c in self.db.execute("SELECT content_hash, category FROM corrections")}

    def set_correction(self, content_hash: str, category: str | None) -> None:
        """Store (``None``: remove) the user's category for this content."""
        with self.atomic() as db:
            if category is None:
                db.execute("DELETE FROM corrections WHERE content_hash = ?", (content_hash,))
                return
            db.execute(
                "INSERT INTO corrections(content_hash, category, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(content_hash) DO UPDATE SET category = excluded.category, "
                "created_at = excluded.created_at",
                (content_hash, category, time.time()),
            )

    def user_categories(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM user_categories ORDER BY name")]

    def add_user_category(self, name: str) -> None:
        with self.atomic() as db:
            db.execute(
                "INSERT OR IGNORE INTO user_categories(name, created_at) VALUES (?, ?)", (name, time.time())
            )

    # -- history ------------------------------------------------------------------------------------------------
    def add_history(
        self,
        content_hash: str,
        before: str | None,
        after: str | None,
        moved: Sequence[Sequence[str | None]] = (),
        undoes: int | None = None,
    ) -> int:
        with self.atomic() as db:
            cur = db.execute(
                "INSERT INTO correction_history(content_hash, before, after, undoes, moved, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (content_hash, before, after, undoes, json.dumps([list(m) for m in moved]), time.time()),
            )
            event = int(cur.lastrowid or 0)
            if undoes is not None:
                db.execute("UPDATE correction_history SET undone_by = ? WHERE id = ?", (event, undoes))
            return event

    def set_history_moved(self, event: int, moved: Sequence[Sequence[str | None]]) -> None:
        with self.atomic() as db:
            db.execute(
                "UPDATE correction_history SET moved = ? WHERE id = ?",
                (json.dumps([list(m) for m in moved]), event),
            )

    _HISTORY = (
        "SELECT id, content_hash, before, after, undoes, undone_by, moved, created_at FROM correction_history"
    )

    def history_event(self, event: int) -> HistoryEvent | None:
        row = self.db.execute(self._HISTORY + " WHERE id = ?", (event,)).fetchone()
        return _event(row) if row else None

    def undo_target(self, content_hash: str) -> HistoryEvent | None:
        """The photo's latest correction that can be undone: not an undo itself, not undone already."""
        row = self.db.execute(
            self._HISTORY + " WHERE content_hash = ? AND undoes IS NULL AND undone_by IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (content_hash,),
        ).fetchone()
        return _event(row) if row else None

    def corrections_version(self) -> int:
        """Grows with every correction, clear and undo: what the personal head has seen."""
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM correction_history").fetchone()[0])

    def changed_since(self, version: int) -> list[str]:
        """Content hashes whose correction changed after ``version``."""
        rows = self.db.execute(
            "SELECT DISTINCT content_hash FROM correction_history WHERE id > ?", (version,)
        )
        return [r[0] for r in rows]

    # -- embeddings ---------------------------------------------------------------------------------------------
    def embedding_state(self, model_sha256: str) -> tuple[int, int]:
        """(count, highest rowid) of the model's embeddings: changes whenever one is added or replaced (an
        ``INSERT OR REPLACE`` gets a new rowid), so caches of them compare it."""
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(MAX(rowid), 0) FROM embeddings WHERE model_sha256 = ?", (model_sha256,)
        ).fetchone()
        return int(row[0]), int(row[1])

    def embedding_count(self, model_sha256: str, lo: int, hi: int) -> int:
        """How many of the model's embeddings have a rowid in (lo, hi] (counted on the model's index)."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM embeddings WHERE model_sha256 = ? AND rowid > ? AND rowid <= ?",
            (model_sha256, lo, hi),
        ).fetchone()
        return int(row[0])

    def embedding_chunks(
        self, model_sha256: str, lo: int = 0, hi: int | None = None, batch: int = 4096
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """The model's embeddings with a rowid in (lo, hi] as (content hashes, (n, D) float16), in rowid order."""
        cur = self.db.execute(
            "SELECT content_hash, vector FROM embeddings WHERE model_sha256 = ? AND rowid > ? AND rowid <= ? "
            "ORDER BY rowid",
            (model_sha256, lo, hi if hi is not None else 2**63 - 1),
        )
        while rows := cur.fetchmany(batch):
            yield [h for h, _ in rows], _matrix([v for _, v in rows])

    def embeddings_of(self, model_sha256: str, hashes: Sequence[str]) -> tuple[list[str], np.ndarray | None]:
        """The model's embeddings of ``hashes`` that exist: (their hashes, (n, D) float16 or None)."""
        found: list[str] = []
        blobs: list[bytes] = []
        for part in _chunks(list(hashes)):
            rows = self.db.execute(
                f"SELECT content_hash, vector FROM embeddings WHERE model_sha256 = ? "
                f"AND content_hash IN ({','.join('?' * len(part))})",
                (model_sha256, *part),
            )
            for h, v in rows:
                found.append(h)
                blobs.append(v)
        return found, (_matrix(blobs) if blobs else None)

    def corrected_embeddings(self, model_sha256: str) -> tuple[list[str], list[str], np.ndarray | None]:
        """(content hashes, their corrected categories, (n, D) float16) of corrected photos the model embedded."""
        rows = self.db.execute(
            # CROSS JOIN keeps corrections the outer loop (SQLite would rather scan the model's embeddings).
            "SELECT c.content_hash, c.category, e.vector FROM corrections c CROSS JOIN embeddings e "
            "ON e.content_hash = c.content_hash AND e.model_sha256 = ? ORDER BY c.content_hash",
            (model_sha256,),
        ).fetchall()
        if not rows:
            return [], [], None
        return [r[0] for r in rows], [r[1] for r in rows], _matrix([r[2] for r in rows])

    # -- the personal head's decisions --------------------------------------------------------------------------
    def personal_of(
        self, model_sha256: str, hashes: Sequence[str]
    ) -> dict[str, tuple[PersonalDecision | None, str | None]]:
        """For each hash with a result from the model: (the personal head's stored decision, the rules')."""
        out: dict[str, tuple[PersonalDecision | None, str | None]] = {}
        for part in _chunks(list(hashes)):
            rows = self.db.execute(
                "SELECT content_hash, personal_category, personal_score, personal_source, category FROM results "
                f"WHERE model_sha256 = ? AND content_hash IN ({','.join('?' * len(part))})",
                (model_sha256, *part),
            )
            for h, pc, ps, src, cat in rows:
                decision = PersonalDecision(pc, float(ps), src) if pc is not None else None
                out[h] = (decision, cat)
        return out

    def moved_by(self, model_sha256: str, source: str) -> list[str]:
        """Photos whose personal decision follows the corrected photo ``source``."""
        rows = self.db.execute(
            "SELECT content_hash FROM results WHERE personal_source = ? AND model_sha256 = ?",
            (source, model_sha256),
        )
        return [r[0] for r in rows]

    def set_personal(self, model_sha256: str, rows: Iterable[tuple[str, PersonalDecision | None]]) -> None:
        with self.atomic() as db:
            db.executemany(
                "UPDATE results SET personal_category = ?, personal_score = ?, personal_source = ? "
                "WHERE content_hash = ? AND model_sha256 = ?",
                (
                    (d.category, d.similarity, d.source, h, model_sha256)
                    if d is not None
                    else (None, None, None, h, model_sha256)
                    for h, d in rows
                ),
            )

    # -- re-derivation ------------------------------------------------------------------------------------------
    def stale_count(self, model_sha256: str, fingerprint: str | None) -> int:
        """Results of the classifier ``model_sha256`` not decided by ``fingerprint`` (rules or heads changed
        since); ``None``: all of them."""
        # No index on decided_by: re-deriving 100,000 results would pay ~1 s to maintain it, and this count
        # (0.2 s at 100,000) is asked when a gallery starts or recategorize runs, not per correction.
        count = "SELECT COUNT(*) FROM results WHERE model_sha256 = ?"
        if fingerprint is None:
            return int(self.db.execute(count, (model_sha256,)).fetchone()[0])
        stale = count + " AND (decided_by IS NULL OR decided_by != ?)"
        return int(self.db.execute(stale, (model_sha256, fingerprint)).fetchone()[0])

    def stored_chunks(
        self, model_sha256: str, stale_for: str | None = None, batch: int = 4096
    ) -> Iterator[StoredChunk]:
        """The model's classified results in rowid order, in chunks; ``stale_for``: only those not decided by
        that fingerprint. The caller may update the rows of a chunk before asking for the next one."""
        where = "r.model_sha256 = ? AND r.topk_index IS NOT NULL"
        params: list[Any] = [model_sha256]
        if stale_for is not None:
            where += " AND (r.decided_by IS NULL OR r.decided_by != ?)"
            params.append(stale_for)
        rowids = [
            r[0]
            for r in self.db.execute(f"SELECT r.rowid FROM results r WHERE {where} ORDER BY r.rowid", params)
        ]
        # "+r.model_sha256": each chunk reads a rowid range of the table; on the model's index SQLite would walk
        # all of the model's results for every chunk (3x slower at 100,000).
        sql = (
            "SELECT r.rowid, r.content_hash, r.topk_index, r.topk_prob, e.vector, r.people, "
            "COALESCE(r.personal_category, r.category) FROM results r LEFT JOIN embeddings e "
            "ON e.content_hash = r.content_hash AND e.model_sha256 = r.model_sha256 "
            f"WHERE +{where} AND r.rowid BETWEEN ? AND ? ORDER BY r.rowid"
        )
        for start in range(0, len(rowids), batch):
            part = rowids[start : start + batch]
            rows = self.db.execute(sql, (*params, part[0], part[-1])).fetchall()
            if rows:
                yield _stored_chunk(rows)

    def update_categories(
        self, rows: Iterable[tuple[int, str, float, str | None, PersonalDecision | None]], decided_by: str
    ) -> None:
        """(results rowid, category, score, fine_label, personal decision), decided by ``decided_by``."""
        with self.atomic() as db:
            db.executemany(
                "UPDATE results SET category = ?, category_score = ?, fine_label = ?, personal_category = ?, "
                "personal_score = ?, personal_source = ?, decided_by = ? WHERE rowid = ?",
                (
                    (
                        c,
                        s,
                        f,
                        *((p.category, p.similarity, p.source) if p is not None else (None, None, None)),
                        decided_by,
                        rowid,
                    )
                    for rowid, c, s, f, p in rows
                ),
            )

    # -- photos ---------------------------------------------------------------------------------------------------
    def photos_of(self, hashes: Sequence[str]) -> dict[str, tuple[int, str]]:
        """(photo id, path) of one present photo per content hash (the first by path)."""
        from photosift.core.catalog import from_db_path  # the catalog module imports this one

        out: dict[str, tuple[int, str]] = {}
        for part in _chunks(list(hashes)):
            rows = self.db.execute(
                "SELECT content_hash, id, path FROM photos WHERE status != 'missing' "
                f"AND content_hash IN ({','.join('?' * len(part))}) ORDER BY path",
                tuple(part),
            )
            for h, pid, path in rows:
                out.setdefault(h, (int(pid), from_db_path(str(path))))
        return out


def _event(row: Sequence[Any]) -> HistoryEvent:
    return HistoryEvent(
        int(row[0]), row[1], row[2], row[3], row[4], row[5], json.loads(row[6] or "[]"), float(row[7])
    )


def _stored_chunk(rows: Sequence[Sequence[Any]]) -> StoredChunk:
    has = np.array([r[4] is not None for r in rows], dtype=bool)
    embeddings = None
    if has.any():
        dim = len(next(r[4] for r in rows if r[4] is not None)) // 2
        zero = bytes(2 * dim)
        embeddings = _matrix([r[4] if r[4] is not None else zero for r in rows])
    return StoredChunk(
        rowids=[r[0] for r in rows],
        hashes=[r[1] for r in rows],
        embeddings=embeddings,
        has_embedding=has,
        topk_index=[np.frombuffer(r[2], dtype=np.uint16) if r[2] is not None else None for r in rows],
        topk_prob=[np.frombuffer(r[3], dtype=np.float16) if r[3] is not None else None for r in rows],
        people=[json.loads(r[5]) if r[5] else None for r in rows],
        shown=[r[6] for r in rows],
    )
