"""The gallery's finding pages: search, more like this, duplicates, the timeline, the full-size view, the
original file, previous/next on the photo page, and bulk corrections with undo.

Everything goes through :mod:`photosift.services` (the CLI's ``search``, ``similar`` and ``duplicates`` answer
from the same functions). Registered on the app by :func:`register`, which gets the app's page helpers so the
security rules (token on every POST, ids never paths) stay those of :mod:`photosift.web.app`.
"""

from __future__ import annotations

import math
import mimetypes
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import anyio
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from photosift import services
from photosift.core.catalog import Catalog, ResultRow
from photosift.core.config import Settings
from photosift.core.errors import UnreadableImage
from photosift.web import media

GET_HEAD = ["GET", "HEAD"]  # every page and image answers HEAD like GET

MAX_ID = 2**63 - 1
GROUPS_PER_PAGE = 20
SIMILAR_ON_PAGE = 8
MAX_BULK = 500
FULL = media.Rendition("f", 4096, 90, cover=False)  # the full-size view: sharp on a 4K screen
_MONTH = re.compile(r"^\d{4}-\d{2}$")


@dataclass
class Helpers:
    """What the app lends these routes (closures of :func:`photosift.web.app.create_app`)."""

    settings: Settings
    page: Callable[..., HTMLResponse]
    catalog: Callable[[], Catalog]
    photo_or_404: Callable[[Catalog, int], ResultRow]
    read_form: Callable[[Request], Awaitable[dict[str, str]]]
    check_token: Callable[[Request, dict[str, str]], None]
    known_categories: Callable[[Catalog], list[str]]
    image: Callable[[Request, int, media.Rendition], Awaitable[Response]]
    page_size: Callable[[], int]


def pages(total: int, page: int, size: int) -> dict[str, Any]:
    """Pager state with the page numbers to show: the first, the last, and two either side of this one. A page
    past the last is 404 (page 1 always exists: an empty grid says "No photos here")."""
    count = max(1, math.ceil(total / size))
    if page > count:
        raise HTTPException(404, f"no page {page}: there {'is' if count == 1 else 'are'} {count}")
    near = {1, count, *range(max(1, page - 2), min(count, page + 2) + 1)}
    numbers: list[int | None] = []
    for n in sorted(near):
        if numbers and n - (numbers[-1] or 0) > 1:
            numbers.append(None)  # a gap: "…"
        numbers.append(n)
    return {"page": page, "pages": count, "total": total, "offset": (page - 1) * size, "numbers": numbers}


def context_ids(settings: Settings, where: str, row: ResultRow, q: str, month: str) -> tuple[list[int], str]:
    """The ordered photo ids the photo page steps through, and the query string that keeps the context."""
    if where == "search" and q:
        return services.search_ids(settings, q), urlencode({"in": "search", "q": q})
    if where == "month" and _MONTH.match(month):
        return services.browse_ids(settings, month=month), urlencode({"in": "month", "m": month})
    return services.browse_ids(settings, category=row.corrected_category or row.category), ""


