"""The catalog's schema as an ordered list of migrations: each is one function, run once, in its own
transaction, recorded in the ``migrations`` table (and the count in ``PRAGMA user_version``). A catalog from an
older photosift is brought up to date at open; one from a newer photosift is refused (core/catalog.py).

Append new migrations at the end; never edit or reorder one that has shipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, which would break the migration's transaction. A trigger's body
    # holds semicolons, so pieces are joined until SQLite says the statement is complete.
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                db.execute(pending)
            pending = ""
    if pending.strip(" \n;"):
        db.execute(pending)


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


# A photo's effective category: its correction, else the category of the newest result for its content.
_EFFECTIVE = """COALESCE(
    (SELECT category FROM corrections WHERE content_hash = {h}),
    (SELECT category FROM results WHERE content_hash = {h} ORDER BY created_at DESC LIMIT 1))"""


def _follow_content(effective: str = _EFFECTIVE, changed_only: bool = False) -> str:
    """Triggers that recompute the kept category of a content's photos when its results or correction change.

    ``changed_only`` (migration 5, which replaces them): a result's update counts only when its category, the
    personal head's or its date really changed, so re-deriving unchanged results rewrites no photo rows."""
    on_update = "AFTER UPDATE OF category, created_at ON results"
    if changed_only:
        on_update = (
            "AFTER UPDATE OF category, personal_category, created_at ON results WHEN "
            "OLD.category IS NOT NEW.category OR OLD.personal_category IS NOT NEW.personal_category "
            "OR OLD.created_at IS NOT NEW.created_at"
        )
    events = [
        ("results_category_on_insert", "AFTER INSERT ON results", "NEW"),
        ("results_category_on_update", on_update, "NEW"),
        ("results_category_on_delete", "AFTER DELETE ON results", "OLD"),
        ("corrections_on_insert", "AFTER INSERT ON corrections", "NEW"),
        ("corrections_on_update", "AFTER UPDATE ON corrections", "NEW"),
        ("corrections_on_delete", "AFTER DELETE ON corrections", "OLD"),
    ]
    return "".join(
        (f"DROP TRIGGER {name};\n" if changed_only else "")
        + f"CREATE TRIGGER {name} {event} BEGIN UPDATE photos SET category = "
        f"{effective.format(h=row + '.content_hash')} WHERE content_hash = {row}.content_hash; END;\n"
        for name, event, row in events
    )


# The photos-per-category counts, kept by triggers that must fire after the ones that set a photo's category
# (SQLite runs the newest trigger first): migration 5, which replaces those, creates these again after them.
_COUNT_TRIGGERS = """        CREATE TRIGGER counts_on_insert AFTER INSERT ON photos WHEN NEW.status = 'ok' BEGIN
            INSERT INTO category_counts VALUES (COALESCE(NEW.category, ''), 1, NEW.hidden != 0)
                ON CONFLICT(category) DO UPDATE SET photos = photos + 1, hidden = hidden + excluded.hidden;
        END;
        CREATE TRIGGER counts_on_delete AFTER DELETE ON photos WHEN OLD.status = 'ok' BEGIN
            UPDATE category_counts SET photos = photos - 1, hidden = hidden - (OLD.hidden != 0)
                WHERE category = COALESCE(OLD.category, '');
        END;
        CREATE TRIGGER counts_on_update AFTER UPDATE OF status, category, hidden ON photos
            WHEN OLD.status IS NOT NEW.status OR OLD.category IS NOT NEW.category OR OLD.hidden IS NOT NEW.hidden
        BEGIN
            UPDATE category_counts SET photos = photos - 1, hidden = hidden - (OLD.hidden != 0)
                WHERE OLD.status = 'ok' AND category = COALESCE(OLD.category, '');
            INSERT INTO category_counts SELECT COALESCE(NEW.category, ''), 1, NEW.hidden != 0
                WHERE NEW.status = 'ok'
                ON CONFLICT(category) DO UPDATE SET photos = photos + 1, hidden = hidden + excluded.hidden;
        END"""


