"""The catalog: one SQLite file (WAL) holding photos, model outputs, errors and the user's corrections.

Design points:

* **Results are keyed by content, not by path.** ``results`` is keyed by (content hash, model sha256), and
  ``photos`` maps each path to its content. A renamed or moved file, or a copy of a photo under another path,
  gets its own ``photos`` row and finds its result without inference; a reclassification with another model
  adds results beside the old ones.
* **Atomic batches.** Every batch of photos and their results is written in one transaction, so a SIGKILL at
  any moment loses at most the batch in flight and a rerun finishes the job with no duplicates.
* **Corrections belong to the content** (by hash), so they survive renames, reclassification and model changes,
  and always win over the model.
* **Migrations** are an ordered list of functions (:mod:`photosift.core.schema`); the ``migrations`` table
  records which ran. The values it stores and returns are :mod:`photosift.core.records`.
* **Whose file it is.** A catalog is marked (``PRAGMA application_id`` and ``user_version``); a file that is
  neither empty nor ours (another program's database, a photo passed as ``--db``) is refused before anything
  is written to it, so it stays byte-identical. Catalogs from before the mark are recognised by their tables.
* **Damage is noticed.** Every open runs ``PRAGMA quick_check`` (0.23 s per 100k photos, docs/RELIABILITY.md)
  and refuses a damaged file before writing to it; ``photosift doctor`` explains and recovers
  (:mod:`photosift.core.catalog_health`).
* **Any path.** File names are stored losslessly, including bytes that are not UTF-8 (see :func:`to_db_path`);
  prefix ranges over the ``path`` index still find a folder's files.

Corrections, their history and the personal head's decisions are :mod:`photosift.core.corrections`
(:class:`~photosift.core.corrections.CorrectionsStore`, mixed into :class:`Catalog`).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from photosift.core import checkrecord
from photosift.core.corrections import (
    CorrectionsStore,
    HistoryEvent,
    PersonalDecision,
    StoredChunk,
)
from photosift.core.errors import CatalogBusy, CatalogError, CatalogReadOnly
from photosift.core.photometa import PhotoMeta
from photosift.core.records import ModelInfo, PhotoRecord, PhotoState, ResultRecord, ResultRow
from photosift.core.schema import MIGRATIONS

TOPK_STORED = 100  # probabilities kept per photo so categories can be re-derived without the model
APPLICATION_ID = 0x50534654  # "PSFT" in the SQLite header: this file is a photosift catalog
BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's transaction before giving up
DOCTOR_HINT = "run `photosift doctor --db {path}` for details; `--recover NEW.db` copies what is readable"

_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED = re.compile("\x00([0-9a-f]{4})")


def to_db_path(path: str) -> str:
    """How ``path`` is stored: itself when it is valid Unicode (every UTF-8 file name), else each lone surrogate
    (a byte that is not UTF-8, as ``os`` functions give it with surrogateescape) as NUL and its four hex digits.

    A POSIX path never contains NUL, so the encoding is lossless and never collides with a real name; it maps
    character by character, so a folder's prefix range (:func:`_range_for`) still holds all its files.
    """
    if _SURROGATE.search(path) is None:
        return path
    return _SURROGATE.sub(lambda m: f"\x00{ord(m.group()):04x}", path)


def from_db_path(stored: str) -> str:
    """The inverse of :func:`to_db_path`: the ``str`` that ``open()`` needs."""
    if "\x00" not in stored:
        return stored
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), stored)


def connect_readonly(path: Path, busy_timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A read-only connection that writes nothing, not even WAL bookkeeping. On read-only media (a folder that
    cannot be written, where SQLite cannot make the ``-shm`` file a WAL catalog needs) the file is opened as
    immutable, which is what it is there."""
    immutable = "&immutable=1" if not os.access(path.parent, os.W_OK) else ""
    return sqlite3.connect(
        f"file:{path}?mode=ro{immutable}", uri=True, timeout=busy_timeout, check_same_thread=False
    )


def _writable(path: Path, exists: bool) -> bool:
    """Whether a catalog can be written at ``path``: the file and its folder (WAL keeps ``-wal`` and ``-shm``
    files beside it), or for a new one the nearest folder that exists."""
    if exists:
        return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK)


