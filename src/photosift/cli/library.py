"""The library commands: classify, results, correct, recategorize, doctor."""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from photosift.cli.app import app
from photosift.cli.common import (
    DbOpt,
    EngineOpt,
    Format,
    JsonOpt,
    RayAddressOpt,
    RichProgress,
    RulesOpt,
    console,
    engine_settings,
    errors_to_exit,
    fail,
    settings,
    text,
)
from photosift.core.config import Settings
from photosift.core.errors import UnknownCategory
from photosift.core.scanner import printable

if TYPE_CHECKING:
    from photosift import services
    from photosift.run.driver import RunSummary


_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


class SortBy(str, Enum):
    path = "path"
    date = "date"


class Provider(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    tensorrt = "tensorrt"
    openvino = "openvino"
    coreml = "coreml"
    dml = "dml"


@app.command()
def classify(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to classify (folders recursively).")],
    db: DbOpt = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name or path to an .onnx file.")] = None,
    provider: Annotated[
        Provider | None,
        typer.Option("--provider", help="Execution provider (default: PHOTOSIFT_PROVIDER or auto)."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, max=1024)] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            max=100_000,
            help="Decode threads (local engine); inference workers (ray engine; default: autoscaled).",
        ),
    ] = None,
    retry_errors: Annotated[
        bool, typer.Option("--retry-errors", help="Decode files that failed before again.")
    ] = False,
    people: Annotated[
        bool | None,
        typer.Option("--people/--no-people", help="Detect faces for the people category (default on)."),
    ] = None,
    rules: RulesOpt = None,
    gpu_decode: Annotated[
        bool | None,
        typer.Option("--gpu-decode", help="Decode JPEGs on an NVIDIA GPU (nvJPEG) when possible."),
    ] = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    cpus_per_worker: Annotated[
        float | None,
        typer.Option("--cpus-per-worker", min=0.01, help="Ray engine: CPUs each inference worker reserves."),
    ] = None,
    gpus_per_worker: Annotated[
        float | None,
        typer.Option(
            "--gpus-per-worker", min=0, help="Ray engine: GPUs (or a fraction) each worker reserves."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Classify every photo under PATHS into the catalog; unchanged files are not decoded again."""
    from photosift import services
    from photosift.core.scanner import missing_roots

    absent = missing_roots(paths)
    if absent:
        fail(f"no such file or directory: {', '.join(absent)}", code=2)
    config = settings(
        db,
        model=model,
        batch_size=batch_size,
        provider=provider.value if provider is not None else None,
        rules=rules,
        people=people,
        gpu_decode=gpu_decode,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        **engine_settings(engine, ray_address),
    )
    if config.engine == "ray":
        config.ray_workers = workers if workers is not None else config.ray_workers
    else:
        if workers is not None and workers > 256:
            fail("--workers: at most 256 decode threads on the local engine", code=2)
        config.workers = workers if workers is not None else config.workers
        if cpus_per_worker is not None or gpus_per_worker is not None:
            fail("--cpus-per-worker and --gpus-per-worker are for --engine ray", code=2)
    show_progress = not as_json and sys.stderr.isatty()
    with errors_to_exit(), _progress_bar(show_progress) as on_progress, _stop_on_ctrl_c() as cancel:
        summary = services.classify(
            config, paths, retry_errors=retry_errors, on_progress=on_progress, cancel=cancel
        )
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_summary(summary, config)
    if summary.cancelled:
        raise typer.Exit(130)


@contextmanager
def _stop_on_ctrl_c() -> Iterator[threading.Event]:
    """First Ctrl-C: stop after the batch in flight, keeping committed work. Second: stop at once."""
    cancel = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


class _progress_bar(RichProgress):
    """A rich progress bar on a TTY (files, photos/s, ETA); nothing otherwise."""

    transient = True
    task: Any = None

    def columns(self) -> list[Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        return [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>6.1f} photos/s"),
            TextColumn("{task.fields[errors]} errors"),
            TimeRemainingColumn(),
        ]

    def started(self) -> None:
        self.task = self.bar.add_task("scanning", total=None, rate=0.0, errors=0)

    def update(self, p: Any) -> None:
        desc = {"scan": "scanning", "classify": "classifying", "done": "done"}[p.phase]
        self.bar.update(
            self.task,
            description=desc,
            total=p.files_total or None,
            completed=p.files_done,
            rate=p.photos_per_s,
            errors=p.errors,
        )


def _print_summary(s: RunSummary, config: Settings) -> None:
    from rich.table import Table

    err = console(stderr=True)
    for path, reason in s.error_files[:20]:
        err.print(text(f"skipping {path}: {reason}"))
    if len(s.error_files) > 20:
        err.print(f"… and {len(s.error_files) - 20} more unreadable files (photosift results --status error)")
    out = console()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # a long catalog path is wrapped, never cut
    rows: list[tuple[str, object]] = [
        ("seen", s.seen),
        ("classified", s.classified),
        ("unchanged", s.unchanged),
        ("reused (moved/copied)", s.reused),
        ("errors", s.errors),
        ("missing", s.missing),
        ("photos/s", f"{s.photos_per_s:.1f}"),
        ("model", s.model),
        ("provider", s.provider),
        ("catalog", str(config.db_path)),
    ]
    if s.categories:
        rows.append(("categories", ", ".join(f"{c} {n}" for c, n in s.categories.most_common())))
    rows += [("note", note) for note in s.notes]
    if s.cancelled:
        rows.append(("stopped", s.outcome() + "; rerun to finish"))
    for key, value in rows:
        table.add_row(key, text(value))  # a catalog path or a category with brackets is text, not markup
    out.print(table)


@app.command()
def results(
    db: DbOpt = None,
    category: Annotated[str | None, typer.Option("--category", help="Only this album category.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="ok or error.")] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="Only photos whose label contains this.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Results of this model (name or sha256 prefix); default: each photo's newest."
        ),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table, json or csv.")] = Format.table,
    limit: Annotated[int | None, typer.Option("--limit", min=1)] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Taken on or after: 2023, 2023-06 or 2023-06-15.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Taken on or before: 2023, 2023-06 or 2023-06-15.")
    ] = None,
    sort: Annotated[SortBy, typer.Option("--sort", help="path or date (taken).")] = SortBy.path,
) -> None:
    """Show what the catalog holds."""
    from photosift import services

    if status not in (None, "ok", "error"):
        fail("--status must be ok or error", code=2)
    for name, value in (("--since", since), ("--until", until)):
        if value is not None and not _DATE.match(value):
            fail(f"{name} {value!r}: give a date as YYYY, YYYY-MM or YYYY-MM-DD", code=2)
    order = "date" if sort is SortBy.date else "path"
    with errors_to_exit():
        rows = services.results(
            settings(db),
            category=category,
            status=status,
            label=label,
            model=model,
            limit=limit,
            since=since,
            until=until,
            order=order,
        )
    items = [r.to_dict() for r in rows]
    if fmt is Format.table:
        for row, it in zip(rows, items, strict=True):
            it["path_shown"] = printable(row.path)  # undecodable bytes as \xNN: tells two such names apart
    if fmt is Format.json:
        print(json.dumps(items, indent=2))
    elif fmt is Format.csv:
        _results_csv(items)
    else:
        _results_table(items)


_CSV_COLUMNS = (
    "path",
    "path_b64",
    "status",
    "error",
    "label",
    "score",
    "category",
    "category_score",
    "corrected_category",
    "model",
    "top5",
)


def _results_csv(items: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(_CSV_COLUMNS)
    for it in items:
        writer.writerow(
            [
                it["path"],
                it["path_b64"] or "",
                it["status"],
                it["error"] or "",
                it["label"] or "",
                "" if it["score"] is None else f"{it['score']:.4f}",
                it["category"] or "",
                "" if it["category_score"] is None else f"{it['category_score']:.4f}",
                it["corrected_category"] or "",
                it["model"] or "",
                "; ".join(f"{t['label']} {t['score']:.3f}" for t in it["top5"]),
            ]
        )
    sys.stdout.write(buf.getvalue())


def _results_table(items: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(show_lines=False)
    for col in ("path", "label", "score", "category", "status"):
        table.add_column(col, overflow="fold")
    for it in items:
        cat = it["corrected_category"] or it["category"] or ""
        if it["corrected_category"]:
            cat += " (corrected)"
        cells = (
            it["path_shown"],
            it["label"] or (it["error"] or ""),
            "" if it["score"] is None else f"{it['score']:.2f}",
            cat,
            it["status"],
        )
        table.add_row(*(text(c) for c in cells))  # paths and labels are text, never markup
    console().print(table)


MOVED_LISTED = 10  # photos named after a correction; the rest are counted


@app.command()
def correct(
    path: Annotated[Path, typer.Argument(help="A photo in the catalog.")],
    category: Annotated[str | None, typer.Option("--category", help="The right album category.")] = None,
    create: Annotated[
        bool, typer.Option("--create", help="Create CATEGORY as a user category if it is new.")
    ] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the correction instead.")] = False,
    undo: Annotated[
        bool,
        typer.Option("--undo", help="Take back the photo's latest correction and what it moved."),
    ] = False,
    db: DbOpt = None,
    rules: RulesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a photo's album category; it always wins, and photos that look almost the same follow it."""
    from photosift import services
    from photosift.core.errors import NothingToUndo

    if sum([category is not None, clear, undo]) != 1:
        fail("give one of --category NAME, --clear or --undo", code=2)
    if create and category is not None:
        from photosift.album.rules import check_category_name

        with errors_to_exit():
            check_category_name(category)
    config = settings(db, rules=rules)
    with errors_to_exit():
        try:
            if undo:
                report = services.undo(config, path)
            else:
                report = services.correct(config, path, category, create=create)
        except (services.NotInCatalog, NothingToUndo) as exc:
            fail(str(exc), code=2)
        except UnknownCategory as exc:
            fail(f"{exc}; pass --create to make a new category", code=2)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    out = console()
    was = f" (was {report.before})" if report.before and report.before != report.after else ""
    if undo:
        now = report.after or "no correction"
        out.print(text(f"{report.path}: correction undone, back to {now}"))
    elif clear:
        out.print(text(f"{report.path}: correction cleared{was}"))
    else:
        out.print(text(f"{report.path}: {report.after}{was}"))
    out.print(text(moved_line(report.moved)))


def moved_line(moved: list[Any]) -> str:
    """ "3 other photos moved: a.jpg animals→food, …" (the first MOVED_LISTED named), or that none did."""
    if not moved:
        return "no other photo moved"
    named = ", ".join(
        f"{Path(m.path).name} {m.before or 'none'}→{m.after or 'none'}" for m in moved[:MOVED_LISTED]
    )
    more = f", and {len(moved) - MOVED_LISTED} more" if len(moved) > MOVED_LISTED else ""
    noun = "photo" if len(moved) == 1 else "photos"
    return f"{len(moved)} other {noun} moved: {named}{more}"


@app.command()
def recategorize(
    db: DbOpt = None,
    rules: RulesOpt = None,
    every: Annotated[
        bool, typer.Option("--all", help="Re-derive every result, not only those decided by other rules.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-derive categories from stored model outputs (after editing the rules); no inference."""
    from photosift import services

    show_progress = not as_json and sys.stderr.isatty()
    with errors_to_exit(), _rederive_bar(show_progress) as on_progress, _stop_on_ctrl_c() as cancel:
        report = services.recategorize(
            settings(db, rules=rules), only_stale=not every, on_progress=on_progress, cancel=cancel
        )
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        what = "results" if every else "stale results"
        console().print(
            text(
                f"{report.photos} {what} recategorized, {report.changed} changed"
                + (": " if report.categories else "")
                + ", ".join(f"{c} {n}" for c, n in sorted(report.categories.items(), key=lambda kv: -kv[1]))
            )
        )
    if report.cancelled:
        raise typer.Exit(130)


@contextmanager
def _rederive_bar(enabled: bool) -> Iterator[Any]:
    """A rich progress bar for re-derivation on a TTY; nothing otherwise."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]recategorizing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("recategorize", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total or None)


@app.command()
def doctor(
    db: DbOpt = None,
    recover: Annotated[
        Path | None,
        typer.Option(
            "--recover", help="Copy every readable row into this new catalog file (must not exist)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the catalog (integrity, schema, whose file it is, rows) and the models; recover a damaged one."""
    from photosift import services

    config = settings(db)
    if not config.db_path.is_file():
        fail(f"{config.db_path}: no such catalog")
    with errors_to_exit():
        report = services.doctor(config, recover_to=recover)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_doctor(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_doctor(report: services.DoctorReport) -> None:
    from rich.table import Table

    h = report.health
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows: list[tuple[str, object]] = [("catalog", h.path), ("owner", h.owner)]
    if h.schema_version is not None:
        rows.append(("schema", f"{h.schema_version} (current {h.schema_current})"))
    if h.integrity:
        rows.append(("integrity", "; ".join(h.integrity[:3])))
    if h.rows:
        rows.append(("rows", ", ".join(f"{t} {'unreadable' if n is None else n}" for t, n in h.rows.items())))
    if h.photos:
        rows.append(("photos", ", ".join(f"{s} {n}" for s, n in sorted(h.photos.items()))))
    rows += [("model", f"{m['name']} ({m['origin']}): {m['file']}") for m in report.models]
    rows += [("problem", p) for p in report.problems]
    rows += [("warning", w) for w in report.warnings]
    rows.append(("status", "healthy" if report.ok else f"{len(report.problems)} problem(s)"))
    if report.recovery is None and not report.ok and h.owner.startswith("photosift"):
        rows.append(("next", f"photosift doctor --db {h.path} --recover NEW.db copies what is readable"))
    for key, value in rows:
        table.add_row(key, text(value))
    console().print(table)
    if report.recovery is not None:
        r = report.recovery
        skipped = sum(r.damaged_stretches.values())
        console().print(
            text(
                f"recovered into {r.output}: "
                + ", ".join(f"{t} {n}" for t, n in r.copied.items() if t != "migrations")
                + (f"; {skipped} damaged stretch(es) skipped" if skipped else "")
                + (
                    f"; {sum(r.dropped_orphans.values())} rows dropped (their model was lost)"
                    if r.dropped_orphans
                    else ""
                )
                + f"; integrity {r.integrity}"
            )
        )