def _category_triggers(shown: str) -> str:
    """Triggers that set a photo's kept category (``shown``: its SQL, over ``{h}``) when it gets content."""
    new = shown.format(h="NEW.content_hash")
    return f"""        CREATE TRIGGER photos_category_on_insert AFTER INSERT ON photos WHEN NEW.content_hash IS NOT NULL
        BEGIN
            UPDATE photos SET category = {new} WHERE id = NEW.id;
        END;
        CREATE TRIGGER photos_category_on_hash AFTER UPDATE OF content_hash ON photos
        BEGIN
            UPDATE photos SET category = {new} WHERE id = NEW.id;
        END;"""


def _m4_category_index(db: sqlite3.Connection) -> None:
    """Each photo's effective category kept on its row, and the number of photos per category kept in a table,
    both by triggers on photos, results and corrections (so every writer keeps them true).

    Why: the overview and the category pages asked "newest result per photo, then its correction" of every row
    (a correlated subquery per photo: 0.6 s for the counts at 100,000 photos, more for a deep page). Now the
    counts are one read of ``category_counts`` and a category's page is a range of ``photos_by_category``."""
    _run_script(
        db,
        f"""
        ALTER TABLE photos ADD COLUMN category TEXT;
        CREATE INDEX results_newest ON results(content_hash, created_at);
        UPDATE photos SET category = {_EFFECTIVE.format(h="photos.content_hash")}
            WHERE content_hash IS NOT NULL;
        CREATE INDEX photos_by_category ON photos(status, category, hidden, path);
        CREATE TABLE category_counts (
            category TEXT PRIMARY KEY,  -- '' for photos with no category
            photos INTEGER NOT NULL,  -- readable photos with this effective category
            hidden INTEGER NOT NULL  -- of which the user hid
        );
        INSERT INTO category_counts SELECT COALESCE(category, ''), COUNT(*), SUM(hidden != 0) FROM photos
            WHERE status = 'ok' GROUP BY COALESCE(category, '');
{_category_triggers(_EFFECTIVE)}
{_follow_content()}
{_COUNT_TRIGGERS}
        """,
    )


# Since migration 5: the personal head's category, where it spoke, before the rules' (corrections still first).
_SHOWN = """COALESCE(
    (SELECT category FROM corrections WHERE content_hash = {h}),
    (SELECT COALESCE(personal_category, category) FROM results WHERE content_hash = {h}
        ORDER BY created_at DESC LIMIT 1))"""


def _m5_correction_history(db: sqlite3.Connection) -> None:
    """What decided each category and what each correction changed.

    ``decided_by``: the fingerprint of the rules and heads that set a result's category (a stale one is
    re-derived); ``personal_*``: the personal head's decision (the category of the nearest corrected photo within
    its similarity gate, that similarity, and that photo's content hash), NULL where it abstains;
    ``correction_history``: every correction, clear and undo with the photos it moved (for "what changed" and
    undo). A photo's kept category (migration 4) now follows the personal head's decision too, and only when a
    result's category actually changes (re-deriving 100,000 unchanged results fires no trigger)."""
    _run_script(
        db,
        f"""
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
        CREATE INDEX correction_history_by_hash ON correction_history(content_hash, id);
        DROP TRIGGER photos_category_on_insert;
        DROP TRIGGER photos_category_on_hash;
{_category_triggers(_SHOWN)}
{_follow_content(_SHOWN, changed_only=True)}
        DROP TRIGGER counts_on_insert;
        DROP TRIGGER counts_on_delete;
        DROP TRIGGER counts_on_update;
{_COUNT_TRIGGERS}
        """,
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _m1_initial,
    _m2_model_tasks,
    _m3_photo_meta,
    _m4_category_index,
    _m5_correction_history,
]