def register(app: FastAPI, h: Helpers) -> None:
    settings = h.settings

    def tiles_ctx(ctx: str) -> str:
        return ("?" + ctx) if ctx else ""

    @app.api_route("/search", response_class=HTMLResponse, methods=GET_HEAD)
    def search(
        request: Request,
        q: str = Query("", max_length=200),
        page_no: int = Query(1, alias="page", ge=1, le=10**6),
    ) -> Response:
        size = h.page_size()
        nav = pages(0, page_no, size)
        items: list[services.Found] = []
        categories: list[str] = []
        parsed = None
        if q.strip():
            cat = h.catalog()
            needle = q.strip().casefold()
            categories = [c for c in cat.counts() if c != "None" and needle in c.casefold()]
            result = services.search(settings, q, limit=size, offset=(page_no - 1) * size)
            nav = pages(result.total, page_no, size)
            items, parsed = result.items, result.query
        return h.page(
            request,
            "search.html",
            title="Search",
            items=items,
            nav=nav,
            base="/search",
            q=q,
            params={"q": q},
            query=parsed,
            categories=categories,
            ctx=urlencode({"in": "search", "q": q}),
            choices=h.known_categories(h.catalog()) if items else [],
        )

    @app.api_route("/similar/{photo_id}", response_class=HTMLResponse, methods=GET_HEAD)
    def similar_page(request: Request, photo_id: int = PathParam(ge=0, le=MAX_ID)) -> Response:
        row = h.photo_or_404(h.catalog(), photo_id)
        try:
            items = services.similar(settings, photo_id, limit=h.page_size())
        except services.PhotosiftError as exc:
            raise HTTPException(409, str(exc)) from None
        return h.page(request, "similar.html", title="More like this", row=row, items=items)

    @app.api_route("/duplicates", response_class=HTMLResponse, methods=GET_HEAD)
    def duplicates_page(
        request: Request,
        threshold: float = Query(0.90, ge=0.5, le=1.0),
        page_no: int = Query(1, alias="page", ge=1, le=10**6),
    ) -> Response:
        groups = services.duplicates(settings, threshold=threshold)
        nav = pages(len(groups), page_no, GROUPS_PER_PAGE)
        shown = groups[nav["offset"] : nav["offset"] + GROUPS_PER_PAGE]
        params = {"threshold": f"{threshold:g}"} if threshold != 0.90 else {}
        return h.page(
            request,
            "duplicates.html",
            groups=shown,
            nav=nav,
            base="/duplicates",
            params=params,
            threshold=threshold,
            hidden=request.query_params.get("hidden"),
        )

    @app.post("/duplicates/hide")
    async def hide_others(request: Request) -> Response:
        form = await h.read_form(request)
        h.check_token(request, form)
        ids = _ids(form.get("ids", ""))
        changed = await anyio.to_thread.run_sync(
            lambda: services.set_hidden(settings, ids, True, h.catalog())
        )
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"hidden": changed})
        back = form.get("back", "/duplicates")
        return RedirectResponse(
            (back if back.startswith("/duplicates") else "/duplicates") + _sep(back) + f"hidden={changed}",
            303,
        )

    @app.post("/photo/{photo_id}/hidden")
    async def set_hidden(request: Request, photo_id: int = PathParam(ge=0, le=MAX_ID)) -> Response:
        form = await h.read_form(request)
        h.check_token(request, form)
        hide = form.get("hidden", "1") == "1"

        def store() -> None:
            h.photo_or_404(h.catalog(), photo_id)
            services.set_hidden(settings, [photo_id], hide, h.catalog())

        await anyio.to_thread.run_sync(store)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"id": photo_id, "hidden": hide})
        return RedirectResponse(f"/photo/{photo_id}", 303)

    @app.api_route("/timeline", response_class=HTMLResponse, methods=GET_HEAD)
    def timeline(request: Request) -> Response:
        cat = h.catalog()
        months = cat.months()
        years: dict[str, list[dict[str, Any]]] = {}
        for month, n, guessed in months:
            samples = cat.results(
                status="ok", since=month, until=month, include_hidden=False, order="date", limit=6
            )
            years.setdefault(month[:4], []).append(
                {"month": month, "count": n, "guessed": guessed, "samples": samples}
            )
        return h.page(request, "timeline.html", years=years)

    @app.api_route("/timeline/{month}", response_class=HTMLResponse, methods=GET_HEAD)
    def timeline_month(
        request: Request, month: str, page_no: int = Query(1, alias="page", ge=1, le=10**6)
    ) -> Response:
        if not _MONTH.match(month):
            raise HTTPException(404, f"no month {month!r} (YYYY-MM)")
        cat = h.catalog()
        size = h.page_size()
        total = cat.count_results(status="ok", since=month, until=month, include_hidden=False)
        nav = pages(total, page_no, size)
        rows = cat.results(
            status="ok",
            since=month,
            until=month,
            include_hidden=False,
            order="date",
            limit=size,
            offset=nav["offset"],
        )
        return h.page(
            request,
            "grid.html",
            title=month,
            rows=rows,
            nav=nav,
            base=f"/timeline/{month}",
            q=None,
            ctx=urlencode({"in": "month", "m": month}),
            choices=h.known_categories(cat) if rows else [],
            crumb=("Timeline", "/timeline"),
        )

    @app.api_route("/photo/{photo_id}/full", response_class=HTMLResponse, methods=GET_HEAD)
    def full_page(request: Request, photo_id: int = PathParam(ge=0, le=MAX_ID)) -> Response:
        row = h.photo_or_404(h.catalog(), photo_id)
        return h.page(request, "full.html", row=row, back=f"/photo/{photo_id}" + tiles_ctx(request.url.query))

    @app.api_route("/full/{photo_id}.jpg", methods=GET_HEAD)
    async def full_image(request: Request, photo_id: int = PathParam(ge=0, le=MAX_ID)) -> Response:
        return await h.image(request, photo_id, FULL)

    @app.api_route("/original/{photo_id}", methods=GET_HEAD)
    def original(photo_id: int = PathParam(ge=0, le=MAX_ID)) -> Response:
        # The very file the scan stored (regular, same size and mtime), streamed from the descriptor that was
        # checked: never what a swapped symlink, a FIFO or /dev/zero would give.
        h.photo_or_404(h.catalog(), photo_id)  # hidden or missing photos are 404 like everywhere else
        found = h.catalog().photo_state(photo_id)
        if found is None or found[1].status != "ok":
            raise HTTPException(404, f"photo {photo_id}: the file is not there any more")
        path, state = found
        try:
            f = media.open_original(path, state.size, state.mtime_ns)
        except media.StaleFile as exc:
            raise HTTPException(409, f"photo {photo_id} {exc.reason}") from None
        except UnreadableImage as exc:
            raise HTTPException(404, f"photo {photo_id}: {exc.reason}") from None
        name = quote(os.fsencode(Path(path).name))
        headers = {
            "Content-Length": str(state.size),
            "Content-Disposition": f"attachment; filename*=utf-8''{name}",
            "Cross-Origin-Resource-Policy": "same-origin",
        }
        kind = (
            mimetypes.guess_type(os.fsencode(path).decode("utf-8", "replace"))[0]
            or "application/octet-stream"
        )
        return StreamingResponse(media.chunks(f), media_type=kind, headers=headers)

    @app.post("/photos/correct")
    async def bulk_correct(request: Request) -> Response:
        """Many photos to one category (``category`` empty: clear their corrections), or, for undo, each photo
        back to what it was (``restore``: JSON {id: category or null})."""
        import json

        form = await h.read_form(request)
        h.check_token(request, form)
        wanted: dict[int, str | None] = {}
        if "restore" in form:
            try:
                data = json.loads(form["restore"])
                wanted = {int(k): (str(v) if v is not None else None) for k, v in dict(data).items()}
            except (ValueError, TypeError):
                raise HTTPException(422, "malformed restore list") from None
        else:
            category = form.get("category", "").strip() or None
            wanted = {i: category for i in _ids(form.get("ids", ""))}
        if not wanted or len(wanted) > MAX_BULK:
            raise HTTPException(422, f"select between 1 and {MAX_BULK} photos")

        def store() -> dict[str, Any]:
            cat = h.catalog()
            known = h.known_categories(cat)
            changes: list[tuple[str, str | None]] = []
            ids_of: dict[str, int] = {}
            for pid, category in wanted.items():
                row = h.photo_or_404(cat, pid)
                if category is not None and category not in known:
                    raise HTTPException(422, f"unknown category {category!r}")
                if row.status != "ok" or row.content_hash is None:
                    raise HTTPException(
                        409, f"photo {pid} could not be read, so it has no category to correct"
                    )
                changes.append((row.content_hash, category))
                ids_of[row.content_hash] = pid
            previous = services.correct_many(settings, cat, changes)
            return {"changed": len(changes), "previous": {str(ids_of[k]): v for k, v in previous.items()}}

        result = await anyio.to_thread.run_sync(store)
        return JSONResponse(result)


