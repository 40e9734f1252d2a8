"""The web gallery over a real catalog (real photos classified by the real pipeline and packaged model):
pages, thumbnails, corrections, scans, and the security rules (Host check, token, no path traversal)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient

from photosift import services
from photosift.album.abstract import head_for_model
from photosift.album.decisions import AlbumClassifier
from photosift.album.people import PeopleDetector
from photosift.album.rules import load_rules
from photosift.core.catalog import Catalog, PhotoRecord
from photosift.core.config import Settings
from photosift.run.driver import ClassifyOptions, Pipeline
from photosift.web import app as webapp
from photosift.web import guard, server
from testkit import DATA, PHOTOS, ScanGate

TOKEN = "test-token-123"
PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"
SECRET = "photosift-secret-marker-9f2c"


def make_library(folder: Path) -> Path:
    """The test photos, one EXIF-rotated copy, and one file that is not an image."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in PHOTOS:
        shutil.copy2(p, folder / p.name)
    with Image.open(DATA / "chelsea.jpg") as im:
        exif = Image.Exif()
        exif[0x0112] = 6  # stored sideways: displays rotated 90° clockwise, so a landscape cat turns portrait
        im.save(folder / "rotated.jpg", quality=90, exif=exif)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return folder


def build_catalog(engine: Any, root: Path) -> tuple[Path, Path]:
    """Classify a fresh library into a fresh catalog; returns (db path, photos folder)."""
    photos = make_library(root / "photos")
    db = root / "catalog.db"
    with Catalog(db) as cat:
        album = AlbumClassifier(load_rules(), abstract=head_for_model(engine.model.sha256))
        detector = PeopleDetector()
        pipe = Pipeline(
            engine, cat, album, people=lambda: detector, options=ClassifyOptions(batch_size=8, workers=2)
        )
        summary = pipe.run([str(photos)])
    assert summary.classified == len(list(photos.iterdir())) - 1 and summary.errors == 1
    (root / "secret.txt").write_text(SECRET)
    return db, photos


