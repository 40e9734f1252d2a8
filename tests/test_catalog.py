"""The catalog file itself: lossless paths, whose file it is, damage, locks and write errors, concurrent opens.

Real SQLite files in tmp dirs; rows are written through the catalog's own API (synthetic probabilities, so a
test needs no model run), and damage is done to the file's bytes the way a failing disk does it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from photosift.core import catalog as catalog_module
from photosift.core import checkrecord
from photosift.core.catalog import MIGRATIONS, Catalog, PhotoRecord, ResultRecord
from photosift.core.errors import CatalogError
from testkit import DATA

LABELS = [f"label {i}" for i in range(50)]
MODEL = "ab" * 32


def fill(cat: Catalog, paths: list[str]) -> None:
    """Store ``paths`` as classified photos, each with its own content and a result."""
    cat.register_model(MODEL, "test-model", LABELS)
    rng = np.random.default_rng(0)
    photos, results = [], []
    for i, path in enumerate(paths):
        content = f"{i:064x}"
        probs = rng.random(len(LABELS)).astype(np.float32)
        photos.append(PhotoRecord(path, 1000 + i, 10**18 + i, content))
        results.append(ResultRecord(content, probs / probs.sum(), None, "objects", 0.5))
    cat.write_batch(photos, results, MODEL, LABELS)


def undecodable(name: bytes) -> str:
    """A path the way os.listdir gives a name whose bytes are not UTF-8 (surrogateescape)."""
    return os.fsdecode(name)


# -- item 1: any file name the file system allows is stored and found again, exactly -------------------------
def test_non_utf8_paths_round_trip(tmp_path: Path) -> None:
    root = undecodable(b"/photos/caf\xe9")  # the folder's own name is Latin-1
    menu = undecodable(b"/photos/caf\xe9/m\xe9nu.jpg")
    other = undecodable(b"/photos/caf\xe9/m\xe8nu.jpg")  # differs from menu only in the undecodable byte
    plain = "/photos/café/menu.jpg"  # valid UTF-8 spelling of a similar name: must not collide
    odd = "/photos/café/line\nbreak [x] \x01.jpg"
    with Catalog(tmp_path / "c.db") as cat:
        fill(cat, [menu, other, plain, odd])
        assert set(cat.snapshot([root])) == {menu, other}
        assert set(cat.snapshot(["/photos/café"])) == {plain, odd}
        assert {r.path for r in cat.results()} == {menu, other, plain, odd}
        ids = {cat.photo_id(p) for p in (menu, other, plain, odd)}
        assert None not in ids and len(ids) == 4
        assert cat.content_hash_of(menu) != cat.content_hash_of(other)
        assert cat.photo(cat.photo_id(menu)).path == menu  # type: ignore[arg-type,union-attr]
        assert cat.mark_missing([menu]) == 1
        assert os.fsencode(next(r.path for r in cat.results())) != os.fsencode(menu)
    raw = sqlite3.connect(tmp_path / "c.db")
    stored = {r[0] for r in raw.execute("SELECT path FROM photos")}
    raw.close()
    assert {plain, odd} <= stored  # valid UTF-8 paths are stored as they are, readable by any SQLite tool


def test_prefix_queries_stay_indexed(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.db") as cat:
        fill(cat, [f"/p/{i}.jpg" for i in range(5)])
        plan = cat.db.execute(
            "EXPLAIN QUERY PLAN SELECT path FROM photos WHERE path = ? OR (path >= ? AND path < ?)",
            ("/p", "/p/", "/p0"),
        ).fetchall()
    assert any("USING" in str(row[-1]) and "INDEX" in str(row[-1]) for row in plan), plan


# -- item 6: other programs' databases are left alone, byte for byte ------------------------------------------
def foreign_database(path: Path) -> bytes:
    """Another program's SQLite database at ``path``; returns its bytes."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    db.execute("INSERT INTO notes(body) VALUES ('my notes')")
    db.commit()
    db.close()
    return path.read_bytes()


@pytest.mark.parametrize("readonly", [False, True])
def test_a_foreign_database_is_refused_and_left_byte_identical(tmp_path: Path, readonly: bool) -> None:
    other = tmp_path / "other.db"
    before = foreign_database(other)
    with pytest.raises(CatalogError, match="not a photosift catalog"):
        Catalog(other, readonly=readonly)
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]  # no -wal, no -shm


def test_a_file_that_is_not_sqlite_is_refused_unchanged(tmp_path: Path) -> None:
    photo = tmp_path / "coffee.jpg"
    photo.write_bytes((DATA / "coffee.jpg").read_bytes())
    before = photo.read_bytes()
    with pytest.raises(CatalogError, match="not a photosift catalog"):
        Catalog(photo)
    assert photo.read_bytes() == before


def test_catalogs_are_marked_and_old_ones_recognised(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with Catalog(db) as cat:
        fill(cat, ["/p/a.jpg"])
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA application_id").fetchone()[0] == getattr(catalog_module, "APPLICATION_ID", -1)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    # a catalog written before catalogs were marked: photosift's tables, no application_id
    raw.execute("PRAGMA application_id = 0")
    raw.execute("PRAGMA user_version = 0")
    raw.close()
    with Catalog(db, readonly=True) as cat:
        assert [r.path for r in cat.results()] == ["/p/a.jpg"]
    with Catalog(db) as cat:
        assert [r.path for r in cat.results()] == ["/p/a.jpg"]
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA application_id").fetchone()[0] == getattr(catalog_module, "APPLICATION_ID", -1)
    raw.close()


def test_an_empty_file_becomes_a_catalog(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    db.touch()  # e.g. made by mktemp
    with Catalog(db) as cat:
        assert cat.schema_version() == len(MIGRATIONS)


# -- item 5: a damaged catalog is noticed before anything is written ------------------------------------------
def damage(db: Path, size: int = 8192) -> None:
    """Overwrite ``size`` bytes in the middle of the file with garbage, as a failing disk or a bad copy does."""
    data = bytearray(db.read_bytes())
    middle = len(data) // 2
    data[middle : middle + size] = np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))