_NO_META = PhotoMeta()


def _range_for(root: str) -> tuple[str, str]:
    """Stored paths under directory ``root`` sort in [root + '/', root + '0') because '0' follows '/'."""
    root = to_db_path(root.rstrip("/"))
    return root + "/", root + "0"


def _casefold(value: str | None) -> str | None:
    return value.casefold() if isinstance(value, str) else value


class Catalog(CorrectionsStore):
    """A connection to one catalog file. Use one instance per thread."""

    def __init__(
        self,
        path: str | Path,
        readonly: bool = False,
        create: bool = True,
        *,
        verify: bool = True,
        busy_timeout: float = BUSY_TIMEOUT_S,
    ) -> None:
        """``create=False``: the file must exist already (a mistyped ``--db`` must not make an empty catalog).
        ``verify=False`` skips the quick_check (a second connection to a file another one just checked)."""
        self.path = Path(path)
        self.readonly = readonly
        self._checked_at: float | None = None  # when the file was last checked in full (verify=True)
        self._lock = threading.RLock()
        self._depth = 0  # nesting of atomic() blocks on this connection
        exists = self.path.is_file()
        if (readonly or not create) and not exists:
            raise CatalogError(f"{self.path}: catalog not found (run `photosift classify` first)")
        try:
            if readonly:
                self.db = connect_readonly(self.path, busy_timeout)
            else:
                if not _writable(self.path, exists):
                    raise CatalogReadOnly(
                        f"{self.path}: catalog is read-only (the file or its folder cannot be written); "
                        "nothing was written (`photosift results` can still read it)"
                    )
                if not exists:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(
                    str(self.path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
                )
        except sqlite3.Error as exc:
            raise CatalogError(f"{self.path}: cannot open catalog ({exc})") from None
        except OSError as exc:
            raise CatalogError(f"{self.path}: cannot open catalog ({exc.strerror or exc})") from None
        try:
            self._open_waiting(readonly, verify, busy_timeout)
        except BaseException:
            self.db.close()
            raise

    def _open_waiting(self, readonly: bool, verify: bool, busy_timeout: float) -> None:
        """:meth:`_open`, tried again while another process holds a lock. SQLite's busy handler covers most
        waits, but not all: when two connections would deadlock (one upgrading its read lock while the other
        writes, as two processes creating the same new catalog do) it reports "locked" at once."""
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                self._open(readonly, verify)
                return
            except CatalogBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _open(self, readonly: bool, verify: bool) -> None:
        # Nothing is written until the file is known to be ours and undamaged: a refused file stays
        # byte-identical (no WAL switch, no tables, no mark).
        try:
            legacy = self._check_ours()
            if verify:
                # The full check, unless the file is as its last writer recorded it (core/checkrecord.py).
                self._checked_at = checkrecord.checked_at(self.path)
                if self._checked_at is None:
                    self._check_damage()
                    self._checked_at = time.time()
                    if not readonly:
                        checkrecord.record(self.path, self._checked_at)
            version = self.schema_version()
            if version > len(MIGRATIONS):
                raise CatalogError(
                    f"{self.path}: catalog was written by a newer photosift (schema {version})"
                )
            if readonly:
                if version < len(MIGRATIONS):
                    raise CatalogError(
                        f"{self.path}: catalog needs an upgrade (open it once with photosift classify)"
                    )
            else:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self._migrate(mark=legacy or version < len(MIGRATIONS))
            self.db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise self.error(exc) from None
        self.db.row_factory = sqlite3.Row
        # SQLite's lower() folds ASCII only; searches fold like Python does ("Fotos für Oma").
        self.db.create_function("casefold", 1, _casefold, deterministic=True)

    def _check_ours(self) -> bool:
        """Refuse a file that is neither empty nor a photosift catalog; True for a catalog from before the mark."""
        try:
            app_id = int(self.db.execute("PRAGMA application_id").fetchone()[0])
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                raise CatalogError(
                    f"{self.path}: not a photosift catalog (not an SQLite database); nothing was changed"
                ) from None
            raise
        if app_id == APPLICATION_ID:
            return False
        if app_id == 0 and not tables:
            return False  # empty: a new catalog
        if app_id == 0 and {"migrations", "photos", "results"} <= tables:
            return True  # written before catalogs were marked
        what = f"application_id {app_id:#x}" if app_id else "tables " + ", ".join(sorted(tables)[:5])
        raise CatalogError(
            f"{self.path}: not a photosift catalog ({what}); nothing was changed (choose another --db)"
        )

    def _check_damage(self) -> None:
        rows = [str(r[0]) for r in self.db.execute("PRAGMA quick_check(5)")]
        if rows != ["ok"]:
            raise CatalogError(
                f"{self.path}: catalog is damaged ({' '.join(rows[0].split())[:160]}); nothing was written; "
                + DOCTOR_HINT.format(path=self.path)
            )

    def error(self, exc: sqlite3.Error) -> CatalogError:
        """A one-line CatalogError that says what went wrong with this file and what to do."""
        text = str(exc)
        if "locked" in text or "busy" in text:
            return CatalogBusy(
                f"{self.path}: catalog is busy: another process is writing to it; try again when it has finished"
            )
        if "readonly" in text or "read-only" in text:
            return CatalogReadOnly(f"{self.path}: catalog is read-only ({text}); nothing was written")
        elif "full" in text:
            reason = "disk full: the last batch was not stored (committed work is kept); free space and rerun"
        elif "malformed" in text or "not a database" in text or "corrupt" in text:
            reason = f"catalog is damaged ({text}); " + DOCTOR_HINT.format(path=self.path)
        else:
            reason = f"cannot use catalog ({text})"
        return CatalogError(f"{self.path}: {reason}")

    # -- schema -------------------------------------------------------------------------------------------
    def schema_version(self) -> int:
        row = self.db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='migrations'"
        ).fetchone()
        if row is None:
            return 0
        return int(self.db.execute("SELECT COALESCE(MAX(version), 0) FROM migrations").fetchone()[0])

    def _migrate(self, mark: bool) -> None:
        if not mark:
            current = self.schema_version()
            if current > len(MIGRATIONS):
                raise CatalogError(
                    f"{self.path}: catalog was written by a newer photosift (schema {current})"
                )
            return
        # One write transaction, version read inside it: two processes opening a new catalog at once both
        # succeed (the second finds the work done).
        with self.atomic():
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL)"
            )
            current = self.schema_version()
            if current > len(MIGRATIONS):
                raise CatalogError(
                    f"{self.path}: catalog was written by a newer photosift (schema {current})"
                )
            for version, step in enumerate(MIGRATIONS[current:], start=current + 1):
                step(self.db)
                self.db.execute(
                    "INSERT INTO migrations(version, name, applied_at) VALUES (?, ?, ?)",
                    (version, step.__name__.lstrip("_"), time.time()),
                )
            self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.db.execute(f"PRAGMA user_version = {max(current, len(MIGRATIONS))}")

    @contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One transaction: everything inside is stored, or nothing is. SQLite errors (a lock held too long, a
        full disk, a read-only file) become a one-line CatalogError; the connection stays usable. Nested, it
        joins the outer transaction (a correction stores itself, its history and the photos it moved together)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.db
                finally:
                    self._depth -= 1
                return
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.error(exc) from None
            self._depth = 1
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException as exc:
                # SQLite may have rolled back already (a full disk does): only roll back what is still open.
                if self.db.in_transaction:
                    with suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
                    raise self.error(exc) from None
                raise
            finally:
                self._depth = 0

    @classmethod
    def for_reading(cls, path: Path, busy_timeout: float = BUSY_TIMEOUT_S, verify: bool = True) -> Catalog:
        """An existing catalog to read: opened read-write where it can be, so an older one gets upgraded, and
        read-only where the file or its folder cannot be written (a current catalog reads the same)."""
        try:
            return cls(path, create=False, verify=verify, busy_timeout=busy_timeout)
        except CatalogReadOnly:
            return cls(path, readonly=True, create=False, verify=verify, busy_timeout=busy_timeout)

    def close(self) -> None:
        self.db.close()
        if self._checked_at is not None and not self.readonly:
            # What this connection wrote, SQLite wrote: the file is as checked.
            checkrecord.record(self.path, self._checked_at)
            self._checked_at = None

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- incremental scans ----------------------------------------------------------------------------------
    def snapshot(self, roots: Sequence[str]) -> dict[str, PhotoState]:
        """What the catalog knows about every path under ``roots`` (batched: one query per root)."""
        states: dict[str, PhotoState] = {}
        for root in roots:
            lo, hi = _range_for(root)
            cursor = self.db.cursor()
            cursor.row_factory = (
                None  # plain tuples: a sqlite3.Row per photo costs a third of a 1M-file rescan
            )
            rows = cursor.execute(
                "SELECT path, size, mtime_ns, content_hash, status, taken_source IS NOT NULL FROM photos "
                "WHERE path = ? OR (path >= ? AND path < ?)",
                (to_db_path(root), lo, hi),
            )
            for path, size, mtime_ns, content_hash, status, has_meta in rows:
                states[from_db_path(path)] = PhotoState(size, mtime_ns, content_hash, status, bool(has_meta))
        return states

    def hashes_with_results(self, model_sha256: str) -> set[str]:
        rows = self.db.execute("SELECT content_hash FROM results WHERE model_sha256 = ?", (model_sha256,))
        return {r[0] for r in rows}

    def register_model(
        self,
        sha256: str,
        name: str,
        labels: Sequence[str],
        path: str | None = None,
        task: str = "classify",
        card: str | None = None,
    ) -> None:
        with self.atomic():
            self.db.execute(
                "INSERT INTO models(sha256, name, path, labels, task, card) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(sha256) DO UPDATE SET name = excluded.name, path = excluded.path, "
                "task = excluded.task, card = COALESCE(excluded.card, card)",
                (sha256, name, path, json.dumps(list(labels)), task, card),
            )

    def models(self) -> list[ModelInfo]:
        """The models that have results here, newest results first (one index seek per model)."""
        rows = self.db.execute(
            "SELECT * FROM (SELECT m.sha256, m.name, m.path, m.task, m.labels, "
            "(SELECT MAX(r.created_at) FROM results r WHERE r.model_sha256 = m.sha256) AS newest FROM models m) "
            "WHERE newest IS NOT NULL ORDER BY newest DESC"
        )
        return [ModelInfo(s, n, p, t, tuple(json.loads(lab))) for s, n, p, t, lab, _ in rows]

    def find_model(self, name_or_sha: str) -> ModelInfo:
        """A model with results here, by name (the newest of that name) or by a sha256 prefix."""
        models = self.models()
        for m in models:
            if m.name == name_or_sha or (len(name_or_sha) >= 8 and m.sha256.startswith(name_or_sha)):
                return m
        known = ", ".join(dict.fromkeys(m.name for m in models)) or "none yet"
        raise CatalogError(f"{self.path}: no results from a model {name_or_sha!r} (models here: {known})")

    def model_path(self, sha256: str) -> str | None:
        row = self.db.execute("SELECT path FROM models WHERE sha256 = ?", (sha256,)).fetchone()
        return row[0] if row else None

    def latest_model(self) -> str | None:
        """The sha256 of the model that produced the newest result."""
        models = self.models()
        return models[0].sha256 if models else None

    def write_batch(
        self,
        photos: Iterable[PhotoRecord],
        results: Iterable[ResultRecord],
        model_sha256: str,
        labels: Sequence[str],
    ) -> None:
        """Store a batch of photos (ok or error) and their results in one transaction."""
        now = time.time()
        with self.atomic() as db:
            for rec in results:
                db.execute(
                    "INSERT OR REPLACE INTO results (content_hash, model_sha256, label_index, score, top5, "
                    "topk_index, topk_prob, category, category_score, fine_label, people, created_at, "
                    "decided_by, personal_category, personal_score, personal_source) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    _result_values(rec, model_sha256, labels, now),
                )
                if rec.embedding is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO embeddings (content_hash, model_sha256, vector) VALUES (?,?,?)",
                        (rec.content_hash, model_sha256, rec.embedding.astype(np.float16).tobytes()),
                    )
            for p in photos:
                m = p.meta or _NO_META
                db.execute(
                    "INSERT INTO photos (path, size, mtime_ns, content_hash, status, error, updated_at, width, "
                    "height, taken_at, taken_source, camera, has_gps, phash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, "
                    "content_hash=excluded.content_hash, status=excluded.status, error=excluded.error, "
                    "updated_at=excluded.updated_at, width=excluded.width, height=excluded.height, "
                    "taken_at=excluded.taken_at, taken_source=excluded.taken_source, camera=excluded.camera, "
                    "has_gps=excluded.has_gps, phash=excluded.phash",
                    (
                        to_db_path(p.path),
                        p.size,
                        p.mtime_ns,
                        p.content_hash,
                        "error" if p.error else "ok",
                        p.error,
                        now,
                        m.width,
                        m.height,
                        m.taken_at,
                        m.taken_source if p.meta else None,
                        m.camera,
                        int(m.has_gps) if p.meta else None,
                        m.phash,
                    ),
                )

    def mark_missing(self, paths: Iterable[str]) -> int:
        now = time.time()
        with self.atomic() as db:
            cur = db.executemany(
                "UPDATE photos SET status = 'missing', updated_at = ? WHERE path = ? AND status != 'missing'",
                ((now, to_db_path(p)) for p in paths),
            )
            return cur.rowcount

    # -- queries --------------------------------------------------------------------------------------------
    _RESULT_SELECT = """
        SELECT p.id, p.path, p.status, p.error, r.label_index, r.score, r.top5,
               COALESCE(r.personal_category, r.category) AS category,
               CASE WHEN r.personal_category IS NULL THEN r.category_score ELSE r.personal_score END
                   AS category_score,
               r.category AS rules_category, r.personal_source,
               m.name AS model, c.category AS corrected, p.size, p.width, p.height, p.taken_at, p.taken_source,
               p.camera, p.has_gps, p.hidden, p.content_hash
        FROM photos p
        LEFT JOIN results r ON r.content_hash = p.content_hash AND r.created_at = (
            SELECT MAX(r2.created_at) FROM results r2 WHERE r2.content_hash = p.content_hash
                AND (:model IS NULL OR r2.model_sha256 = :model))
        LEFT JOIN models m ON m.sha256 = r.model_sha256
        LEFT JOIN corrections c ON c.content_hash = p.content_hash
    """

    def _where(
        self,
        category: str | None,
        status: str | None,
        label: str | None,
        text: str | None,
        uncategorized: bool,
        since: str | None = None,
        until: str | None = None,
        include_hidden: bool = True,
        model: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """The WHERE clause shared by :meth:`results` and :meth:`count_results`.

        Every filter runs in SQL, before LIMIT/OFFSET: a filter applied afterwards returns short pages, and one
        applied in Python reads the whole catalog per request. Without a model, the category filters read the
        photo's kept category (``photos_by_category``: a range of the index, in path order); for one model's
        results they must look at that model's result row.
        """
        if model is None:
            effective = "p.category"
            where = ["p.status != 'missing'"]
        else:
            effective = "COALESCE(c.category, r.personal_category, r.category)"
            where = ["p.status != 'missing'", "(p.status = 'error' OR r.content_hash IS NOT NULL)"]
        params: dict[str, Any] = {}
        if category is not None:
            where.append(f"{effective} = :category")
            params["category"] = category
        if uncategorized:
            where.append(f"{effective} IS NULL")
        if status is not None:
            # A text or label search cannot use an index; "+" keeps SQLite walking the path index so a page
            # stops at LIMIT instead of sorting every photo of that status first.
            scan = (label is not None or text is not None) and category is None and not uncategorized
            where.append("+p.status = :status" if scan else "p.status = :status")
            params["status"] = status
        top1 = "casefold(json_extract(r.top5, '$[0].label'))"
        if label is not None:
            where.append(f"instr({top1}, :label) > 0")
            params["label"] = label.casefold()
        if text is not None:  # the top-1 label or the category contains it
            where.append(f"(instr({top1}, :text) > 0 OR instr(casefold({effective}), :text) > 0)")
            params["text"] = text.casefold()
        if since is not None:  # ISO dates compare as text: "2023" <= "2023-06-01T10:00:00"
            where.append("p.taken_at >= :since")
            params["since"] = since
        if until is not None:  # inclusive: every time on that day (or in that month/year) is before "~"
            where.append("p.taken_at < :until")
            params["until"] = until + "~"
        if not include_hidden:
            where.append("p.hidden = 0")
        return " AND ".join(where), params

    def results(
        self,
        category: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        model_sha256: str | None = None,
        label: str | None = None,
        text: str | None = None,
        uncategorized: bool = False,
        since: str | None = None,
        until: str | None = None,
        include_hidden: bool = True,
        order: str = "path",
    ) -> list[ResultRow]:
        """Result rows by path (``order="date"``: by date taken, then path); ``label``: the top-1 label contains
        it; ``text``: the label or the category does; ``uncategorized``: photos with no category (nor
        correction); ``since``/``until``: taken on or after / on or before an ISO date or its prefix ("2023",
        "2023-06"); ``include_hidden=False`` leaves out photos the user hid."""
        where, params = self._where(
            category, status, label, text, uncategorized, since, until, include_hidden, model_sha256
        )
        params |= {"model": model_sha256, "limit": -1 if limit is None else limit, "offset": offset}
        by = "p.taken_at IS NULL, p.taken_at, p.path" if order == "date" else "p.path"
        if model_sha256 is None and label is None and text is None:
            # The page is picked from the photo rows alone (an index range, in path order); only its rows are
            # joined with their results, so page 100 costs what page 1 does, give or take the index walk.
            page = f"SELECT p.id FROM photos p WHERE {where} ORDER BY {by} LIMIT :limit OFFSET :offset"
            sql = self._RESULT_SELECT + f" WHERE p.id IN ({page}) ORDER BY {by}"
        else:
            sql = self._RESULT_SELECT + " WHERE " + where + f" ORDER BY {by} LIMIT :limit OFFSET :offset"
        return [self._row(r) for r in self.db.execute(sql, params)]

    def count_results(
        self,
        category: str | None = None,
        status: str | None = None,
        label: str | None = None,
        text: str | None = None,
        uncategorized: bool = False,
        since: str | None = None,
        until: str | None = None,
        include_hidden: bool = True,
    ) -> int:
        """How many rows :meth:`results` would return without a limit."""
        where, params = self._where(
            category, status, label, text, uncategorized, since, until, include_hidden
        )
        params["model"] = None
        if label is None and text is None:  # the photo's own columns: an index range, no join
            sql = "SELECT COUNT(*) FROM photos p WHERE " + where
        else:
            sql = "SELECT COUNT(*) FROM (" + self._RESULT_SELECT + " WHERE " + where + ")"
        return int(self.db.execute(sql, params).fetchone()[0])

    def photo(self, photo_id: int) -> ResultRow | None:
        row = self.db.execute(
            self._RESULT_SELECT + " WHERE p.id = :id", {"model": None, "id": photo_id}
        ).fetchone()
        return self._row(row) if row else None

    def photo_state(self, photo_id: int) -> tuple[str, PhotoState] | None:
        """(path, what the scan stored about the file) for a photo id: what the gallery checks before serving."""
        row = self.db.execute(
            "SELECT path, size, mtime_ns, content_hash, status FROM photos WHERE id = ?", (photo_id,)
        ).fetchone()
        if row is None:
            return None
        return from_db_path(row[0]), PhotoState(row[1], row[2], row[3], row[4])

    def photos_by_id(self, ids: Sequence[int]) -> dict[int, ResultRow]:
        """Result rows of these photo ids (each photo's newest result); unknown ids are left out."""
        out: dict[int, ResultRow] = {}
        for start in range(0, len(ids), 500):
            chunk = [int(i) for i in ids[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            sql = self._RESULT_SELECT.replace(":model", "NULL") + f" WHERE p.id IN ({marks})"
            for r in self.db.execute(sql, chunk):
                out[int(r["id"])] = self._row(r)
        return out

    def set_hidden(self, photo_ids: Iterable[int], hidden: bool) -> int:
        """Hide photos from the gallery and from finding (the files are untouched); returns rows changed."""
        now = time.time()
        with self.atomic() as db:
            cur = db.executemany(
                "UPDATE photos SET hidden = ?, updated_at = ? WHERE id = ? AND hidden != ?",
                ((int(hidden), now, int(i), int(hidden)) for i in photo_ids),
            )
            return cur.rowcount

    def months(self, include_hidden: bool = False) -> list[tuple[str, int, int]]:
        """(YYYY-MM, photos, of which dated only by file mtime) for every month with photos, newest first."""
        hidden = "" if include_hidden else " AND hidden = 0"
        rows = self.db.execute(
            "SELECT substr(taken_at, 1, 7) AS month, COUNT(*), SUM(taken_source = 'mtime') FROM photos "
            f"WHERE status = 'ok' AND taken_at IS NOT NULL{hidden} GROUP BY month ORDER BY month DESC"
        )
        return [(str(m), int(n), int(g or 0)) for m, n, g in rows]

    def photo_id(self, path: str) -> int | None:
        row = self.db.execute("SELECT id FROM photos WHERE path = ?", (to_db_path(path),)).fetchone()
        return int(row[0]) if row else None

    def _row(self, r: sqlite3.Row) -> ResultRow:
        top5 = json.loads(r["top5"]) if r["top5"] else []
        return ResultRow(
            id=r["id"],
            path=from_db_path(r["path"]),
            status=r["status"],
            error=r["error"],
            label=top5[0]["label"] if top5 else None,
            score=r["score"],
            category=r["category"],
            category_score=r["category_score"],
            top5=top5,
            model=r["model"],
            corrected_category=r["corrected"],
            size=r["size"],
            width=r["width"],
            height=r["height"],
            taken_at=r["taken_at"],
            taken_source=r["taken_source"],
            camera=r["camera"],
            has_gps=None if r["has_gps"] is None else bool(r["has_gps"]),
            hidden=bool(r["hidden"]),
            content_hash=r["content_hash"],
            rules_category=r["rules_category"],
            personal_source=r["personal_source"],
        )

    def counts(self, include_hidden: bool = True) -> dict[str, int]:
        """Photos per effective category, most first (``"None"``: photos with no category); kept by triggers."""
        n = "photos" if include_hidden else "photos - hidden"
        rows = self.db.execute(
            f"SELECT category, {n} AS n FROM category_counts WHERE {n} > 0 ORDER BY n DESC, category"
        )
        return {cat or "None": int(n) for cat, n in rows}

    def status_counts(self) -> dict[str, int]:
        """Photos per status: "ok" from the kept category counts, the others from their index range."""
        counts = {
            status: int(
                self.db.execute("SELECT COUNT(*) FROM photos WHERE status = ?", (status,)).fetchone()[0]
            )
            for status in ("error", "missing")
        }
        ok = self.db.execute("SELECT COALESCE(SUM(photos), 0) FROM category_counts").fetchone()[0]
        return {s: n for s, n in {"ok": int(ok), **counts}.items() if n}

    def content_hash_of(self, path: str) -> str | None:
        row = self.db.execute(
            "SELECT content_hash FROM photos WHERE path = ?", (to_db_path(path),)
        ).fetchone()
        return row[0] if row else None

    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])


def _result_values(
    rec: ResultRecord, model_sha256: str, labels: Sequence[str], now: float
) -> tuple[Any, ...]:
    classified: tuple[Any, ...] = (None, None, None, None, None)
    probs = rec.probs
    if probs is not None:
        k = min(TOPK_STORED, probs.shape[0])
        top = np.argpartition(-probs, k - 1)[:k]
        top = top[np.argsort(-probs[top], kind="stable")]
        top5 = [{"index": int(i), "label": labels[i], "score": round(float(probs[i]), 6)} for i in top[:5]]
        classified = (
            int(top[0]),
            float(probs[top[0]]),
            json.dumps(top5),
            top.astype(np.uint16).tobytes(),
            probs[top].astype(np.float16).tobytes(),
        )
    return (
        rec.content_hash,
        model_sha256,
        *classified,
        rec.category,
        rec.category_score,
        rec.fine_label,
        json.dumps(rec.people) if rec.people is not None else None,
        now,
        rec.decided_by,
        *(
            (rec.personal.category, rec.personal.similarity, rec.personal.source)
            if rec.personal is not None
            else (None, None, None)
        ),
    )


__all__ = [
    "Catalog",
    "HistoryEvent",
    "ModelInfo",
    "PersonalDecision",
    "PhotoRecord",
    "PhotoState",
    "ResultRecord",
    "ResultRow",
    "StoredChunk",
]
