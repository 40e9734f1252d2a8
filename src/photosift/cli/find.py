"""The finding commands: search, similar, duplicates, hide.

Each prints what :mod:`photosift.services` returns: ``--format json`` items are shaped like ``results`` items,
plus ``relevance`` and ``why`` (search) or ``similarity`` (similar); duplicates print groups.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from photosift.cli.app import app
from photosift.cli.common import DbOpt, Format, console, errors_to_exit, fail, settings

LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=100_000, help="At most this many photos.")]
FormatOpt = Annotated[Format, typer.Option("--format", help="table, json or csv.")]


@app.command()
def search(
    query: Annotated[str, typer.Argument(help='What to find: "dog", "musical instrument", "beach 2023".')],
    db: DbOpt = None,
    limit: LimitOpt = 50,
    fmt: FormatOpt = Format.table,
) -> None:
    """Find photos by meaning: labels and their WordNet hypernyms, categories, corrections, names, dates."""
    from photosift import services

    with errors_to_exit(usage=(services.FindError,)):
        page = services.search(settings(db), query, limit=limit)
    items = [f.to_dict() for f in page.items]
    if fmt is Format.json:
        print(json.dumps(items, indent=2))
    elif fmt is Format.csv:
        _csv(items, ("path", "relevance", "label", "category", "corrected_category", "taken_at", "why"))
    else:
        _table(items, "relevance", f"{page.total} photos match “{query}”", with_why=True)


@app.command()
def similar(
    path: Annotated[Path, typer.Argument(help="A photo in the catalog.")],
    db: DbOpt = None,
    limit: LimitOpt = 20,
    fmt: FormatOpt = Format.table,
) -> None:
    """Photos that look like PATH (cosine similarity of the stored embeddings), most similar first."""
    from photosift import services

    config = settings(db)
    with errors_to_exit(usage=(services.NotInCatalog,)):
        found = services.similar(config, services.photo_by_path(config, path), limit=limit)
    items = [f.to_dict() for f in found]
    if fmt is Format.json:
        print(json.dumps(items, indent=2))
    elif fmt is Format.csv:
        _csv(items, ("path", "similarity", "label", "category", "taken_at"))
    else:
        _table(items, "similarity", f"photos like {path}")


@app.command()
def duplicates(
    db: DbOpt = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", min=0.5, max=1.0, help="Cosine similarity that makes a pair (default 0.90)."
        ),
    ] = None,
    fmt: FormatOpt = Format.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the groups as JSON to this file.")
    ] = None,
    hide: Annotated[
        bool,
        typer.Option("--hide", help="Mark every photo but each group's keeper hidden (files untouched)."),
    ] = False,
) -> None:
    """Groups of near-duplicate photos (copies, re-encodes, resizes, crops, bursts); never deletes a file."""
    from photosift import services

    config = settings(db)
    with errors_to_exit(usage=(services.FindError,)):
        groups = services.duplicates(config, threshold=threshold)
    items = [g.to_dict() for g in groups]
    if output is not None:
        try:
            output.write_text(json.dumps(items, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            fail(f"{output}: cannot write ({exc.strerror or exc})")
    hidden = 0
    if hide:
        with errors_to_exit():
            hidden = services.set_hidden(config, [r.id for g in groups for r in g.rows[1:]], True)
    if fmt is Format.json:
        print(json.dumps(items, indent=2))
    elif fmt is Format.csv:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(("group", "similarity", "keeper", "path", "size", "width", "height", "taken_at"))
        for n, it in enumerate(items, 1):
            for p in it["photos"]:
                writer.writerow(
                    (
                        n,
                        it["similarity"],
                        p["path"] == it["keeper"],
                        p["path"],
                        p["size"],
                        p["width"],
                        p["height"],
                        p["taken_at"] or "",
                    )
                )
        sys.stdout.write(buf.getvalue())
    else:
        _groups_table(items)
    if hide:
        console(stderr=True).print(f"{hidden} photos hidden (photosift hide PATH --undo shows one again)")


@app.command()
def hide(
    paths: Annotated[list[Path], typer.Argument(help="Photos in the catalog.")],
    undo: Annotated[bool, typer.Option("--undo", help="Show the photos again.")] = False,
    db: DbOpt = None,
) -> None:
    """Hide photos from the gallery, search, similar and duplicates (the files are untouched), or show them."""
    from photosift import services

    config = settings(db)
    with errors_to_exit(usage=(services.NotInCatalog,)):
        ids = [services.photo_by_path(config, p) for p in paths]
        changed = services.set_hidden(config, ids, not undo)
    console().print(f"{changed} photo{'' if changed == 1 else 's'} {'shown again' if undo else 'hidden'}")


def _csv(items: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for it in items:
        writer.writerow(
            ["; ".join(v) if isinstance(v := it.get(c), list) else ("" if v is None else v) for c in columns]
        )
    sys.stdout.write(buf.getvalue())


def _table(items: list[dict[str, Any]], score: str, title: str, with_why: bool = False) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    for col in ("path", score, "label", "category", "taken", *(("why",) if with_why else ())):
        table.add_column(col, overflow="fold")
    for it in items:
        cat = it["corrected_category"] or it["category"] or ""
        taken = (it["taken_at"] or "")[:10] + (" (file)" if it["taken_source"] == "mtime" else "")
        cells = [it["path"], f"{it[score]:.2f}", it["label"] or "", cat, taken]
        if with_why:
            cells.append("; ".join(it["why"]))
        table.add_row(*(Text(c) for c in cells))
    console().print(table)


def _groups_table(items: list[dict[str, Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(items)} groups of near-duplicates", title_justify="left")
    for col in ("group", "similarity", "path", "size", "pixels", "taken", "keep"):
        table.add_column(col, overflow="fold")
    for n, it in enumerate(items, 1):
        for p in it["photos"]:
            pixels = f"{p['width']}×{p['height']}" if p["width"] else ""
            keep = "keep (" + it["keeper_reason"] + ")" if p["path"] == it["keeper"] else ""
            cells = (
                str(n),
                f"{it['similarity']:.3f}",
                p["path"],
                f"{(p['size'] or 0) / 1e6:.2f} MB",
                pixels,
                (p["taken_at"] or "")[:10],
                keep,
            )
            table.add_row(*(Text(c) for c in cells))
    console().print(table)
