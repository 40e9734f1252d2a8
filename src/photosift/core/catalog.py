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
* **Migrations** are an ordered list of functions; the ``migrations`` table records which ran.

Corrections, their history and the personal head's decisions are :mod:`photosift.core.corrections`
(:class:`~photosift.core.corrections.CorrectionsStore`, mixed into :class:`Catalog`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from photosift.core.corrections import (
    CorrectionsStore,
    HistoryEvent,
    PersonalDecision,
    StoredChunk,
)
from photosift.core.errors import CatalogError
from photosift.core.photometa import PhotoMeta

TOPK_STORED = 100  # probabilities kept per photo so categories can be re-derived without the model


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, which would break the migration's transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _m1_initial(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE photos (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            content_hash TEXT,
            status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'missing')),
            error TEXT,
            updated_at REAL NOT NULL
        );
        CREATE INDEX photos_by_hash ON photos(content_hash);
        CREATE TABLE models (
            sha256 TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            path TEXT,
            labels TEXT NOT NULL
        );
        CREATE TABLE results (
            content_hash TEXT NOT NULL,
            model_sha256 TEXT NOT NULL REFERENCES models(sha256),
            label_index INTEGER NOT NULL,
            score REAL NOT NULL,
            top5 TEXT NOT NULL,
            topk_index BLOB NOT NULL,
            topk_prob BLOB NOT NULL,
            embedding BLOB,
            category TEXT,
            category_score REAL,
            fine_label TEXT,
            people TEXT,
            created_at REAL NOT NULL,
            PRIMARY KEY (content_hash, model_sha256)
        );
        CREATE TABLE corrections (
            content_hash TEXT PRIMARY KEY,
            category TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE user_categories (
            name TEXT PRIMARY KEY,
            created_at REAL NOT NULL
        );
        """,
    )


def _m2_model_tasks(db: sqlite3.Connection) -> None:
    """Outputs of any task: classification columns may be NULL (an embed model has none), embeddings move to
    their own table, and each model records its task and card."""
    _run_script(
        db,
        """
        CREATE TABLE results_v2 (
            content_hash TEXT NOT NULL,
            model_sha256 TEXT NOT NULL REFERENCES models(sha256),
            label_index INTEGER,
            score REAL,
            top5 TEXT,
            topk_index BLOB,
            topk_prob BLOB,
            category TEXT,
            category_score REAL,
            fine_label TEXT,
            people TEXT,
            created_at REAL NOT NULL,
            PRIMARY KEY (content_hash, model_sha256)
        );
        INSERT INTO results_v2
            SELECT content_hash, model_sha256, label_index, score, top5, topk_index, topk_prob, category,
                   category_score, fine_label, people, created_at
            FROM results;
        CREATE TABLE embeddings (
            content_hash TEXT NOT NULL,
            model_sha256 TEXT NOT NULL REFERENCES models(sha256),
            vector BLOB NOT NULL,
            PRIMARY KEY (content_hash, model_sha256)
        );
        INSERT INTO embeddings SELECT content_hash, model_sha256, embedding FROM results
            WHERE embedding IS NOT NULL;
        DROP TABLE results;
        ALTER TABLE results_v2 RENAME TO results;
        CREATE INDEX results_by_model ON results(model_sha256, created_at);
        ALTER TABLE models ADD COLUMN task TEXT NOT NULL DEFAULT 'classify';
        ALTER TABLE models ADD COLUMN card TEXT
        """,
    )


def _m3_photo_meta(db: sqlite3.Connection) -> None:
    """What finding photos needs per file: displayed size, when it was taken (EXIF, or the file's mtime as a
    marked guess), camera, GPS present, a perceptual hash, and whether the user hid it. NULL until a scan reads
    the header: the next run fills them in without inference."""
    _run_script(
        db,
        """
        ALTER TABLE photos ADD COLUMN width INTEGER;
        ALTER TABLE photos ADD COLUMN height INTEGER;
        ALTER TABLE photos ADD COLUMN taken_at TEXT;
        ALTER TABLE photos ADD COLUMN taken_source TEXT;
        ALTER TABLE photos ADD COLUMN camera TEXT;
        ALTER TABLE photos ADD COLUMN has_gps INTEGER;
        ALTER TABLE photos ADD COLUMN phash INTEGER;
        ALTER TABLE photos ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX photos_by_taken ON photos(taken_at)
        """,
    )


def _m4_correction_history(db: sqlite3.Connection) -> None:
    """What decided each category and what each correction changed.

    ``decided_by``: the fingerprint of the rules and heads that set a result's category (a stale one is
    re-derived); ``personal_*``: the personal head's decision (the category of the nearest corrected photo within
    its similarity gate, that similarity, and that photo's content hash), NULL where it abstains;
    ``correction_history``: every correction, clear and undo with the photos it moved (for "what changed" and
    undo)."""
    _run_script(
        db,
        """
        ALTER TABLE results ADD COLUMN decided_by TEXT;
        ALTER TABLE results ADD COLUMN personal_category TEXT;
        ALTER TABLE results ADD COLUMN personal_score REAL;
        ALTER TABLE results ADD COLUMN personal_source TEXT;
        CREATE INDEX results_by_personal_source ON results(personal_source) WHERE personal_source IS NOT NULL;
        CREATE INDEX embeddings_by_model ON embeddings(model_sha256);
        CREATE TABLE correction_history (
            id INTEGER PRIMARY KEY,
            content_hash TEXT NOT NULL,
            before TEXT,
            after TEXT,
            undoes INTEGER REFERENCES correction_history(id),
            undone_by INTEGER REFERENCES correction_history(id),
            moved TEXT NOT NULL DEFAULT '[]',
            created_at REAL NOT NULL
        );
        CREATE INDEX correction_history_by_hash ON correction_history(content_hash, id)
        """,
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _m1_initial,
    _m2_model_tasks,
    _m3_photo_meta,
    _m4_correction_history,
]


@dataclass(frozen=True, slots=True)
class PhotoState:
    size: int
    mtime_ns: int
    content_hash: str | None
    status: str
    has_meta: bool = True  # date, size and hash read (False: the next run reads the header, no inference)


@dataclass(slots=True)
class PhotoRecord:
    """One file's outcome in a batch."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    error: str | None = None
    meta: PhotoMeta | None = None


