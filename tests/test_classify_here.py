"""The gallery's "Classify here" page in Debian's Chromium: photos chosen or dropped are classified in the page
(ONNX Runtime Web, WASM threads), with the same top-1 as native ONNX Runtime and the same categories as
album/rules.py's Categorizer, and no request carries image bytes. Plus the page's headers (CSP, isolation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from photosift.album.rules import Categorizer, load_rules
from photosift.core import imaging
from photosift.toolchain.webcheck import CHROMIUM_ARGS
from photosift.web import app as webapp
from test_web import TOKEN, LiveServer, settings_for
from testkit import DATA, PHOTOS

CHROMIUM = Path("/usr/bin/chromium")
ORT = Path(webapp.__file__).parent / "static" / "ort" / "ort.wasm.min.mjs"


def needs_browser(test: Any) -> Any:
    for mark in (
        pytest.mark.browser,
        pytest.mark.slow,
        pytest.mark.skipif(
            not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"
        ),
        pytest.mark.skipif(not ORT.exists(), reason="ONNX Runtime Web not installed: make web-assets"),
    ):
        test = mark(test)
    return test


def test_only_the_classify_page_gets_wasm_and_isolation(tmp_path: Path) -> None:
    client = TestClient(
        webapp.create_app(settings_for(tmp_path / "c.db"), token=TOKEN), base_url="http://127.0.0.1:8765"
    )
    here = client.get("/classify-here")
    assert here.status_code == 200
    csp = here.headers["content-security-policy"]
    assert "script-src 'self' 'wasm-unsafe-eval'" in csp and "'unsafe-eval'" not in csp.replace(
        "'wasm-unsafe-eval'", ""
    )
    assert here.headers["cross-origin-opener-policy"] == "same-origin"
    assert here.headers["cross-origin-embedder-policy"] == "require-corp"
    for other in ("/scan", "/static/app.js", "/search?q=x"):
        r = client.get(other)
        assert "wasm" not in r.headers["content-security-policy"], other
        assert "cross-origin-embedder-policy" not in r.headers, other
    data = client.get("/classify-here/model.json").json()
    rules = data["rules"]
    assert data["card"]["labels"][0] and len(rules["class_category"]) == len(data["card"]["labels"]) == 1000
    assert rules["categories"][rules["other"]] == "other"
    onnx = client.get("/classify-here/model.onnx")
    assert onnx.status_code == 200 and len(onnx.content) > 1_000_000


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Any:
    playwright_api = pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("here")
    with LiveServer(settings_for(root / "catalog.db")) as live, playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context()
        pg = context.new_page()
        pg.set_default_timeout(120_000)
        pg.problems = []  # type: ignore[attr-defined]
        pg.requests = []  # type: ignore[attr-defined]
        pg.on("console", lambda m: pg.problems.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: pg.problems.append(str(e)))
        context.on("request", lambda r: pg.requests.append(r))  # the page's and its workers'
        pg.goto(live.url + "/classify-here")
        pg.wait_for_selector("#classify-box[data-state=ready]")
        yield pg
        context.close()
        browser.close()


def native_top1(engine: Any, paths: list[Path]) -> list[str]:
    pre = engine.card.preprocess
    logits = engine.run(np.stack([imaging.load_tensor(p, pre) for p in paths]))["logits"]
    return [engine.card.labels[i] for i in logits.argmax(1)]


@needs_browser
def test_chosen_photos_are_classified_in_the_page(page: Any, engine: Any) -> None:
    assert page.evaluate("crossOriginIsolated") is True
    before = len(page.requests)
    page.set_input_files("#classify-input", [str(p) for p in PHOTOS])
    page.wait_for_function(f"() => window.photosiftResults.length >= {len(PHOTOS)}")
    results = page.evaluate("window.photosiftResults")
    assert [r.get("error") for r in results] == [None] * len(PHOTOS)
    by_name = {r["file"]: r for r in results}
    # Top-1 as native ONNX Runtime gives it (the page preprocesses as core.imaging does).
    assert [by_name[p.name]["top5"][0]["label"] for p in PHOTOS] == native_top1(engine, PHOTOS)
    # Categories as album/rules.py decides them from the same probabilities.
    categorizer = Categorizer(load_rules())
    probs = np.asarray([by_name[p.name]["probs"] for p in PHOTOS])
    expected = categorizer.categorize(probs)
    for p, want in zip(PHOTOS, expected, strict=True):
        got = by_name[p.name]["category"]
        assert (got["category"], got["fine"]) == (want.category, want.fine), p.name
        assert got["score"] == pytest.approx(want.score, abs=1e-9), p.name
    shown = page.locator("#classify-results .result").count()
    assert shown == len(PHOTOS)
    # Nothing uploaded: after the model loaded, choosing photos made no HTTP request at all.
    after = [r for r in page.requests[before:] if r.url.startswith("http")]
    assert after == [], [r.url for r in after]
    assert all(r.method == "GET" and r.post_data_buffer is None for r in page.requests)
    assert page.problems == []  # no CSP violation, no script error


@needs_browser
def test_a_dropped_photo_is_classified_too(page: Any, engine: Any) -> None:
    photo = DATA / "coffee.jpg"
    data = photo.read_bytes()
    before_requests = len(page.requests)
    n = page.evaluate("window.photosiftResults.length")
    page.evaluate(
        """({name, bytes}) => {
          const dt = new DataTransfer();
          dt.items.add(new File([new Uint8Array(bytes)], name, {type: "image/jpeg"}));
          document.getElementById("classify-drop").dispatchEvent(
            new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        {"name": "dropped.jpg", "bytes": list(data)},
    )
    page.wait_for_function(f"() => window.photosiftResults.length > {n}")
    result = page.evaluate("window.photosiftResults.at(-1)")
    assert result["file"] == "dropped.jpg"
    assert result["top5"][0]["label"] == native_top1(engine, [photo])[0]
    assert [r.url for r in page.requests[before_requests:] if r.url.startswith("http")] == []
    assert page.problems == []
