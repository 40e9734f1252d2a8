"""The gallery's FastAPI app: pages, thumbnails, corrections, and scans with live progress.

Security model (a local app that can read the whole photo library and start work):

* It binds loopback only (the CLI refuses other hosts: docs/WEB.md says why).
* Photos are addressed by their integer catalog id, never by a path from the request, so only files the
  catalog already knows can be read, and only while they are the file the scan stored (regular file, same
  size, mtime and content hash; :mod:`photosift.web.media`), within the size cap and a time limit. Images
  carry ``Cross-Origin-Resource-Policy: same-origin``. Static files come from the package folder, without
  directory listings.
* Every request must carry one of the expected ``Host`` headers: a page on another site that re-points its
  DNS name at 127.0.0.1 (DNS rebinding) gets 400, so it cannot read the gallery.
* State-changing requests (correct, undo, start and stop a scan) must carry the per-launch token that the pages
  embed; another site cannot read it, so it cannot forge them (no CSRF), and a stale tab after a restart
  gets a clear 403.
* Errors are rendered as short pages or JSON; a traceback goes to the server log, never to the browser.

Handlers that touch SQLite or decode images are plain ``def`` functions or run in a thread pool, so the event
loop keeps serving pages and progress events while a scan runs.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import anyio
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from photosift import services
from photosift.core import imaging
from photosift.core.catalog import Catalog, ResultRow
from photosift.core.config import Settings
from photosift.core.errors import (
    CatalogError,
    ModelError,
    NothingToUndo,
    UnreadableImage,
)
from photosift.core.scanner import printable
from photosift.web import finding, media
from photosift.web.finding import GET_HEAD
from photosift.web.guard import GuardMiddleware, allowed_hosts
from photosift.web.rederive import RederiveJob
from photosift.web.scan import PipelineFactory, ScanError, ScanManager

PAGE_SIZE = 48
SAMPLES_PER_CATEGORY = 4
MAX_FORM_BYTES = 16_384
MAX_PHOTO_ID = 2**63 - 1  # SQLite INTEGER; a larger id would overflow inside sqlite3, not be "not found"
RENDER_TIMEOUT_S = 60.0  # a read or decode that takes longer (a hung network mount) answers 504
RETRY_SLOW_AFTER_S = 60.0  # a photo that timed out is not tried again before this (its thread may still hang)
TOKEN_HEADER = "x-photosift-token"
UNCATEGORIZED = "uncategorized"


class CatalogMissing(CatalogError):
    pass


class CatalogPool:
    """One read-write connection per worker thread (sqlite3 connections must not be shared concurrently)."""

    def __init__(self, path: Path, busy_timeout: float = 30.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.checks = 0  # quick_checks run: one for the pool, not one per thread
        self._local = threading.local()
        self._all: list[Catalog] = []
        self._lock = threading.Lock()

    def get(self) -> Catalog:
        cat: Catalog | None = getattr(self._local, "catalog", None)
        if cat is None:
            if not self.path.is_file():
                raise CatalogMissing(f"{self.path}: no catalog yet")
            with self._lock:  # the first connection checks the file (quick_check); later ones trust it
                verify = self.checks == 0
                # Read-only media: browse it; a correction says why it fails.
                cat = Catalog.for_reading(self.path, self.busy_timeout, verify=verify)
                self.checks = max(self.checks, 1)
                self._all.append(cat)
            self._local.catalog = cat
        return cat

    def close(self) -> None:
        with self._lock:
            for cat in self._all:
                cat.close()
            self._all.clear()


def _month_name(month: str) -> str:
    import calendar

    return calendar.month_name[int(month[5:7])] if len(month) >= 7 and month[5:7].isdigit() else month


def _wants_json(request: Request) -> bool:
    """JSON for scripts and the page's fetch() calls; pages and redirects for plain forms."""
    return (
        "application/json" in request.headers.get("accept", "")
        or request.headers.get("content-type", "").startswith("application/json")
        or request.url.path.startswith("/api/")
    )