def photo_nav(settings: Settings, row: ResultRow, request: Request) -> dict[str, Any]:
    """Previous/next in the list the user came from, and a few similar photos, for the photo page."""
    where = request.query_params.get("in", "")
    ids, ctx = context_ids(
        settings, where, row, request.query_params.get("q", "")[:200], request.query_params.get("m", "")
    )
    suffix = ("?" + ctx) if ctx else ""
    prev_url = next_url = None
    position = None
    if row.id in ids:
        k = ids.index(row.id)
        position = (k + 1, len(ids))
        if k > 0:
            prev_url = f"/photo/{ids[k - 1]}{suffix}"
        if k + 1 < len(ids):
            next_url = f"/photo/{ids[k + 1]}{suffix}"
    similar: list[services.Found] = []
    if row.status == "ok" and not row.hidden:
        try:
            similar = services.similar(settings, row.id, limit=SIMILAR_ON_PAGE)
        except services.PhotosiftError:
            similar = []
    return {"prev_url": prev_url, "next_url": next_url, "position": position, "ctx": ctx, "similar": similar}


def _ids(text: str) -> list[int]:
    out = []
    for part in text.replace(" ", "").split(","):
        if part:
            if not part.isdigit() or int(part) > MAX_ID:
                raise HTTPException(422, "ids must be photo numbers separated by commas")
            out.append(int(part))
    return out


def _sep(url: str) -> str:
    return "&" if "?" in url else "?"