@dataclass(slots=True)
class ResultRecord:
    """A model's output for one photo: ``probs`` for a classifier, ``embedding`` when the model gives one."""

    content_hash: str
    probs: np.ndarray | None  # (C,) softmax (classify)
    embedding: np.ndarray | None
    category: str | None
    category_score: float | None
    fine_label: str | None = None
    people: dict[str, Any] | None = None  # PeopleSignal.to_dict(): recategorize needs it
    decided_by: str | None = None  # fingerprint of the rules and heads that decided ``category``
    personal: PersonalDecision | None = None  # the personal head's decision, when it did not abstain


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model that has results in this catalog."""

    sha256: str
    name: str
    path: str | None
    task: str
    labels: tuple[str, ...]
    results: int


@dataclass
class ResultRow:
    """One photo as ``photosift results`` shows it."""

    id: int
    path: str
    status: str
    error: str | None
    label: str | None
    score: float | None
    category: str | None
    category_score: float | None
    top5: list[dict[str, Any]]
    model: str | None
    corrected_category: str | None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    taken_at: str | None = None  # ISO local time: EXIF DateTimeOriginal, or the file's mtime (taken_source)
    taken_source: str | None = None  # "exif" | "mtime"
    camera: str | None = None
    has_gps: bool | None = None
    hidden: bool = False
    content_hash: str | None = None
    rules_category: str | None = None  # what the rules said (``category`` is the head's when it spoke)
    personal_source: str | None = None  # content hash of the corrected photo the personal head followed

    @property
    def effective_category(self) -> str | None:
        return self.corrected_category or self.category

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "error": self.error,
            "label": self.label,
            "score": self.score,
            "category": self.category,
            "category_score": self.category_score,
            "top5": self.top5,
            "model": self.model,
            "corrected_category": self.corrected_category,
            "taken_at": self.taken_at,
            "taken_source": self.taken_source,
            "camera": self.camera,
            "has_gps": self.has_gps,
        }


_NO_META = PhotoMeta()


def _range_for(root: str) -> tuple[str, str]:
    """Paths under directory ``root`` sort in [root + '/', root + '0') because '0' follows '/'."""
    root = root.rstrip("/")
    return root + "/", root + "0"


def _casefold(value: str | None) -> str | None:
    return value.casefold() if isinstance(value, str) else value


class Catalog(CorrectionsStore):
    """A connection to one catalog file. Use one instance per thread."""

    def __init__(self, path: str | Path, readonly: bool = False, create: bool = True) -> None:
        """``create=False``: the file must exist already (a mistyped ``--db`` must not make an empty catalog)."""
        self.path = Path(path)
        self._lock = threading.RLock()
        self._depth = 0  # nesting of atomic() blocks on this connection
        if not create and not readonly and not self.path.is_file():
            raise CatalogError(f"{self.path}: catalog not found (run `photosift classify` first)")
        try:
            if readonly:
                if not self.path.is_file():
                    raise CatalogError(f"{self.path}: catalog not found (run `photosift classify` first)")
                uri = f"file:{self.path}?mode=ro"
                self.db = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(
                    str(self.path), timeout=30, isolation_level=None, check_same_thread=False
                )
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.row_factory = sqlite3.Row
            # SQLite's lower() folds ASCII only; searches fold like Python does ("Fotos für Oma").
            self.db.create_function("casefold", 1, _casefold, deterministic=True)
            if not readonly:
                self._migrate()
            elif self.schema_version() < len(MIGRATIONS):
                raise CatalogError(
                    f"{self.path}: catalog needs an upgrade (open it once with photosift classify)"
                )
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"{self.path}: cannot open catalog ({exc})") from None
        except OSError as exc:
            raise CatalogError(f"{self.path}: cannot open catalog ({exc.strerror or exc})") from None

    # -- schema -------------------------------------------------------------------------------------------
    def schema_version(self) -> int:
        row = self.db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='migrations'"
        ).fetchone()
        if row is None:
            return 0
        return int(self.db.execute("SELECT COALESCE(MAX(version), 0) FROM migrations").fetchone()[0])

    def _migrate(self) -> None:
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL)"
        )
        current = self.schema_version()
        if current > len(MIGRATIONS):
            raise CatalogError(f"{self.path}: catalog was written by a newer photosift (schema {current})")
        for version, step in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.atomic():
                step(self.db)
                self.db.execute(
                    "INSERT INTO migrations(version, name, applied_at) VALUES (?, ?, ?)",
                    (version, step.__name__.lstrip("_"), time.time()),
                )

    @contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One transaction: everything inside is stored, or nothing is. Nested, it joins the outer one (a
        correction stores itself, its history and the photos it moved together)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.db
                finally:
                    self._depth -= 1
                return
            self.db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            else:
                try:
                    self.db.execute("COMMIT")
                except sqlite3.OperationalError as exc:
                    self.db.execute("ROLLBACK")
                    raise CatalogError(f"{self.path}: cannot write catalog ({exc})") from None
            finally:
                self._depth = 0

    def close(self) -> None:
        self.db.close()

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
            rows = self.db.execute(
                "SELECT path, size, mtime_ns, content_hash, status, taken_source IS NOT NULL FROM photos "
                "WHERE path = ? OR (path >= ? AND path < ?)",
                (root, lo, hi),
            )
            for path, size, mtime_ns, content_hash, status, has_meta in rows:
                states[path] = PhotoState(size, mtime_ns, content_hash, status, bool(has_meta))
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
        """The models that have results here, newest results first."""
        # Correlated subqueries read only the (model, created_at) index, not every result row: 0.06 s instead
        # of 0.2-0.6 s at 100,000 results (a correction asks twice).
        rows = self.db.execute(
            "SELECT * FROM (SELECT m.sha256, m.name, m.path, m.task, m.labels, "
            "(SELECT COUNT(*) FROM results r WHERE r.model_sha256 = m.sha256), "
            "(SELECT MAX(r.created_at) FROM results r WHERE r.model_sha256 = m.sha256) AS newest "
            "FROM models m) WHERE newest IS NOT NULL ORDER BY newest DESC"
        )
        return [ModelInfo(s, n, p, t, tuple(json.loads(lab)), int(c)) for s, n, p, t, lab, c, _ in rows]

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
        row = self.db.execute("SELECT model_sha256 FROM results ORDER BY created_at DESC LIMIT 1").fetchone()
        return row[0] if row else None

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
                        p.path,
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
                ((now, p) for p in paths),
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
    ) -> tuple[str, dict[str, Any]]:
        """The WHERE clause shared by :meth:`results` and :meth:`count_results`.

        Every filter runs in SQL, before LIMIT/OFFSET: a filter applied afterwards returns short pages, and one
        applied in Python reads the whole catalog per request.
        """
        effective = "COALESCE(c.category, r.personal_category, r.category)"
        where = ["p.status != 'missing'", "(p.status = 'error' OR r.content_hash IS NOT NULL)"]
        params: dict[str, Any] = {}
        if category is not None:
            where.append(f"{effective} = :category")
            params["category"] = category
        if uncategorized:
            where.append(f"{effective} IS NULL")
        if status is not None:
            where.append("p.status = :status")
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
            category, status, label, text, uncategorized, since, until, include_hidden
        )
        params |= {"model": model_sha256, "limit": -1 if limit is None else limit, "offset": offset}
        by = "p.taken_at IS NULL, p.taken_at, p.path" if order == "date" else "p.path"
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
        sql = "SELECT COUNT(*) FROM (" + self._RESULT_SELECT + " WHERE " + where + ")"
        return int(self.db.execute(sql, params).fetchone()[0])

    def photo(self, photo_id: int) -> ResultRow | None:
        row = self.db.execute(
            self._RESULT_SELECT + " WHERE p.id = :id", {"model": None, "id": photo_id}
        ).fetchone()
        return self._row(row) if row else None

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
        row = self.db.execute("SELECT id FROM photos WHERE path = ?", (path,)).fetchone()
        return int(row[0]) if row else None

    def _row(self, r: sqlite3.Row) -> ResultRow:
        top5 = json.loads(r["top5"]) if r["top5"] else []
        return ResultRow(
            id=r["id"],
            path=r["path"],
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
        hidden = "" if include_hidden else " AND p.hidden = 0"
        rows = self.db.execute(
            "SELECT COALESCE(c.category, r.personal_category, r.category) AS cat, COUNT(*) FROM photos p "
            "JOIN results r ON r.content_hash = p.content_hash AND r.created_at = "
            "(SELECT MAX(created_at) FROM results r2 WHERE r2.content_hash = p.content_hash) "
            "LEFT JOIN corrections c ON c.content_hash = p.content_hash "
            f"WHERE p.status = 'ok'{hidden} GROUP BY cat ORDER BY COUNT(*) DESC"
        )
        return {str(cat): int(n) for cat, n in rows}

    def status_counts(self) -> dict[str, int]:
        return {s: int(n) for s, n in self.db.execute("SELECT status, COUNT(*) FROM photos GROUP BY status")}

    def content_hash_of(self, path: str) -> str | None:
        row = self.db.execute("SELECT content_hash FROM photos WHERE path = ?", (path,)).fetchone()
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
