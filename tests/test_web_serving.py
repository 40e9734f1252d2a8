"""The gallery serves only what the catalog holds: files swapped, turned into FIFOs, grown or slow after the scan
are refused with a clear status; odd names render; pages past the end are 404; HEAD works; bad bodies are 400.

Catalogs here hold real image files registered with their real content hash and fstat (and a synthetic result,
so no model run is needed to serve them); the server is the real app, through TestClient or a live uvicorn.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")

import httpx
from fastapi.testclient import TestClient

from photosift.core.catalog import Catalog, PhotoRecord, ResultRecord
from photosift.web import app as webapp
from test_catalog import foreign_database
from test_web import BASE, PORT, TOKEN, LiveServer, settings_for
from testkit import DATA

LABELS = [f"label {i}" for i in range(20)]
MODEL = "cd" * 32


def register(db: Path, files: list[str], errors: dict[str, str] | None = None) -> dict[str, int]:
    """Store ``files`` as the scan would: content hash and stat of each, a result per content; returns ids."""
    with Catalog(db) as cat:
        cat.register_model(MODEL, "test-model", LABELS)
        photos, results = [], []
        for i, path in enumerate(files):
            data = Path(path).read_bytes()
            st = os.stat(path)
            digest = hashlib.sha256(data).hexdigest()
            probs = np.full(len(LABELS), 0.01, dtype=np.float32)
            probs[i % len(LABELS)] = 1.0
            photos.append(PhotoRecord(path, st.st_size, st.st_mtime_ns, digest))
            results.append(ResultRecord(digest, probs / probs.sum(), None, "animals", 0.9))
        photos += [PhotoRecord(p, 1, 1, None, reason) for p, reason in (errors or {}).items()]
        cat.write_batch(photos, results, MODEL, LABELS)
        return {p: cat.photo_id(p) for p in [*files, *(errors or {})]}  # type: ignore[misc]


@pytest.fixture()
def library(tmp_path: Path) -> tuple[Path, Path]:
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("coffee.jpg", "chelsea.jpg", "flower.jpg"):
        shutil.copy(DATA / name, lib / name)
    return lib, tmp_path / "c.db"


def client_for(db: Path, **kwargs: Any) -> TestClient:
    app = webapp.create_app(settings_for(db), token=TOKEN, port=PORT, **kwargs)
    return TestClient(app, base_url=BASE, raise_server_exceptions=False)


# -- item 1: any file name renders and its photo is served ------------------------------------------------------
def test_non_utf8_names_render_and_serve(library) -> None:
    lib, db = library
    menu = os.fsdecode(os.path.join(os.fsencode(lib), b"m\xe9nu.jpg"))
    shutil.copy(DATA / "coffee.jpg", menu)
    broken = os.fsdecode(os.path.join(os.fsencode(lib), b"line\nbreak \xff.jpg"))
    Path(broken).write_bytes(b"junk")
    ids = register(db, [menu], {broken: "not a recognised image format"})
    with client_for(db) as c:
        for url in ("/", "/category/animals", f"/photo/{ids[menu]}", "/errors", f"/photo/{ids[broken]}"):
            r = c.get(url)
            assert r.status_code == 200, url
        assert "m\\xe9nu.jpg" in c.get(f"/photo/{ids[menu]}").text
        assert "line\\nbreak \\xff.jpg" in c.get("/errors").text
        thumb = c.get(f"/thumb/{ids[menu]}.jpg")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"


# -- item 8: only the file the catalog knows ------------------------------------------------------------------------
def test_a_swapped_symlink_or_file_is_not_served_under_the_old_etag(library) -> None:
    lib, db = library
    link = lib / "link.jpg"
    link.symlink_to(lib / "coffee.jpg")
    ids = register(db, [str(link), str(lib / "chelsea.jpg"), str(lib / "flower.jpg")])
    with client_for(db) as c:
        assert c.get(f"/view/{ids[str(lib / 'flower.jpg')]}.jpg").status_code == 200  # unchanged: served
        link.unlink()
        link.symlink_to(lib / "chelsea.jpg")  # the link now shows the cat
        r = c.get(f"/view/{ids[str(link)]}.jpg")
        assert r.status_code == 409 and "changed since it was scanned" in r.text
        shutil.copy(DATA / "rocket.jpg", lib / "chelsea.jpg")  # replaced in place
        assert c.get(f"/thumb/{ids[str(lib / 'chelsea.jpg')]}.jpg").status_code == 409


def test_a_fifo_never_blocks_a_decode_slot(library) -> None:
    lib, db = library
    photos = [str(lib / n) for n in ("coffee.jpg", "chelsea.jpg", "flower.jpg")]
    ids = register(db, photos)
    os.unlink(photos[0])
    os.mkfifo(photos[0])  # after the scan, the photo became a FIFO nobody writes to
    with LiveServer(settings_for(db)) as live, httpx.Client(base_url=live.url, timeout=15) as http:
        for _ in range(6):  # more than the four decode slots
            r = http.get(f"/view/{ids[photos[0]]}.jpg")
            assert r.status_code == 404 and "not a regular file" in r.text
        assert http.get(f"/view/{ids[photos[1]]}.jpg").status_code == 200


def test_files_over_the_cap_are_refused(library, tmp_path: Path) -> None:
    lib, db = library
    big = lib / "big.png"
    Image.effect_noise((1200, 1000), 64).convert("RGB").save(big)  # noise: ~3.6 MB that PNG cannot shrink
    ids = register(db, [str(big)])
    settings = settings_for(db)
    settings.max_file_mb = 1
    app = webapp.create_app(settings, token=TOKEN, port=PORT)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as c:
        r = c.get(f"/view/{ids[str(big)]}.jpg")
        assert r.status_code == 404 and "file too large" in r.text


@pytest.mark.slow
def test_a_slow_render_times_out_and_frees_its_slot(library) -> None:
    lib, db = library
    huge = lib / "huge.png"
    Image.new("RGB", (7000, 7000), (10, 200, 30)).save(huge, compress_level=1)
    ids = register(db, [str(huge), str(lib / "coffee.jpg")])
    with client_for(db, render_timeout_s=0.05) as c:
        r = c.get(f"/view/{ids[str(huge)]}.jpg")
        assert r.status_code == 504 and "took longer than" in r.text
        assert c.get(f"/view/{ids[str(huge)]}.jpg").status_code == 504  # not retried at once
    with client_for(db, render_timeout_s=30) as c:
        assert c.get(f"/thumb/{ids[str(lib / 'coffee.jpg')]}.jpg").status_code == 200


def test_images_may_not_be_embedded_by_other_sites(library) -> None:
    lib, db = library
    ids = register(db, [str(lib / "coffee.jpg")])
    with client_for(db) as c:
        for url in (
            f"/thumb/{ids[str(lib / 'coffee.jpg')]}.jpg",
            f"/view/{ids[str(lib / 'coffee.jpg')]}.jpg",
        ):
            assert c.get(url).headers["cross-origin-resource-policy"] == "same-origin"


# -- item 8 and 9: requests ---------------------------------------------------------------------------------------------
def test_a_deeply_nested_body_is_400_not_500(library) -> None:
    _, db = library
    deep = "[" * 1000 + "]" * 1000
    with client_for(db) as c:
        for url in ("/scan/stop", "/scan/start"):
            r = c.post(
                url, content=deep, headers={"content-type": "application/json", "accept": "application/json"}
            )
            assert r.status_code == 400, url


def test_the_scan_page_shows_only_messages_the_server_made(library, tmp_path: Path) -> None:
    _, db = library
    with client_for(db) as c:
        forged = c.get("/scan", params={"error": "Your session expired: call +1 555 0100"})
        assert "555 0100" not in forged.text
        r = c.post(
            "/scan/start", data={"folder": str(tmp_path / "nope"), "token": TOKEN}, follow_redirects=False
        )
        assert r.status_code == 303
        page = c.get(r.headers["location"])
        assert f"{tmp_path / 'nope'}: no such file or directory" in page.text


def test_pages_past_the_end_are_404(library) -> None:
    lib, db = library
    register(db, [str(lib / "coffee.jpg")], {str(lib / "bad.jpg"): "corrupt"})
    with client_for(db) as c:
        assert c.get("/category/animals").status_code == 200
        for url in (
            "/category/animals?page=2",
            "/errors?page=3",
            "/uncategorized?page=2",
            "/search?q=label&page=9",
        ):
            assert c.get(url).status_code == 404, url
        assert c.get("/uncategorized").status_code == 200  # page 1 exists even when empty


def test_head_is_answered_like_get(library) -> None:
    lib, db = library
    ids = register(db, [str(lib / "coffee.jpg")])
    with LiveServer(settings_for(db)) as live, httpx.Client(base_url=live.url, timeout=15) as http:
        for url in (
            "/",
            "/category/animals",
            f"/photo/{ids[str(lib / 'coffee.jpg')]}",
            f"/thumb/{ids[str(lib / 'coffee.jpg')]}.jpg",
            "/scan",
            "/errors",
        ):
            get, head = http.get(url), http.head(url)
            assert head.status_code == get.status_code == 200, url
            assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]


# -- items 5 and 6: a damaged or foreign catalog -----------------------------------------------------------------------
def test_a_foreign_database_is_not_touched_by_the_gallery(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    before = foreign_database(other)
    with client_for(other) as c:
        r = c.get("/category/animals")
        assert r.status_code == 503 and "not a photosift catalog" in r.text
    assert other.read_bytes() == before


def test_concurrent_threads_check_the_catalog_once(library) -> None:
    lib, db = library
    register(db, [str(lib / "coffee.jpg")])
    pool = webapp.CatalogPool(db)
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(pool.get())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in got}) == 3 and pool.checks == 1
    pool.close()
