"""The pipeline and catalog on real photos and a real SQLite file: incremental scans, renames, copies, errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from photosift.core.catalog import Catalog
from photosift.core.errors import CatalogError
from photosift.run.driver import ClassifyOptions, Pipeline
from testkit import DATA


@pytest.fixture()
def pipeline(engine, tmp_path: Path):
    cat = Catalog(tmp_path / "catalog.db")
    p = Pipeline(engine, cat, options=ClassifyOptions(batch_size=4, workers=2))
    yield p
    cat.close()


def test_classify_then_rescan_is_incremental(pipeline, photos_dir: Path) -> None:
    n = len(list(photos_dir.iterdir()))
    first = pipeline.run([str(photos_dir)])
    assert (first.seen, first.classified, first.errors) == (n, n, 0)
    rows = pipeline.catalog.results()
    assert len(rows) == n and all(r.status == "ok" and r.label and len(r.top5) == 5 for r in rows)
    assert all(r.path.startswith(str(photos_dir)) for r in rows)
    second = pipeline.run([str(photos_dir)])
    assert (second.classified, second.unchanged, second.reused) == (0, n, 0)


def test_changed_file_is_reclassified(pipeline, photos_dir: Path) -> None:
    pipeline.run([str(photos_dir)])
    target = photos_dir / "coffee.jpg"
    from PIL import Image

    # new content (a mirrored cat, never seen before) under an old name
    Image.open(DATA / "chelsea.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target, quality=90)
    os.utime(target, ns=(1, 1))
    again = pipeline.run([str(photos_dir)])
    assert again.classified == 1
    row = next(r for r in pipeline.catalog.results() if r.path == str(target))
    assert "cat" in row.label.lower() or row.label == "Egyptian Mau"


def test_rename_keeps_result_without_inference(pipeline, photos_dir: Path) -> None:
    pipeline.run([str(photos_dir)])
    before = {r.path: r for r in pipeline.catalog.results()}
    old, new = photos_dir / "china.jpg", photos_dir / "sub" / "temple.jpg"
    new.parent.mkdir()
    old.rename(new)
    again = pipeline.run([str(photos_dir)])
    assert (again.classified, again.reused, again.missing) == (0, 1, 1)
    after = {r.path: r for r in pipeline.catalog.results()}
    assert str(old) not in after
    assert after[str(new)].top5 == before[str(old)].top5
    statuses = pipeline.catalog.status_counts()
    assert statuses["missing"] == 1


def test_copies_get_their_own_rows(pipeline, photos_dir: Path) -> None:
    pipeline.run([str(photos_dir)])
    shutil.copy(photos_dir / "flower.jpg", photos_dir / "flower copy.jpg")
    again = pipeline.run([str(photos_dir)])
    assert (again.classified, again.reused) == (0, 1)
    rows = [r for r in pipeline.catalog.results() if "flower" in r.path]
    assert len(rows) == 2 and rows[0].top5 == rows[1].top5


def test_deleted_file_is_marked_missing(pipeline, photos_dir: Path) -> None:
    pipeline.run([str(photos_dir)])
    (photos_dir / "rocket.jpg").unlink()
    again = pipeline.run([str(photos_dir)])
    assert again.missing == 1
    assert all("rocket" not in r.path for r in pipeline.catalog.results())


def test_scanning_a_subfolder_does_not_mark_siblings_missing(pipeline, photos_dir: Path) -> None:
    sub = photos_dir / "sub"
    sub.mkdir()
    shutil.copy(photos_dir / "coffee.jpg", sub / "c.jpg")
    pipeline.run([str(photos_dir)])
    again = pipeline.run([str(sub)])
    assert again.missing == 0 and again.unchanged == 1


def test_bad_files_are_recorded_and_the_run_goes_on(pipeline, photos_dir: Path) -> None:
    (photos_dir / "notes.jpg").write_text("not a photo")
    (photos_dir / "empty.png").write_bytes(b"")
    data = (photos_dir / "coffee.jpg").read_bytes()
    (photos_dir / "cut.jpg").write_bytes(data[: len(data) // 3])
    (photos_dir / "readme.txt").write_text("ignored: not an image extension")
    summary = pipeline.run([str(photos_dir)])
    assert summary.errors == 3
    errors = {Path(r.path).name: r.error for r in pipeline.catalog.results(status="error")}
    assert set(errors) == {"notes.jpg", "empty.png", "cut.jpg"}
    assert "not a recognised image format" in errors["notes.jpg"]
    assert "empty file" in errors["empty.png"]
    ok = pipeline.catalog.results(status="ok")
    assert len(ok) == summary.classified == len(list(photos_dir.glob("*"))) - 4
    # unchanged broken files are not decoded again
    assert pipeline.run([str(photos_dir)]).errors == 0


def test_content_is_sniffed_not_trusted(pipeline, photos_dir: Path) -> None:
    shutil.copy(DATA / "camera.png", photos_dir / "really-a-png.jpg")
    shutil.copy(DATA / "coffee.jpg", photos_dir / "IMG_0001")  # no extension at all
    summary = pipeline.run([str(photos_dir)])
    assert summary.errors == 0
    paths = {Path(r.path).name for r in pipeline.catalog.results(status="ok")}
    assert {"really-a-png.jpg", "IMG_0001"} <= paths


def test_extensions_case_insensitive_and_hidden_skipped(pipeline, photos_dir: Path) -> None:
    (photos_dir / "chelsea.jpg").rename(photos_dir / "CHELSEA.JPG")
    hidden = photos_dir / ".thumbnails"
    hidden.mkdir()
    shutil.copy(photos_dir / "coffee.jpg", hidden / "t.jpg")
    pipeline.run([str(photos_dir)])
    names = {Path(r.path).name for r in pipeline.catalog.results()}
    assert "CHELSEA.JPG" in names and "t.jpg" not in names


def test_cancel_keeps_committed_work(pipeline, photos_dir: Path) -> None:
    import threading

    cancel = threading.Event()
    seen = []

    def on_progress(p) -> None:
        seen.append(p.files_done)
        if p.classified >= 4:
            cancel.set()

    summary = pipeline.run([str(photos_dir)], on_progress=on_progress, cancel=cancel)
    assert summary.cancelled
    stored = len(pipeline.catalog.results())
    assert 4 <= stored < len(list(photos_dir.iterdir()))
    rest = pipeline.run([str(photos_dir)])
    assert rest.classified + rest.reused == len(list(photos_dir.iterdir())) - stored
    assert pipeline.catalog.integrity_check() == "ok"


def test_catalog_migrations_recorded(tmp_path: Path) -> None:
    from photosift.core.catalog import MIGRATIONS

    with Catalog(tmp_path / "c.db") as cat:
        assert cat.schema_version() == len(MIGRATIONS)
        names = [r[0] for r in cat.db.execute("SELECT name FROM migrations ORDER BY version")]
    assert names == [m.__name__.lstrip("_") for m in MIGRATIONS]
    with Catalog(tmp_path / "c.db", readonly=True) as cat:
        assert cat.results() == []


def test_an_old_catalog_is_upgraded_with_everything_kept(tmp_path: Path) -> None:
    """tests/data/catalog-v1.db was written by schema 1 (see tests/data/SOURCES.md)."""
    import sqlite3

    import numpy as np

    from photosift.core.catalog import MIGRATIONS

    old = tmp_path / "old.db"
    shutil.copy(DATA / "catalog-v1.db", old)
    with sqlite3.connect(old) as conn:
        before = conn.execute(
            "SELECT content_hash, label_index, top5, topk_prob, embedding, category FROM results ORDER BY 1"
        ).fetchall()
        corrections = conn.execute("SELECT content_hash, category FROM corrections").fetchall()
    assert len(before) == 2 and all(row[4] for row in before)
    with pytest.raises(CatalogError, match="needs an upgrade"):
        Catalog(old, readonly=True)
    with Catalog(old) as cat:
        assert cat.schema_version() == len(MIGRATIONS)
        rows = {r.path.rsplit("/", 1)[-1]: r for r in cat.results()}
        assert rows["coffee.jpg"].corrected_category == "objects"
        assert {r.label for r in rows.values()} and all(len(r.top5) == 5 for r in rows.values())
        stored = {
            h: (
                part.topk_index[i],
                part.topk_prob[i],
                part.embeddings[i] if part.embeddings is not None else None,
            )
            for m in cat.models()
            for part in cat.stored_chunks(m.sha256)
            for i, h in enumerate(part.hashes)
        }
    for content_hash, label_index, _top5, topk_prob, embedding, _category in before:
        topk_index, topk_probs, vector = stored[content_hash]
        assert topk_index is not None and int(topk_index[0]) == label_index
        assert topk_probs is not None and topk_probs.tobytes() == topk_prob
        assert vector is not None and np.array_equal(vector, np.frombuffer(embedding, np.float16))
    assert [(h, c) for h, c in corrections] == list(Catalog(old).corrections().items())
    assert Catalog(old).integrity_check() == "ok"


def test_a_catalog_from_a_newer_photosift_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from photosift.core.catalog import MIGRATIONS

    path = tmp_path / "c.db"
    Catalog(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO migrations(version, name, applied_at) VALUES (?, 'from_the_future', 0)",
            (len(MIGRATIONS) + 1,),
        )
    size = path.stat().st_size
    with pytest.raises(CatalogError, match="newer photosift"):
        Catalog(path)
    assert path.stat().st_size == size


def test_label_filter_applies_before_the_limit(pipeline, photos_dir: Path) -> None:
    pipeline.run([str(photos_dir)])
    everything = pipeline.catalog.results()
    target = next(r for r in everything if r.path.endswith("coffee.jpg")).label
    assert target
    first = pipeline.catalog.results(label=target.upper()[:5], limit=1)
    assert len(first) == 1 and target.lower()[:5] in first[0].label.lower()
    assert pipeline.catalog.results(label="no label has this text") == []


def test_text_search_and_uncategorized_run_in_sql(pipeline, photos_dir: Path) -> None:
    pipeline.run([str(photos_dir)])
    cat = pipeline.catalog
    everything = cat.results(status="ok")
    coffee = next(r for r in everything if r.path.endswith("coffee.jpg"))
    # a user category with a non-ASCII name, matched case-insensitively as Python folds it
    cat.add_user_category("Fotos für Oma")
    content_hash = cat.db.execute("SELECT content_hash FROM photos WHERE id = ?", (coffee.id,)).fetchone()[0]
    cat.set_correction(content_hash, "Fotos für Oma")
    assert [r.id for r in cat.results(text="FÜR OMA")] == [coffee.id]
    assert cat.count_results(text="für oma") == 1
    # the label or the category; pages are full pages in path order
    needle = everything[0].label[:3]
    expected = [
        r.id
        for r in cat.results(status="ok")
        if needle.casefold() in r.label.casefold()
        or needle.casefold() in (r.effective_category or "").casefold()
    ]
    assert [r.id for r in cat.results(status="ok", text=needle)] == expected
    assert cat.count_results(status="ok", text=needle) == len(expected)
    assert [
        r.id for r in cat.results(status="ok", text=needle, limit=1, offset=len(expected) - 1)
    ] == expected[-1:]
    # uncategorized: no category stored and no correction
    cat.db.execute("UPDATE results SET category = NULL")
    assert cat.count_results(status="ok", uncategorized=True) == len(everything) - 1
    assert coffee.id not in [r.id for r in cat.results(status="ok", uncategorized=True)]


def test_a_file_swapped_after_the_scan_keeps_no_wrong_result(pipeline, photos_dir: Path) -> None:
    """rsync -t swaps files atomically and keeps mtimes: what is stored must be the stat of the file hashed."""
    from photosift.core import scanner
    from photosift.run.sink import CatalogSink

    target = photos_dir / "coffee.jpg"
    original = target.stat()

    def swap_in(source: Path, like: os.stat_result) -> None:
        tmp = photos_dir / ".rsync-tmp"
        shutil.copy(source, tmp)
        os.utime(tmp, ns=(like.st_atime_ns, like.st_mtime_ns))
        os.replace(tmp, target)

    (entry,) = scanner.walk([str(target)])  # the scan's stat: the espresso
    backup = photos_dir.parent / "coffee-backup.jpg"
    shutil.copy2(target, backup)
    swap_in(DATA / "chelsea.jpg", original)  # a cat, same name and mtime, another size
    loaded = pipeline.stages.load(entry, set())
    now = target.stat()
    assert (loaded.entry.size, loaded.entry.mtime_ns) == (now.st_size, now.st_mtime_ns)
    sink = CatalogSink(pipeline.catalog, pipeline.model_sha, pipeline.labels, set())
    sink.add(pipeline.stages.run_batch([loaded]))
    sink.close()
    swap_in(backup, original)  # and back: the espresso again, with the scan's size and mtime
    pipeline.run([str(photos_dir)])
    row = next(r for r in pipeline.catalog.results() if r.path == str(target))
    assert row.label == "espresso"


def test_scanner_extension_rule_is_splitext() -> None:
    """The scanner's fast extension check picks exactly the files os.path.splitext's extension would."""
    import os

    from photosift.core import scanner

    names = ["a.jpg", "b.JPEG", ".hidden.jpg", "..jpg", "c..png", "noext", "d.tar.gz", ".jpg", "e.", "f.HeIc"]
    for name in names:
        expected = os.path.splitext(name)[1].lower() in scanner.IMAGE_EXTENSIONS
        assert scanner._wanted(name, "/nonexistent/" + name) == expected, name