def create_app(
    settings: Settings,
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    pipeline_factory: PipelineFactory | None = None,
    render_cache_bytes: int = 48 * 1024 * 1024,
    render_timeout_s: float = RENDER_TIMEOUT_S,
) -> FastAPI:
    """The gallery for the catalog at ``settings.db_path``, served at ``host:port`` (for the Host check)."""
    token = token or secrets.token_urlsafe(32)
    pool = CatalogPool(settings.db_path, settings.busy_timeout_s)
    # Renders have their own memory budget (a scan's pipeline has another): three thumbnails of a 13000² PNG
    # took the server to 9 GB before.
    budget = imaging.MemoryBudget(settings.decode_memory_mb * imaging.MB)
    max_file_bytes = settings.max_file_mb * imaging.MB
    slow: dict[str, float] = {}  # path -> when it may be tried again, after a render timed out
    scans = ScanManager(settings, pipeline_factory)
    rederive = RederiveJob(settings)
    cache = media.RenderCache(render_cache_bytes)
    # Decodes get their own small limiter: a burst of thumbnails queues here instead of taking every
    # threadpool slot that page handlers need.
    decode_limiter = anyio.CapacityLimiter(4)
    package = resources.files("photosift.web")
    templates = Jinja2Templates(directory=str(package / "templates"))
    templates.env.filters["q"] = lambda s: quote(str(s), safe="")
    templates.env.filters["pct"] = lambda x: "" if x is None else f"{100 * float(x):.0f}%"
    templates.env.filters["basename"] = lambda p: Path(p).name
    templates.env.filters["dirname"] = lambda p: str(Path(p).parent)
    # Every value a page shows is valid text: a file name's undecodable bytes as \xNN (they cannot be encoded
    # as UTF-8), control characters escaped. Jinja still escapes HTML after this.
    # (type is str: Markup from macros and |safe is already HTML.)
    templates.env.finalize = lambda v: printable(v) if type(v) is str else v
    templates.env.filters["filesize"] = lambda n: (
        "" if n is None else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"
    )
    templates.env.filters["month_name"] = _month_name

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        rederive.start()  # categories decided by other rules or heads than these: re-derive them meanwhile
        # Build the finding arrays in the background: at 100,000 photos the first search or "more like this"
        # would otherwise wait seconds for them.
        threading.Thread(target=services.warm_finding, args=(settings,), daemon=True).start()
        yield
        await anyio.to_thread.run_sync(rederive.shutdown)
        await anyio.to_thread.run_sync(scans.shutdown)
        pool.close()

    app = FastAPI(title="photosift", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.token = token
    app.state.scans = scans
    app.state.rederive = rederive
    app.state.settings = settings
    app.add_middleware(GuardMiddleware, hosts=allowed_hosts(host, port))
    app.mount("/static", StaticFiles(directory=str(package / "static")), name="static")

    def page(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.update(
            token=token, scan=scans.snapshot(), rederive=rederive.snapshot(), db_path=str(settings.db_path)
        )
        return templates.TemplateResponse(request, name, ctx, status_code=status_code)

    def message(request: Request, status_code: int, title: str, text: str) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": text}, status_code=status_code)
        return page(request, "message.html", status_code, title=title, text=text)

    # -- errors: short pages, never a traceback ----------------------------------------------------------
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        titles = {
            400: "Bad request",
            403: "Not allowed",
            404: "Not found",
            405: "Not allowed",
            409: "Changed",
            413: "Too large",
            504: "Too slow",
        }
        text = exc.detail if isinstance(exc.detail, str) else "request refused"
        return message(request, exc.status_code, titles.get(exc.status_code, "Error"), text)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        where = ", ".join(".".join(str(p) for p in e.get("loc", ())[1:]) or "request" for e in exc.errors())
        return message(request, 422, "Bad request", f"invalid value for {where}")

    @app.exception_handler(CatalogError)
    async def catalog_error(request: Request, exc: CatalogError) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": str(exc)}, status_code=503)
        return page(request, "nocatalog.html", 503, reason=str(exc), missing=isinstance(exc, CatalogMissing))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        return message(
            request, 500, "Something went wrong", "the server hit an error; details are in its log"
        )

    # -- helpers ---------------------------------------------------------------------------------------------
    def known_categories(cat: Catalog) -> list[str]:
        return services.known_categories(settings, cat)

    def photo_or_404(cat: Catalog, photo_id: int) -> ResultRow:
        row = cat.photo(photo_id)
        if row is None or row.status == "missing":
            raise HTTPException(404, f"no photo {photo_id} in the catalog")
        return row

    async def read_form(request: Request) -> dict[str, str]:
        """Form or JSON body, bounded (python-multipart is not needed for urlencoded forms)."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise HTTPException(413, "request body too large")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if ctype == "application/json":
                data = json.loads(body or b"{}")
                if not isinstance(data, dict):
                    raise ValueError
                return {str(k): str(v) for k, v in data.items()}
            if ctype in ("application/x-www-form-urlencoded", ""):
                return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: JSON nested 1000 deep
            raise HTTPException(400, "malformed request body") from None
        raise HTTPException(415, "send a form or JSON")

    def check_token(request: Request, form: dict[str, str]) -> None:
        supplied = request.headers.get(TOKEN_HEADER) or form.get("token") or ""
        if not secrets.compare_digest(supplied.encode(), token.encode()):
            raise HTTPException(403, "missing or stale page token: reload the page and try again")

    # -- pages -------------------------------------------------------------------------------------------------
    @app.api_route("/", response_class=HTMLResponse, methods=GET_HEAD)
    def overview(request: Request) -> Response:
        if not settings.db_path.is_file():
            return page(request, "nocatalog.html", reason="", missing=True)
        cat = pool.get()
        counts = cat.counts(include_hidden=False)
        groups = []
        for raw, n in counts.items():
            name = UNCATEGORIZED if raw == "None" else raw
            if raw == "None":
                samples = cat.results(
                    status="ok", uncategorized=True, include_hidden=False, limit=SAMPLES_PER_CATEGORY
                )
                url = "/uncategorized"
            else:
                samples = cat.results(
                    category=raw, status="ok", include_hidden=False, limit=SAMPLES_PER_CATEGORY
                )
                url = "/category/" + quote(raw, safe="")
            groups.append({"name": name, "count": n, "samples": samples, "url": url})
        return page(request, "overview.html", groups=groups, statuses=cat.status_counts())

    @app.api_route("/category/{name:path}", response_class=HTMLResponse, methods=GET_HEAD)
    def category(
        request: Request, name: str, page_no: int = Query(1, alias="page", ge=1, le=10**6)
    ) -> Response:
        cat = pool.get()
        counts = cat.counts(include_hidden=False)
        if name not in counts and name not in known_categories(cat):
            raise HTTPException(404, f"no category {name!r}")
        nav = finding.pages(counts.get(name, 0), page_no, PAGE_SIZE)
        rows = cat.results(
            category=name, status="ok", include_hidden=False, limit=PAGE_SIZE, offset=nav["offset"]
        )
        return page(
            request,
            "grid.html",
            title=name,
            rows=rows,
            nav=nav,
            base=request.url.path,
            q=None,
            choices=known_categories(cat) if rows else [],
        )

    @app.api_route("/uncategorized", response_class=HTMLResponse, methods=GET_HEAD)
    def uncategorized(request: Request, page_no: int = Query(1, alias="page", ge=1, le=10**6)) -> Response:
        cat = pool.get()
        nav = finding.pages(
            cat.count_results(status="ok", uncategorized=True, include_hidden=False), page_no, PAGE_SIZE
        )
        rows = cat.results(
            status="ok", uncategorized=True, include_hidden=False, limit=PAGE_SIZE, offset=nav["offset"]
        )
        return page(
            request,
            "grid.html",
            title=UNCATEGORIZED,
            rows=rows,
            nav=nav,
            base="/uncategorized",
            q=None,
            choices=known_categories(cat) if rows else [],
        )

    @app.api_route("/errors", response_class=HTMLResponse, methods=GET_HEAD)
    def errors(request: Request, page_no: int = Query(1, alias="page", ge=1, le=10**6)) -> Response:
        cat = pool.get()
        total = cat.status_counts().get("error", 0)
        nav = finding.pages(total, page_no, PAGE_SIZE)
        rows = cat.results(status="error", limit=PAGE_SIZE, offset=nav["offset"])
        return page(request, "errors.html", rows=rows, nav=nav, base="/errors")

    def shown(report: dict[str, Any]) -> dict[str, Any]:
        """A correction's report for JSON: paths as valid Unicode (a name's non-UTF-8 bytes as ``\\xNN``)."""
        moved = [{**m, "path": printable(m["path"] or "")} for m in report["moved"]]
        return {**report, "path": printable(report["path"]), "moved": moved}

    def event_notice(cat: Catalog, row: ResultRow, raw: str | None) -> dict[str, Any] | None:
        """The correction or undo ``raw`` (an event id from the redirect) of this photo, with the photos it moved
        (links) and whether it can still be undone."""
        if not raw or not raw.isdigit() or len(raw) > 18:
            return None
        content_hash = cat.content_hash_of(row.path)
        event = cat.history_event(int(raw))
        if event is None or content_hash is None or event.content_hash != content_hash:
            return None
        photos = cat.photos_of([str(m[0]) for m in event.moved])
        moved = [
            {"id": photos[h][0], "name": Path(photos[h][1]).name, "from": before, "to": after}
            for h, before, after in event.moved
            if h in photos
        ]
        target = cat.undo_target(content_hash)
        undoable = target is not None and target.id == event.id
        return {"event": event, "moved": moved, "undoable": undoable}

    @app.api_route("/photo/{photo_id}", response_class=HTMLResponse, methods=GET_HEAD)
    def photo(request: Request, photo_id: int = PathParam(ge=0, le=MAX_PHOTO_ID)) -> Response:
        cat = pool.get()
        row = photo_or_404(cat, photo_id)
        notice = event_notice(cat, row, request.query_params.get("event"))
        follows = None
        if row.personal_source and row.corrected_category is None:
            found = cat.photos_of([row.personal_source]).get(row.personal_source)
            follows = {"id": found[0], "name": Path(found[1]).name} if found else None
        nav = finding.photo_nav(settings, row, request)
        return page(
            request,
            "photo.html",
            row=row,
            choices=known_categories(cat),
            notice=notice,
            follows=follows,
            **nav,
        )

    @app.post("/photo/{photo_id}/correct")
    async def correct(request: Request, photo_id: int = PathParam(ge=0, le=MAX_PHOTO_ID)) -> Response:
        form = await read_form(request)
        check_token(request, form)
        wanted = form.get("category", "").strip()

        def store() -> dict[str, Any]:
            cat = pool.get()
            row = photo_or_404(cat, photo_id)
            if wanted not in known_categories(cat):
                raise HTTPException(422, f"unknown category {wanted!r}")
            content_hash = cat.content_hash_of(row.path)
            if row.status != "ok" or content_hash is None:
                raise HTTPException(409, "this file could not be read, so it has no category to correct")
            # Exactly what `photosift correct` does: the correction belongs to the content, not the path; only
            # the photos near it are re-decided, and the report names those whose category changed.
            return shown(services.correct_hash(settings, cat, content_hash, wanted, path=row.path).to_dict())

        report = await anyio.to_thread.run_sync(store)
        if _wants_json(request):
            return JSONResponse({"id": photo_id, **report})
        return RedirectResponse(f"/photo/{photo_id}?event={report['event']}", status_code=303)

    @app.post("/photo/{photo_id}/undo")
    async def undo(request: Request, photo_id: int = PathParam(ge=0, le=MAX_PHOTO_ID)) -> Response:
        form = await read_form(request)
        check_token(request, form)
        raw_event = form.get("event", "").strip()
        if raw_event and (not raw_event.isdigit() or len(raw_event) > 18):
            raise HTTPException(422, "invalid value for event")

        def take_back() -> dict[str, Any]:
            cat = pool.get()
            row = photo_or_404(cat, photo_id)
            content_hash = cat.content_hash_of(row.path)
            if content_hash is None:
                raise HTTPException(409, "this file could not be read, so it has no correction")
            try:
                report = services.undo_hash(
                    settings, cat, content_hash, event=int(raw_event) if raw_event else None, path=row.path
                )
            except NothingToUndo as exc:
                raise HTTPException(409, printable(str(exc))) from None
            return shown(report.to_dict())

        report = await anyio.to_thread.run_sync(take_back)
        if _wants_json(request):
            return JSONResponse({"id": photo_id, **report})
        return RedirectResponse(f"/photo/{photo_id}?event={report['event']}", status_code=303)

    @app.get("/api/recategorize")
    def rederive_state() -> dict[str, Any]:
        return rederive.snapshot().to_dict()

    # -- images ------------------------------------------------------------------------------------------------
    async def image(request: Request, photo_id: int, rendition: media.Rendition) -> Response:
        def locate() -> tuple[str, media.Expected]:
            found = pool.get().photo_state(photo_id)
            if found is None or found[1].status != "ok" or found[1].content_hash is None:
                raise HTTPException(404, f"no photo {photo_id} in the catalog")
            path, state = found
            return path, media.Expected(state.content_hash, state.size, state.mtime_ns)  # type: ignore[arg-type]

        path, expected = await anyio.to_thread.run_sync(locate)
        etag = media.etag_for(expected.content_hash, rendition)
        # same-origin: another site's page cannot even embed the gallery's images
        headers = {
            "ETag": etag,
            "Cache-Control": "private, max-age=3600",
            "Cross-Origin-Resource-Policy": "same-origin",
        }
        if media.etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        data = cache.get(expected.content_hash, rendition)  # a render of this very content, checked when made
        if data is None:
            data = await render(photo_id, path, rendition, expected)
            cache.put(expected.content_hash, rendition, data)
        return Response(data, media_type="image/jpeg", headers=headers)

    async def render(photo_id: int, path: str, rendition: media.Rendition, expected: media.Expected) -> bytes:
        if slow.get(path, 0.0) > time.monotonic():
            raise HTTPException(
                504, f"photo {photo_id} took longer than {render_timeout_s:g} s to read; try later"
            )
        try:
            # abandon_on_cancel: a read stuck on a hung mount gives its decode slot back when the time is up
            with anyio.fail_after(render_timeout_s):
                return await anyio.to_thread.run_sync(
                    media.render,
                    path,
                    rendition,
                    expected,
                    budget,
                    max_file_bytes,
                    limiter=decode_limiter,
                    abandon_on_cancel=True,
                )
        except TimeoutError:
            now = time.monotonic()
            for stale in [p for p, until in slow.items() if until <= now]:
                del slow[stale]
            slow[path] = now + RETRY_SLOW_AFTER_S
            raise HTTPException(
                504, f"photo {photo_id} took longer than {render_timeout_s:g} s to read and decode"
            ) from None
        except media.StaleFile as exc:
            raise HTTPException(409, f"photo {photo_id} {exc.reason}") from None
        except UnreadableImage as exc:
            raise HTTPException(404, f"photo {photo_id} cannot be shown ({exc.reason})") from None

    @app.api_route("/thumb/{photo_id}.jpg", methods=GET_HEAD)
    async def thumb(request: Request, photo_id: int = PathParam(ge=0, le=MAX_PHOTO_ID)) -> Response:
        return await image(request, photo_id, media.THUMB)

    @app.api_route("/view/{photo_id}.jpg", methods=GET_HEAD)
    async def view(request: Request, photo_id: int = PathParam(ge=0, le=MAX_PHOTO_ID)) -> Response:
        return await image(request, photo_id, media.VIEW)

    # -- classify here: in the browser, nothing uploaded -----------------------------------------------------
    @app.api_route("/classify-here", response_class=HTMLResponse, methods=GET_HEAD)
    def classify_here(request: Request) -> Response:
        ready = (Path(str(package / "static")) / "ort" / "ort.wasm.min.mjs").is_file()
        return page(request, "classify.html", model=settings.model, ready=ready)

    @functools.cache
    def page_model() -> tuple[Path, dict[str, Any]]:
        # Resolving verifies the model's sha256 and reads its card: once per launch, not per request.
        try:
            return services.page_classifier(settings)
        except ModelError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.api_route("/classify-here/model.json", methods=GET_HEAD)
    def classify_here_model() -> Response:
        return JSONResponse(page_model()[1], headers={"Cache-Control": "no-cache"})

    @app.api_route("/classify-here/model.onnx", methods=GET_HEAD)
    def classify_here_onnx() -> Response:
        headers = {"Cache-Control": "no-cache"}
        return FileResponse(page_model()[0], media_type="application/octet-stream", headers=headers)

    # -- scans ---------------------------------------------------------------------------------------------------
    @app.api_route("/scan", response_class=HTMLResponse, methods=GET_HEAD)
    def scan_page(request: Request) -> Response:
        # Only a message this server produced, by its code: a link cannot make the page say anything else.
        return page(request, "scan.html", error=scans.error_message(request.query_params.get("error", "")))

    @app.api_route("/api/scan", methods=GET_HEAD)
    def scan_state() -> dict[str, Any]:
        return scans.snapshot().to_dict()

    @app.post("/scan/start")
    async def scan_start(request: Request) -> Response:
        form = await read_form(request)
        check_token(request, form)
        try:
            state = await anyio.to_thread.run_sync(scans.start, form.get("folder", ""))
        except ScanError as exc:
            if _wants_json(request):
                return JSONResponse({"detail": str(exc)}, status_code=409)
            return RedirectResponse("/scan?error=" + scans.remember_error(str(exc)), status_code=303)
        if _wants_json(request):
            return JSONResponse(state.to_dict(), status_code=202)
        return RedirectResponse("/scan", status_code=303)

    @app.post("/scan/stop")
    async def scan_stop(request: Request) -> Response:
        form = await read_form(request)
        check_token(request, form)
        stopping = scans.stop()
        if _wants_json(request):
            return JSONResponse({"stopping": stopping, **scans.snapshot().to_dict()})
        return RedirectResponse("/scan", status_code=303)

    @app.get("/scan/events")
    async def scan_events(request: Request) -> StreamingResponse:
        """Server-sent events: the scan state on every change; the stream ends after a final state."""

        async def stream() -> Any:
            yield "retry: 2000\n\n"
            last, quiet = -1, 0.0
            while not await request.is_disconnected():
                state = scans.snapshot()
                if state.version != last:
                    last, quiet = state.version, 0.0
                    yield f"event: progress\ndata: {json.dumps(state.to_dict())}\n\n"
                    if not state.active:
                        return
                elif quiet >= 15:
                    quiet = 0.0
                    yield ": keep-alive\n\n"  # proxies and browsers drop silent streams
                await asyncio.sleep(0.25)
                quiet += 0.25

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    finding.register(
        app,
        finding.Helpers(
            settings=settings,
            page=page,
            catalog=pool.get,
            photo_or_404=photo_or_404,
            read_form=read_form,
            check_token=check_token,
            known_categories=known_categories,
            image=image,
            page_size=lambda: PAGE_SIZE,
        ),
    )
    return app


__all__ = ["create_app"]
