"""A catalog's health, checked without changing it, and recovery of what is readable from a damaged one.

:func:`inspect_catalog` opens the file read-only (never through :class:`~photosift.core.catalog.Catalog`, which
refuses a damaged or foreign file) and reports whose file it is, its schema version, SQLite's full
``integrity_check`` and the rows per table. :func:`recover_catalog` does what SQLite's ``.recover`` does for a
catalog, in Python: it creates a fresh file with the damaged one's schema and copies every row it can read,
table by table in rowid order, stepping over damaged pages (a read that fails is retried further on, at
exponentially growing distances, until reads succeed again). Indexes are rebuilt from the copied rows, rows
that point at a lost row (a result whose model row was on a damaged page) are dropped, and the copy is opened
once as a catalog so it is marked and migrated to the current schema. The damaged file is never written.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from photosift.core.catalog import APPLICATION_ID, MIGRATIONS, Catalog, connect_readonly
from photosift.core.errors import CatalogError

MAX_PROBLEMS = 20  # integrity_check lines kept in a report
_CHUNK = 512  # rows per read while copying
_MIN_ROWID = -(2**63)
_MAX_ROWID = 2**63 - 1


@dataclass
class CatalogHealth:
    """What :func:`inspect_catalog` found. ``problems``: one line each; none means healthy."""

    path: str
    owner: str = "missing"  # photosift | photosift (unmarked) | empty | foreign | not sqlite | missing
    application_id: int | None = None
    schema_version: int | None = None
    schema_current: int = len(MIGRATIONS)
    integrity: list[str] = field(default_factory=list)  # ["ok"], or SQLite's problem lines
    rows: dict[str, int | None] = field(default_factory=dict)  # per table; None: unreadable
    photos: dict[str, int] = field(default_factory=dict)  # by status
    models: list[dict[str, Any]] = field(default_factory=list)  # the models table: name, sha256, path, task
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class RecoveryReport:
    source: str
    output: str
    copied: dict[str, int] = field(default_factory=dict)  # rows per table
    damaged_stretches: dict[str, int] = field(default_factory=dict)  # unreadable rowid ranges stepped over
    dropped_orphans: dict[str, int] = field(default_factory=dict)  # rows pointing at a row that was lost
    integrity: str = ""  # of the new catalog: "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DoctorReport:
    """What ``photosift doctor`` found: the catalog's health, each model's file (``models``: name, origin,
    path, file = verified | missing | changed | no file recorded), and a recovery when one was asked for.
    ``problems`` make ``ok`` False; ``warnings`` do not (stored results stay usable)."""

    health: CatalogHealth
    models: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    recovery: RecoveryReport | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "catalog": self.health.to_dict(),
            "models": self.models,
            "problems": self.problems,
            "warnings": self.warnings,
            "recovery": self.recovery.to_dict() if self.recovery else None,
        }


def inspect_catalog(path: str | Path) -> CatalogHealth:
    """Check the catalog at ``path`` without changing it: owner, schema, full integrity, rows per table."""
    path = Path(path)
    health = CatalogHealth(str(path))
    if not path.is_file():
        health.problems.append(f"{path}: no such catalog")
        return health
    try:
        db = connect_readonly(path)
    except sqlite3.Error as exc:
        health.problems.append(f"{path}: cannot open ({exc})")
        return health
    try:
        _inspect(db, health)
    finally:
        db.close()
    return health


def _inspect(db: sqlite3.Connection, health: CatalogHealth) -> None:
    try:
        health.application_id = int(db.execute("PRAGMA application_id").fetchone()[0])
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.DatabaseError as exc:
        health.owner = "not sqlite" if "not a database" in str(exc) else "unreadable"
        health.problems.append(f"cannot read the file's schema ({exc})")
        return
    if health.application_id == APPLICATION_ID:
        health.owner = "photosift"
    elif health.application_id == 0 and not tables:
        health.owner = "empty"
    elif health.application_id == 0 and {"migrations", "photos", "results"} <= set(tables):
        health.owner = "photosift (unmarked)"  # from before catalogs were marked; marked on the next write
    else:
        health.owner = "foreign"
        health.problems.append(
            "not a photosift catalog (another program's database): photosift will not use it"
        )
        return
    try:
        health.integrity = [str(r[0]) for r in db.execute(f"PRAGMA integrity_check({MAX_PROBLEMS})")]
    except sqlite3.DatabaseError as exc:
        health.integrity = [f"integrity check failed ({exc})"]
    if health.integrity != ["ok"]:
        health.problems.append(
            f"damaged: {health.integrity[0]}"
            + (f" (and {len(health.integrity) - 1} more)" if len(health.integrity) > 1 else "")
        )
    if "migrations" in tables:
        try:
            health.schema_version = int(
                db.execute("SELECT COALESCE(MAX(version), 0) FROM migrations").fetchone()[0]
            )
        except sqlite3.DatabaseError as exc:
            health.problems.append(f"cannot read the schema version ({exc})")
    if health.schema_version is not None and health.schema_version > health.schema_current:
        health.problems.append(f"written by a newer photosift (schema {health.schema_version})")
    for table in tables:
        try:
            health.rows[table] = int(db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])
        except sqlite3.DatabaseError:
            health.rows[table] = None
    try:
        health.photos = {
            str(s): int(n) for s, n in db.execute("SELECT status, COUNT(*) FROM photos GROUP BY 1")
        }
        health.models = [
            {"sha256": s, "name": n, "path": p, "task": t}
            for s, n, p, t in db.execute("SELECT sha256, name, path, task FROM models ORDER BY name")
        ]
    except sqlite3.DatabaseError:
        pass  # counted as unreadable above


def recover_catalog(source: str | Path, output: str | Path) -> RecoveryReport:
    """Copy every readable row of the catalog ``source`` into a new catalog ``output`` (which must not exist)."""
    source, output = Path(source), Path(output)
    if output.exists():
        raise CatalogError(f"{output}: already exists; recovery writes a new file")
    if not source.is_file():
        raise CatalogError(f"{source}: no such catalog")
    report = RecoveryReport(str(source), str(output))
    partial = output.with_name(output.name + ".partial")
    partial.unlink(missing_ok=True)
    src = connect_readonly(source)
    try:
        schema = _schema(src, source)
        dst = sqlite3.connect(partial, isolation_level=None)
        try:
            _copy(src, dst, schema, report)
        finally:
            dst.close()
    finally:
        src.close()
    try:
        with Catalog(partial) as cat:  # marks it and migrates it to the current schema
            report.integrity = cat.integrity_check()
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return report


def _schema(src: sqlite3.Connection, source: Path) -> list[tuple[str, str, str]]:
    """(type, name, sql) of the source's tables and indexes, tables first (page 1 must be readable)."""
    try:
        rows = src.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY type = 'index', rowid"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise CatalogError(f"{source}: cannot read its schema ({exc}); nothing can be recovered") from None
    application_id = src.execute("PRAGMA application_id").fetchone()[0]
    names = {name for kind, name, _ in rows if kind == "table"}
    if application_id != APPLICATION_ID and not {"migrations", "photos", "results"} <= names:
        raise CatalogError(f"{source}: not a photosift catalog; nothing to recover")
    return [(str(k), str(n), str(s)) for k, n, s in rows]