def damaged_catalog(tmp_path: Path, photos: int = 400) -> Path:
    db = tmp_path / "damaged.db"
    with Catalog(db) as cat:
        fill(cat, [f"/library/{i:04d}.jpg" for i in range(photos)])
    damage(db)
    return db


@pytest.mark.parametrize("readonly", [False, True])
def test_a_damaged_catalog_is_refused_before_any_write(tmp_path: Path, readonly: bool) -> None:
    db = damaged_catalog(tmp_path)
    before = db.read_bytes()
    with pytest.raises(CatalogError, match="damaged") as err:
        Catalog(db, readonly=readonly)
    assert "photosift doctor" in str(err.value) and "\n" not in str(err.value)
    assert db.read_bytes() == before


def _count_checks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    checked: list[Path] = []
    original = Catalog._check_damage

    def check(self: Catalog) -> None:
        checked.append(self.path)
        original(self)

    monkeypatch.setattr(Catalog, "_check_damage", check)
    return checked


def test_a_catalog_closed_cleanly_is_not_checked_again_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """quick_check reads the whole file at every open (0.43 s at 100,000 photos): a writer that closes cleanly
    records the file's state, and only a file not in that state — changed by someone else, or damaged — is
    checked again, and refused before any write when damaged."""
    db = tmp_path / "c.db"
    with Catalog(db) as cat:
        fill(cat, [f"/library/{i:04d}.jpg" for i in range(50)])
    assert checkrecord.record_path(db).is_file()
    checked = _count_checks(monkeypatch)
    with Catalog(db) as cat:  # unchanged since: no check; this writer's own writes are recorded at close
        cat.set_hidden([1], True)
    with Catalog(db, readonly=True) as cat:
        assert cat.count_results() == 50
    with Catalog(db):
        pass
    assert checked == []
    other = sqlite3.connect(db)  # another program writes it: no longer in the recorded state
    other.execute("UPDATE photos SET size = size + 1 WHERE rowid = 1")
    other.commit()
    other.close()
    with Catalog(db):
        pass
    assert checked == [db]
    damage(db)  # and a damaged file is refused before any write, as ever
    before = db.read_bytes()
    with pytest.raises(CatalogError, match="damaged"):
        Catalog(db)
    assert db.read_bytes() == before


def test_a_killed_writer_or_an_old_check_means_a_full_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "c.db"
    with Catalog(db) as cat:
        fill(cat, [f"/library/{i:04d}.jpg" for i in range(50)])
    script = textwrap.dedent(
        f"""
        import os
        from photosift.core.catalog import Catalog
        cat = Catalog({str(db)!r})
        cat.set_hidden([1, 2], True)
        os._exit(0)  # no close: as a kill or a crash leaves it
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    checked = _count_checks(monkeypatch)
    with Catalog(db) as cat:
        assert cat.count_results() == 50
    assert checked == [db]
    with Catalog(db):
        pass
    assert checked == [db]  # recorded again at the close above
    monkeypatch.setattr(checkrecord, "CHECK_EVERY_S", 0.0)  # the last full check is too old
    with Catalog(db):
        pass
    assert checked == [db, db]


# -- item 4: write errors and locks are one-line CatalogErrors, and the catalog stays usable --------------------
def test_a_held_lock_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with Catalog(db) as cat:
        fill(cat, ["/p/a.jpg"])
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with Catalog(db, busy_timeout=0.2) as cat, pytest.raises(CatalogError, match="busy"):
            cat.add_user_category("receipts")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_full_disk_is_a_clear_error_and_keeps_what_was_committed(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with Catalog(db) as cat:
        fill(cat, ["/p/a.jpg"])
        pages = cat.db.execute("PRAGMA page_count").fetchone()[0]
        cat.db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk is full" (SQLITE_FULL)
        with pytest.raises(CatalogError, match="full"):
            fill(cat, [f"/p/{i}.jpg" for i in range(1, 500)])
        assert [r.path for r in cat.results()] == ["/p/a.jpg"]
        cat.add_user_category("fits")  # the connection still works after the failed batch


# -- item 9: two processes creating the same new catalog at once both succeed -----------------------------------
OPEN_AT = """
import sys, time
from photosift.core.catalog import Catalog
start = float(sys.argv[2])
while time.time() < start:
    pass
with Catalog(sys.argv[1]) as cat:
    print(cat.schema_version())
"""


@pytest.mark.slow
def test_concurrent_first_opens_of_a_new_catalog(tmp_path: Path) -> None:
    import time

    for attempt in range(3):
        db = tmp_path / f"new{attempt}.db"
        start = str(time.time() + 1.5)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(OPEN_AT), str(db), start],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [p.communicate(timeout=60) for p in procs]
        for p, (out, err) in zip(procs, outputs, strict=True):
            assert p.returncode == 0, err
            assert out.strip() == str(len(MIGRATIONS))
