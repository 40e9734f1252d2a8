"""The gallery in Debian's Chromium, driven by Playwright: browse, open a photo, correct it and undo, scan and
stop.

A real uvicorn server runs in a thread over a catalog made by the real pipeline from tests/data. Each page is
screenshotted into PHOTOSIFT_ARTIFACTS (default: <repo>/artifacts/screenshots, git-ignored).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"
    ),
]
playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("fastapi")

from photosift.core.catalog import Catalog  # noqa: E402
from test_web import LiveServer, build_catalog, settings_for  # noqa: E402
from testkit import DATA, ScanGate  # noqa: E402

ARTIFACTS = Path(
    os.environ.get("PHOTOSIFT_ARTIFACTS") or Path(__file__).parents[1] / "artifacts" / "screenshots"
)


def make_big_folder(folder: Path, n: int) -> Path:
    """n distinct small photos (crops, mirrors, rotations of the test photos), so each needs inference."""
    folder.mkdir(parents=True)
    sources = [Image.open(p).convert("RGB") for p in sorted(DATA.glob("*.jpg"))]
    for i in range(n):
        im = sources[i % len(sources)]
        w, h = im.size
        k = 1 + i // len(sources)
        im = im.crop((k % 7, k % 5, w - k % 11, h - k % 3)).rotate(k % 4 * 90, expand=True)
        if k % 2:
            im = ImageOps.mirror(im)
        im.save(folder / f"p{i:04d}.jpg", quality=85)
    return folder


# The gallery's scans run the real pipeline with one gate: the second batch of inference waits for it, so the
# scan the test stops is certainly running when Stop is clicked (no race against 240 photos).
SCAN_GATE = ScanGate(at=2)


@pytest.fixture(scope="module")
def gallery(engine, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("browser")
    db, _ = build_catalog(engine, root)
    big = make_big_folder(root / "big", 240)
    with LiveServer(settings_for(db), pipeline_factory=SCAN_GATE.factory(engine, batch_size=4)) as live:
        yield live, db, big
    SCAN_GATE.release.set()


@pytest.fixture(scope="module")
def page(gallery) -> Any:
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        pg = context.new_page()
        pg.set_default_timeout(15_000)
        problems: list[str] = []
        pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: problems.append(str(e)))
        pg.problems = problems  # type: ignore[attr-defined]
        yield pg
        context.close()
        browser.close()


def shot(pg: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def wait_for_images(pg: Any) -> None:
    pg.wait_for_function(
        "() => [...document.images].filter(i => i.getBoundingClientRect().top < innerHeight)"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )


def test_browse_open_and_correct(gallery, page) -> None:
    live, db, _ = gallery
    page.goto(live.url + "/")
    assert page.locator(".card").count() >= 3
    wait_for_images(page)
    shot(page, "1-overview")

    page.click('.card[data-category="animals"]')
    page.wait_for_url(re.compile(r"/category/animals$"))
    assert page.locator(".tile img[loading=lazy]").count() >= 2
    wait_for_images(page)
    shot(page, "2-category")

    page.locator(".tile").first.click()
    page.wait_for_url(re.compile(r"/photo/\d+$"))
    photo_id = int(page.url.rsplit("/", 1)[1])
    wait_for_images(page)
    widths = page.eval_on_selector_all(".bars [data-score]", "els => els.map(e => e.style.width)")
    assert len(widths) == 5 and all(w.endswith("%") for w in widths)  # score bars painted (CSP-safe JS)
    shot(page, "3-photo")

    page.select_option("form.correct select", "people")
    page.click("form.correct button")
    page.wait_for_selector(".notice")
    assert page.text_content(".cat-name").strip() == "people"
    assert page.locator(".tag", has_text="corrected").count() == 1
    notice = page.inner_text(".notice")
    assert "1 other photo moved" in notice and "animals → people" in notice  # the cat's rotated twin followed
    shot(page, "4-photo-corrected")
    with Catalog(db, readonly=True) as cat:
        assert cat.photo(photo_id).corrected_category == "people"  # type: ignore[union-attr]
    page.click("form.undo button")  # a form POST with the page token, like Save
    page.wait_for_selector(".notice >> text=Undone")
    assert page.text_content(".cat-name").strip() == "animals" and page.locator("form.undo").count() == 0
    shot(page, "4b-photo-undone")
    with Catalog(db, readonly=True) as cat:
        assert cat.photo(photo_id).corrected_category is None  # type: ignore[union-attr]

    page.fill("header form.search input", "espresso")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/search\?q=espresso"))
    assert page.locator(".tile").count() >= 1
    wait_for_images(page)
    shot(page, "5-search")

    page.click("text=Unreadable")
    page.wait_for_selector("table.errors")
    assert "broken.jpg" in page.inner_text("table.errors")
    shot(page, "6-errors")

    page.goto(live.url + "/photo/999999")
    assert "Not found" in page.inner_text("h1")
    shot(page, "8-not-found")
    page.problems.remove("Failed to load resource: the server responded with a status of 404 (Not Found)")
    assert page.problems == []  # no CSP violations, no JS errors, no other failed loads


def test_start_watch_and_stop_a_scan(gallery, page) -> None:
    live, db, big = gallery
    page.problems.clear()  # type: ignore[attr-defined]
    page.goto(live.url + "/scan")
    page.fill("#scan-start input[name=folder]", str(big))
    page.click("#scan-start button")
    # Live progress over server-sent events: files done climbs while the scan runs.
    page.wait_for_function(
        "() => { const [d] = document.getElementById('scan-files').textContent.split('/').map(Number);"
        " return d > 0 && document.getElementById('scan-box').dataset.state === 'running'; }",
        timeout=60_000,
    )
    assert page.locator("#scan-stop button").is_enabled()
    shot(page, "7-scan-running")
    page.click("#scan-stop button")
    page.wait_for_function("() => document.getElementById('scan-box').dataset.state === 'stopping'")
    SCAN_GATE.release.set()  # the held batch finishes; the scan stops after it
    page.wait_for_function(
        "() => ['stopped', 'done'].includes(document.getElementById('scan-box').dataset.state)",
        timeout=60_000,
    )
    assert page.text_content("#scan-state") == "stopped"
    assert "stopped" in page.inner_text("#scan-message")
    shot(page, "7-scan-stopped")
    with Catalog(db, readonly=True) as cat:
        scanned = [r for r in cat.results() if r.path.startswith(str(big))]
    assert 4 <= len(scanned) <= 4 + 4 + 8  # the first batch, the held one, and at most the files in flight
    assert page.problems == []  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def finding(engine, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A library with a near-duplicate (a re-encoded, resized copy) and a 240-character file name."""
    from photosift.album.decisions import AlbumClassifier
    from photosift.album.rules import load_rules
    from photosift.run.driver import ClassifyOptions, Pipeline
    from test_web import make_library

    root = tmp_path_factory.mktemp("finding")
    photos = make_library(root / "photos")
    (photos / "broken.jpg").unlink()
    with Image.open(DATA / "coffee.jpg") as im:
        im.resize((im.width * 2 // 3, im.height * 2 // 3)).save(photos / "coffee-small.jpg", quality=70)
    long_name = ("a-very-long-holiday-file-name-" * 8)[:236] + ".jpg"
    (photos / long_name).write_bytes((DATA / "flower.jpg").read_bytes())
    db = root / "catalog.db"
    with Catalog(db) as cat:
        Pipeline(engine, cat, AlbumClassifier(load_rules()), options=ClassifyOptions(batch_size=8)).run(
            [str(photos)]
        )
    with LiveServer(settings_for(db)) as live:
        yield live, db, photos, long_name


def test_arrow_keys_bulk_correction_duplicates_and_phone_layout(finding, page) -> None:
    live, db, photos, long_name = finding
    page.problems.clear()  # type: ignore[attr-defined]
    # Search by meaning, then step through the results with the arrow keys.
    page.goto(live.url + "/search?q=cats")
    assert page.locator(".tile").count() == 2
    wait_for_images(page)
    shot(page, "10-search-cats")
    page.locator(".tile-link").first.click()
    page.wait_for_url(re.compile(r"/photo/\d+\?in=search"))
    first = page.url
    page.keyboard.press("ArrowRight")
    page.wait_for_url(lambda url: url != first and "/photo/" in url)
    assert "2 of 2" in page.inner_text(".photo-nav")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(first)
    page.keyboard.press("f")
    page.wait_for_url(re.compile(r"/photo/\d+/full"))
    page.wait_for_selector("#full-photo img")
    shot(page, "11-full-view")
    page.keyboard.press("Escape")
    page.wait_for_url(first)

    # Bulk: select two photos on a grid page, correct them in one go, then undo.
    page.goto(live.url + "/category/documents")
    tiles = page.locator(".tile .pick input")
    assert tiles.count() >= 2
    tiles.nth(0).check()
    tiles.nth(1).check()
    assert page.inner_text("#bulk-count") == "2 selected"
    ids = [int(page.locator(".tile").nth(i).get_attribute("data-id")) for i in range(2)]
    page.select_option("#bulk select", "food")
    page.click("#bulk button[type=submit]")
    page.wait_for_selector("#bulk-done:not([hidden])")
    assert "2 photos corrected to food" in page.inner_text("#bulk-msg")
    shot(page, "12-bulk-corrected")
    with Catalog(db, readonly=True) as cat:
        assert {cat.photo(i).corrected_category for i in ids} == {"food"}  # type: ignore[union-attr]
    page.click("#bulk-undo")
    page.wait_for_function("() => document.getElementById('bulk-msg').textContent === 'Undone.'")
    with Catalog(db, readonly=True) as cat:
        assert {cat.photo(i).corrected_category for i in ids} == {None}  # type: ignore[union-attr]

    # Duplicates: the resized copy beside its original (the original suggested as keeper), and the flower's
    # byte-identical copy under the long name.
    page.goto(live.url + "/duplicates")
    assert page.locator(".dup-group").count() == 2
    coffee = page.locator(".dup-group", has_text="coffee-small.jpg")
    assert coffee.locator(".dup").count() == 2 and "coffee.jpg" in coffee.locator(".dup.keeper").inner_text()
    wait_for_images(page)
    shot(page, "13-duplicates")

    # A phone: the header (search box included) fits 390 px, and a 240-character name wraps.
    phone = page.context.browser.new_context(viewport={"width": 390, "height": 844})
    mobile = phone.new_page()
    for url in ("/", "/search?q=food"):
        mobile.goto(live.url + url)
        box = mobile.locator("header form.search input").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        assert mobile.evaluate("document.documentElement.scrollWidth") <= 390
    with Catalog(db, readonly=True) as cat:
        long_id = cat.photo_id(str(photos / long_name))
    mobile.goto(f"{live.url}/photo/{long_id}")
    assert mobile.evaluate("document.documentElement.scrollWidth") <= 390
    shot(mobile, "14-phone-photo-long-name")
    mobile.goto(live.url + "/search?q=food")
    shot(mobile, "15-phone-search")
    phone.close()
    assert page.problems == []  # type: ignore[attr-defined]