def _copy(
    src: sqlite3.Connection,
    dst: sqlite3.Connection,
    schema: list[tuple[str, str, str]],
    report: RecoveryReport,
) -> None:
    for kind, _, sql in schema:
        if kind == "table":
            dst.execute(sql)
    for kind, name, _ in schema:
        if kind != "table":
            continue
        columns = [r[1] for r in dst.execute(f'PRAGMA table_info("{name}")')]
        quoted = ", ".join(f'"{c}"' for c in columns)
        insert = f'INSERT OR IGNORE INTO "{name}" ({quoted}) VALUES ({", ".join("?" * len(columns))})'
        copied = stretches = 0
        dst.execute("BEGIN")
        for rows, skipped in _readable_rows(src, name, quoted):
            dst.executemany(insert, rows)
            copied += len(rows)
            stretches += skipped
        dst.execute("COMMIT")
        report.copied[name] = copied
        if stretches:
            report.damaged_stretches[name] = stretches
    for kind, _, sql in schema:
        if kind == "index":
            dst.execute(sql)
    # Rows that point at a row that was lost (a result whose model was on a damaged page) would break joins.
    dst.execute("BEGIN")
    for table, rowid, *_ in dst.execute("PRAGMA foreign_key_check").fetchall():
        dst.execute(f'DELETE FROM "{table}" WHERE rowid = ?', (rowid,))
        report.dropped_orphans[table] = report.dropped_orphans.get(table, 0) + 1
        report.copied[table] -= 1
    dst.execute("COMMIT")
    dst.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _readable_rows(src: sqlite3.Connection, table: str, columns: str) -> Iterator[tuple[list[Any], int]]:
    """(rows, damaged stretches stepped over) in rowid order, for every row that can be read."""
    select = f'SELECT rowid, {columns} FROM "{table}" WHERE rowid >= ? ORDER BY rowid LIMIT ?'
    start = _MIN_ROWID
    while True:
        damaged = False
        try:
            rows = src.execute(select, (start, _CHUNK)).fetchall()
        except sqlite3.DatabaseError:
            rows, damaged = _rows_before_damage(src, select, start)
        if rows:
            yield [r[1:] for r in rows], 0
            start = rows[-1][0] + 1
        if damaged:
            resume = _next_readable(src, table, start)
            yield [], 1
            if resume is None:
                return
            start = resume
        elif len(rows) < _CHUNK:
            return


def _rows_before_damage(src: sqlite3.Connection, select: str, start: int) -> tuple[list[Any], bool]:
    """A chunk failed to read: the rows from ``start`` up to the damage, one at a time; True if damage was hit."""
    rows: list[Any] = []
    try:
        while len(rows) < _CHUNK:
            row = src.execute(select, (rows[-1][0] + 1 if rows else start, 1)).fetchone()
            if row is None:
                return rows, False
            rows.append(row)
    except sqlite3.DatabaseError:
        return rows, True
    return rows, False


def _next_readable(src: sqlite3.Connection, table: str, after: int) -> int | None:
    """The first rowid beyond a damaged stretch whose row can be read again, probing ever further."""
    step, probe = 1, after + 1
    while probe <= _MAX_ROWID:
        try:
            found = src.execute(
                f'SELECT rowid FROM "{table}" WHERE rowid >= ? ORDER BY rowid LIMIT 1', (probe,)
            ).fetchone()
            if found is None:
                return None
            src.execute(f'SELECT * FROM "{table}" WHERE rowid = ?', (found[0],)).fetchone()
            return int(found[0])
        except sqlite3.DatabaseError:
            probe += step
            step *= 2
    return None