def settings_for(db: Path) -> Settings:
    return Settings(db=db, data_dir=db.parent / "data", config_dir=db.parent / "config", workers=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """A real uvicorn server in a thread, built the way `photosift serve` builds it."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", **kwargs: Any) -> None:
        # The listening socket is made here and handed to uvicorn, as `photosift serve` does: no port is
        # chosen, released and bound again by someone else in between.
        self.sock = server.listen(host, 0)
        self.port = int(self.sock.getsockname()[1])
        self.host = host
        self.app = webapp.create_app(settings, token=TOKEN, host=host, port=self.port, **kwargs)
        self.server = server.make_server(self.app, host, self.port, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def raw_get(port: int, target: str, host: str | None = None) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (HTTP clients normalise ../ away)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        head = f"GET {target} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\nConnection: close\r\n\r\n"
        s.sendall(head.encode("latin-1"))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.fixture(scope="module")
def library(engine, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_catalog(engine, tmp_path_factory.mktemp("web"))


@pytest.fixture()
def client(library: tuple[Path, Path]) -> Any:
    app = webapp.create_app(settings_for(library[0]), token=TOKEN, port=PORT)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as c:
        yield c


def photo_id(db: Path, name: str) -> int:
    with Catalog(db, readonly=True) as cat:
        pid = next(r.id for r in cat.results() if Path(r.path).name == name)
    return pid


# -- pages ---------------------------------------------------------------------------------------------------
def test_overview_lists_categories_with_counts_and_thumbnails(client: TestClient, library) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    for name in ("animals", "food", "plants", "people"):
        assert f'data-category="{name}"' in r.text
    assert '<img src="/thumb/' in r.text and 'loading="lazy"' in r.text
    assert 'href="/errors">1 unreadable' in r.text


def test_category_grid_is_lazy_and_paginated(client: TestClient, monkeypatch) -> None:
    monkeypatch.setattr(webapp, "PAGE_SIZE", 2)
    first = client.get("/category/people")
    assert first.status_code == 200
    assert first.text.count('class="tile"') == 2 and first.text.count('loading="lazy"') == 2
    assert 'rel="next" href="/category/people?page=2"' in first.text
    second = client.get("/category/people?page=2")
    assert second.status_code == 200 and 'rel="prev"' in second.text
    assert set(_ids(first.text)).isdisjoint(_ids(second.text))
    assert client.get("/category/no-such-category").status_code == 404


def _ids(html: str) -> list[str]:
    return [part.split('"')[0] for part in html.split('href="/photo/')[1:]]


def test_photo_page_explains_the_category(client: TestClient, library) -> None:
    pid = photo_id(library[0], "chelsea.jpg")
    r = client.get(f"/photo/{pid}")
    assert r.status_code == 200
    assert r.text.count("data-score=") == 5 and 'data-effective-category="animals"' in r.text
    assert f'src="/view/{pid}.jpg"' in r.text and f'value="{TOKEN}"' in r.text
    assert '<option value="people"' in r.text


def test_search_by_label_and_category(client: TestClient) -> None:
    by_label = client.get("/search", params={"q": "espresso"})
    assert by_label.status_code == 200 and by_label.text.count('class="tile"') >= 1
    by_category = client.get("/search", params={"q": "plan"})
    assert '<a class="chip" href="/category/plants">plants</a>' in by_category.text
    assert client.get("/search", params={"q": "zzzz-nothing"}).text.count('class="tile"') == 0


def test_search_by_meaning_finds_every_cat_and_steps_through_results(client: TestClient, library) -> None:
    # "cat" is no photo's top-1 label: both cat photos are found through WordNet's hierarchy
    r = client.get("/search", params={"q": "cats"})
    assert r.status_code == 200 and r.text.count('class="tile"') == 2
    assert "a kind of cat" in r.text  # the reason, in the tile's title
    pid = photo_id(library[0], "chelsea.jpg")
    page = client.get(f"/photo/{pid}", params={"in": "search", "q": "cats"})
    assert "of 2" in page.text and ("nav-next" in page.text or "nav-prev" in page.text)
    assert "in=search&amp;q=cats" in page.text  # the context is kept for the next step


def test_photo_page_has_dates_actions_and_more_like_this(client: TestClient, library) -> None:
    pid = photo_id(library[0], "rotated.jpg")
    r = client.get(f"/photo/{pid}")
    assert r.status_code == 200
    assert f'href="/original/{pid}"' in r.text and f'href="/photo/{pid}/full' in r.text
    assert "file date" in r.text and 'id="taken"' in r.text
    # more like this: the rotated copy's original is the first similar photo
    chelsea = photo_id(library[0], "chelsea.jpg")
    strip = r.text.split('class="strip"', 1)[1]
    assert strip.split('href="/photo/', 1)[1].startswith(f"{chelsea}")
    original = client.get(f"/original/{pid}")
    assert original.status_code == 200 and original.content == (library[1] / "rotated.jpg").read_bytes()
    assert "attachment" in original.headers["content-disposition"]
    full = client.get(f"/full/{pid}.jpg")
    assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg"
    assert client.get(f"/photo/{pid}/full").status_code == 200
    assert client.get("/original/999999").status_code == 404


def test_duplicates_page_hides_others_with_the_token(client: TestClient, library) -> None:
    db, photos = library
    assert (
        client.get("/duplicates").text.count('class="dup-group"') == 0
    )  # a sideways copy is another picture
    copy = photos.parent / "copies" / "chelsea-copy.jpg"
    copy.parent.mkdir(exist_ok=True)
    shutil.copy2(photos / "chelsea.jpg", copy)
    with Catalog(db) as cat:  # what a scan of the copy stores: a new path, the same content
        st = copy.stat()
        cat.write_batch(
            [
                PhotoRecord(
                    str(copy), st.st_size, st.st_mtime_ns, cat.content_hash_of(str(photos / "chelsea.jpg"))
                )
            ],
            [],
            "",
            [],
        )
    r = client.get("/duplicates")
    assert r.status_code == 200 and r.text.count('class="dup-group"') == 1
    assert "keep · most pixels" in r.text or "keep · " in r.text
    ids = r.text.split('name="ids" value="', 1)[1].split('"', 1)[0]
    assert client.post("/duplicates/hide", data={"ids": ids}).status_code == 403
    done = client.post("/duplicates/hide", data={"ids": ids, "token": TOKEN}, follow_redirects=False)
    assert done.status_code == 303 and "hidden=1" in done.headers["location"]
    assert client.get("/duplicates").text.count('class="dup-group"') == 0
    hidden_id = int(ids)
    photo = client.get(f"/photo/{hidden_id}")
    assert "Show it again" in photo.text
    back = client.post(
        f"/photo/{hidden_id}/hidden", data={"hidden": "0", "token": TOKEN}, follow_redirects=False
    )
    assert back.status_code == 303 and client.get("/duplicates").text.count('class="dup-group"') == 1
    with Catalog(db) as cat:
        cat.mark_missing([str(copy)])


def test_timeline_and_month_grid(client: TestClient) -> None:
    r = client.get("/timeline")
    assert r.status_code == 200 and 'class="year"' in r.text
    month = r.text.split('data-month="', 1)[1].split('"', 1)[0]
    grid = client.get(f"/timeline/{month}")
    assert grid.status_code == 200 and grid.text.count('class="tile"') >= 10
    assert client.get("/timeline/2023-13-01").status_code == 404


def test_bulk_correct_and_undo(client: TestClient, library) -> None:
    a, b = photo_id(library[0], "brick.jpg"), photo_id(library[0], "text.png")
    headers = {"x-photosift-token": TOKEN, "accept": "application/json"}
    assert client.post("/photos/correct", data={"ids": f"{a},{b}", "category": "food"}).status_code == 403
    r = client.post("/photos/correct", data={"ids": f"{a},{b}", "category": "food"}, headers=headers)
    assert r.status_code == 200 and r.json()["changed"] == 2
    previous = r.json()["previous"]
    with Catalog(library[0], readonly=True) as cat:
        assert {cat.photo(a).corrected_category, cat.photo(b).corrected_category} == {"food"}  # type: ignore[union-attr]
    undo = client.post("/photos/correct", data={"restore": json.dumps(previous)}, headers=headers)
    assert undo.status_code == 200
    with Catalog(library[0], readonly=True) as cat:
        assert {cat.photo(a).corrected_category, cat.photo(b).corrected_category} == {None}  # type: ignore[union-attr]
    bad = client.post("/photos/correct", data={"ids": f"{a}", "category": "nope"}, headers=headers)
    assert bad.status_code == 422
    assert (
        client.post(
            "/photos/correct", data={"ids": "1;drop", "category": "food"}, headers=headers
        ).status_code
        == 422
    )


def test_user_category_names_are_shown_as_typed(client: TestClient) -> None:
    css = client.get("/static/style.css").text
    assert "capitalize" not in css.split(".progress-box .state")[0]


def test_errors_page_lists_unreadable_files_with_reasons(client: TestClient) -> None:
    r = client.get("/errors")
    assert r.status_code == 200 and "broken.jpg" in r.text and "corrupt or unsupported image data" in r.text


# -- images --------------------------------------------------------------------------------------------------
def test_thumbnail_is_upright_small_jpeg_with_cache_headers(client: TestClient, library) -> None:
    import io

    pid = photo_id(library[0], "rotated.jpg")
    r = client.get(f"/thumb/{pid}.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.headers["cache-control"].startswith("private") and "max-age" in r.headers["cache-control"]
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.format == "JPEG" and im.height > im.width  # EXIF orientation applied
        assert min(im.size) <= 320
    again = client.get(f"/thumb/{pid}.jpg", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and not again.content
    view = client.get(f"/view/{pid}.jpg")
    assert view.status_code == 200 and view.headers["etag"] != r.headers["etag"]


def test_no_thumbnail_files_are_written(client: TestClient, library) -> None:
    root = library[0].parent
    before = sorted(p for p in root.rglob("*") if p.is_file())
    for pid in range(1, 14):
        client.get(f"/thumb/{pid}.jpg")
    after = sorted(p for p in root.rglob("*") if p.is_file())
    assert [p for p in after if p not in before and "catalog.db" not in p.name] == []


# -- corrections -----------------------------------------------------------------------------------------------
def test_correction_needs_the_token(client: TestClient, library) -> None:
    pid = photo_id(library[0], "coffee.jpg")
    for headers, data in (({}, {"category": "people"}), ({}, {"category": "people", "token": "wrong"})):
        r = client.post(f"/photo/{pid}/correct", data=data, headers=headers, follow_redirects=False)
        assert r.status_code == 403
    r = client.post(
        f"/photo/{pid}/correct", json={"category": "people"}, headers={"X-Photosift-Token": "nope"}
    )
    assert r.status_code == 403
    with Catalog(library[0], readonly=True) as cat:
        assert cat.photo(pid).corrected_category is None  # type: ignore[union-attr]


def test_correction_is_stored_like_the_cli(client: TestClient, library) -> None:
    from typer.testing import CliRunner

    from photosift.cli import app as cli

    db = library[0]
    pid = photo_id(db, "flower.jpg")
    bad = client.post(f"/photo/{pid}/correct", data={"category": "nonsense", "token": TOKEN})
    assert bad.status_code == 422
    r = client.post(
        f"/photo/{pid}/correct", data={"category": "people", "token": TOKEN}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"].startswith(f"/photo/{pid}?event=")
    assert "Saved." in client.get(r.headers["location"]).text
    with Catalog(db) as cat:
        cat.add_user_category("holidays")
    r = client.post(
        f"/photo/{pid}/correct",
        json={"category": "holidays"},
        headers={"X-Photosift-Token": TOKEN, "Accept": "application/json"},
    )
    assert r.status_code == 200 and r.json()["corrected_category"] == "holidays"
    out = CliRunner().invoke(cli, ["results", "--db", str(db), "--format", "json"])
    row = next(it for it in json.loads(out.stdout) if it["path"].endswith("flower.jpg"))
    assert row["corrected_category"] == "holidays"
    for _ in range(2):  # back to no correction, as the other tests expect
        assert client.post(f"/photo/{pid}/undo", data={"token": TOKEN}).status_code == 200
    with Catalog(db, readonly=True) as cat:
        assert cat.photo(pid).corrected_category is None  # type: ignore[union-attr]


def test_a_correction_names_the_photos_it_moved_and_can_be_undone(client: TestClient, library) -> None:
    db = library[0]
    pid, twin = photo_id(db, "chelsea.jpg"), photo_id(db, "rotated.jpg")  # the same cat, stored sideways
    r = client.post(f"/photo/{pid}/correct", json={"category": "food"}, headers={"X-Photosift-Token": TOKEN})
    assert r.status_code == 200
    report = r.json()
    assert [(m["id"], m["from"], m["to"]) for m in report["moved"]] == [(twin, "animals", "food")]
    page = client.get(f"/photo/{pid}?event={report['event']}").text
    assert "1 other photo moved" in page and f'href="/photo/{twin}">rotated.jpg</a>' in page
    assert f'action="/photo/{pid}/undo"' in page and f'name="event" value="{report["event"]}"' in page
    twin_page = client.get(f"/photo/{twin}").text  # the moved photo says why
    assert "which you corrected" in twin_page and f'href="/photo/{pid}">chelsea.jpg</a>' in twin_page
    # Undo is a state change: the page token, like every other form.
    form = {"event": str(report["event"])}
    assert client.post(f"/photo/{pid}/undo", data=form, follow_redirects=False).status_code == 403
    r = client.post(f"/photo/{pid}/undo", data={**form, "token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303
    page = client.get(r.headers["location"]).text
    assert "Undone" in page and "rotated.jpg" in page and "Undo</button>" not in page
    with Catalog(db, readonly=True) as cat:
        assert cat.photo(pid).corrected_category is None  # type: ignore[union-attr]
        assert cat.photo(twin).category == "animals"  # type: ignore[union-attr]
    again = client.post(f"/photo/{pid}/undo", data={**form, "token": TOKEN})
    assert again.status_code == 409 and "undone" in again.text


def test_stale_categories_are_rederived_in_the_background(library, tmp_path: Path) -> None:
    with Catalog(library[0]) as cat:
        cat.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db = tmp_path / "catalog.db"
    shutil.copy2(library[0], db)
    with Catalog(db) as cat:
        before = {r.path: r.category for r in cat.results()}
        cat.db.execute("UPDATE results SET decided_by = 'rules of an older photosift'")
    app = webapp.create_app(settings_for(db), token=TOKEN, port=PORT)
    with TestClient(app, base_url=BASE) as c:  # starting the gallery starts the job
        deadline = time.monotonic() + 60
        while (state := c.get("/api/recategorize").json())["state"] in ("idle", "running"):
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
    assert state["state"] == "done" and state["done"] == state["total"] == len(before) - 1  # not broken.jpg
    with Catalog(db) as cat:
        assert services.stale_results(settings_for(db), cat) == 0
        assert {r.path: r.category for r in cat.results()} == before


def test_an_unreadable_file_cannot_be_corrected(client: TestClient, library) -> None:
    pid = photo_id(library[0], "broken.jpg")
    r = client.post(f"/photo/{pid}/correct", data={"category": "people", "token": TOKEN})
    assert r.status_code == 409


# -- scans -----------------------------------------------------------------------------------------------------
def test_scan_builds_the_engine_lazily_runs_and_streams_progress(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    app = webapp.create_app(settings_for(db), token=TOKEN, port=PORT)
    folder = make_library(tmp_path / "new")
    with TestClient(app, base_url=BASE) as c:
        assert "No catalog yet" in c.get("/").text  # friendly page, before any scan
        assert c.post("/scan/start", data={"folder": str(folder)}).status_code == 403
        assert c.app.state.scans._pipeline is None  # no engine until the first scan
        r = c.post(
            "/scan/start", data={"folder": str(tmp_path / "nope"), "token": TOKEN}, follow_redirects=False
        )
        assert r.status_code == 303 and "no such file or directory" in c.get(r.headers["location"]).text
        r = c.post(
            "/scan/start",
            data={"folder": str(folder)},
            headers={"X-Photosift-Token": TOKEN, "Accept": "application/json"},
        )
        assert r.status_code == 202 and r.json()["active"]
        with c.stream("GET", "/scan/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            states = [json.loads(line[5:]) for line in events.iter_lines() if line.startswith("data:")]
        assert states[-1]["state"] == "done" and states[-1]["files_done"] == states[-1]["files_total"]
        assert c.get("/api/scan").json()["classified"] == 11
        assert "11 photos" in c.get("/").text
        stop = c.post("/scan/stop", headers={"X-Photosift-Token": TOKEN, "Accept": "application/json"})
        assert stop.json()["stopping"] is False  # nothing to stop
    with Catalog(db, readonly=True) as cat:
        assert cat.status_counts() == {"ok": 11, "error": 1}


def test_one_scan_at_a_time(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    """While a scan is held inside its first batch, a second start is refused (409 / the form's error page) and
    leaves the running scan alone; once it has finished, the same start is accepted."""
    gate = ScanGate()
    db = tmp_path / "c.db"
    app = webapp.create_app(settings_for(db), token=TOKEN, port=PORT, pipeline_factory=gate.factory(engine))
    folder, other = make_library(tmp_path / "lib"), make_library(tmp_path / "other")
    as_json = {"X-Photosift-Token": TOKEN, "Accept": "application/json"}
    with TestClient(app, base_url=BASE) as c:
        assert c.post("/scan/start", data={"folder": str(folder)}, headers=as_json).status_code == 202
        assert gate.entered.wait(60)
        busy = c.post("/scan/start", data={"folder": str(other)}, headers=as_json)
        assert busy.status_code == 409 and "already running" in busy.json()["detail"]
        form = c.post("/scan/start", data={"folder": str(other), "token": TOKEN}, follow_redirects=False)
        assert form.status_code == 303 and "already running" in c.get(form.headers["location"]).text
        state = c.get("/api/scan").json()
        assert state["active"] and state["folder"] == str(folder) and not gate.release.is_set()
        gate.release.set()
        deadline = time.monotonic() + 60
        while (state := c.get("/api/scan").json())["active"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state["state"] == "done" and state["folder"] == str(folder)
        again = c.post("/scan/start", data={"folder": str(other)}, headers=as_json)
        assert again.status_code == 202 and again.json()["folder"] == str(other)
        while (state := c.get("/api/scan").json())["active"] and time.monotonic() < deadline + 60:
            time.sleep(0.05)
        assert state["state"] == "done" and state["folder"] == str(other)


def test_stop_cancels_a_running_scan(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    gate = ScanGate()  # holds the first batch until the test has pressed stop
    db = tmp_path / "c.db"
    app = webapp.create_app(settings_for(db), token=TOKEN, port=PORT, pipeline_factory=gate.factory(engine))
    folder = make_library(tmp_path / "lib")
    with TestClient(app, base_url=BASE) as c:
        c.post("/scan/start", data={"folder": str(folder), "token": TOKEN})
        assert gate.entered.wait(20)
        assert c.post("/scan/stop", data={}).status_code == 403
        r = c.post("/scan/stop", data={"token": TOKEN}, headers={"Accept": "application/json"})
        assert r.json()["stopping"] is True and r.json()["state"] == "stopping"
        # Pages answer while the scan is held inside its batch: the request returns before the gate opens
        # (were it queued behind the scan, it would not return until the test released the gate).
        answered: list[int] = []
        reader = threading.Thread(target=lambda: answered.append(c.get("/").status_code))
        reader.start()
        reader.join(60)
        assert answered == [200] and not gate.release.is_set()
        gate.release.set()
        deadline = time.monotonic() + 20
        while (state := c.get("/api/scan").json())["active"] and time.monotonic() < deadline:
            time.sleep(0.05)
    assert state["state"] == "stopped" and state["files_done"] < 12
    assert state["message"].startswith(
        f"stopped after {state['files_done']} of {state['files_total']} files ("
    )


# -- security ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "ok"),
    [
        (f"127.0.0.1:{PORT}", True),
        (f"localhost:{PORT}", True),
        (f"[::1]:{PORT}", True),
        (f"LOCALHOST:{PORT}", True),
        ("evil.example:8765", False),
        ("127.0.0.1:9999", False),
        ("127.0.0.1", False),
        ("", False),
    ],
)
def test_unexpected_host_headers_are_rejected(client: TestClient, host: str, ok: bool) -> None:
    r = client.get("/", headers={"Host": host})
    assert r.status_code == (200 if ok else 400)
    assert client.get("/thumb/2.jpg", headers={"Host": host}).status_code in ((200,) if ok else (400,))


def test_security_headers(client: TestClient) -> None:
    r = client.get("/")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    "url",
    [
        "/photo/abc",
        "/photo/-1",
        "/photo/99999999999999999999999999",
        "/thumb/1.5.jpg",
        "/category/animals?page=0",
        "/category/animals?page=x",
        "/search?q=" + "x" * 500,
    ],
)
def test_bad_parameters_give_422_pages(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert r.status_code == 422 and "Traceback" not in r.text and "Bad request" in r.text


def test_unknown_ids_give_404(client: TestClient) -> None:
    assert client.get("/photo/424242").status_code == 404
    assert client.get("/thumb/424242.jpg").status_code == 404
    assert client.get("/view/0.jpg").status_code == 404
    assert client.get("/no/such/page").status_code == 404


def test_missing_catalog_gives_a_friendly_page(tmp_path: Path) -> None:
    app = webapp.create_app(settings_for(tmp_path / "absent.db"), token=TOKEN, port=PORT)
    with TestClient(app, base_url=BASE) as c:
        assert "No catalog yet" in c.get("/").text
        r = c.get("/category/animals")
        assert r.status_code == 503 and "No catalog yet" in r.text
        assert c.get("/api/scan").status_code == 200
    assert not (tmp_path / "absent.db").exists()


TRAVERSALS = [
    "/static/../../../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2fetc%2fpasswd",
    "/static//etc/passwd",
    "/static/",
    "/static",
    "/thumb/1/../../../etc/passwd",
    "/thumb/..%2f..%2fetc%2fpasswd.jpg",
    "/thumb/%2Fetc%2Fpasswd.jpg",
    "/photo/1/../../etc/passwd",
    "/photo/1%2f..%2f..%2fetc%2fpasswd",
    "/view/1.jpg/../../../../etc/passwd",
    "/category/../../../etc/passwd",
    "/category/..%2f..%2fsecret.txt",
    "//etc/passwd",
    "/etc/passwd",
    "/..%5c..%5c..%5cetc%5cpasswd",
]


def test_path_traversal_never_serves_files_outside_the_catalog(library) -> None:
    db, _ = library
    secret = str(db.parent / "secret.txt")
    targets = [*TRAVERSALS, secret, "/static/" + secret, "/thumb/" + secret, "/static/../../" + secret]
    with LiveServer(settings_for(db)) as live:
        for target in targets:
            status, body = raw_get(live.port, target)
            assert status in (400, 404, 405, 422) or (target, status) == ("/static", 307), target
            assert b"root:" not in body and SECRET.encode() not in body, target
            assert b"Traceback" not in body and b"Index of" not in body, target
        status, _ = raw_get(live.port, "/static/style.css")
        assert status == 200  # the static mount itself works


def test_server_binds_loopback_by_default(library) -> None:
    with LiveServer(settings_for(library[0])) as live:
        socks = [s for srv in live.server.servers for s in srv.sockets]
        assert socks and all(s.getsockname()[0] == "127.0.0.1" for s in socks)
    assert guard.is_loopback_host("127.0.0.1") and guard.is_loopback_host("::1")
    assert guard.is_loopback_host("localhost") and not guard.is_loopback_host("0.0.0.0")


def test_serve_command_defaults_to_loopback_and_refuses_other_hosts(monkeypatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from photosift.cli import app as cli

    calls: list[tuple[str, int]] = []

    def fake_run(settings: Settings, host: str, port: int, sock: socket.socket) -> None:
        calls.append((host, port))
        sock.close()

    monkeypatch.setattr(server, "run_server", fake_run)
    port = free_port()  # only recorded by fake_run, never bound
    quiet = CliRunner().invoke(cli, ["serve", "--db", str(tmp_path / "c.db"), "--port", str(port)])
    assert quiet.exit_code == 0 and calls[-1] == ("127.0.0.1", port) and "error" not in quiet.output
    for host in ("0.0.0.0", "::", "192.168.1.20"):
        loud = CliRunner().invoke(cli, ["serve", "--db", str(tmp_path / "c.db"), "--host", host])
        assert loud.exit_code == 2 and "ssh -L" in loud.output and len(calls) == 1
