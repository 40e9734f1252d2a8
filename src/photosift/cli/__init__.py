"""The command line: the only place that prints or picks exit codes.

Exit codes: 0 when the run finished (unreadable files are reported, not fatal), 1 for a fatal error (model
missing or corrupt, catalog unwritable, …), 2 for usage errors. Heavy imports stay inside the commands so
``photosift --help`` and ``photosift classify`` start fast.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from photosift.core.config import Settings
from photosift.core.errors import PhotosiftError, UnknownCategory

if TYPE_CHECKING:
    from rich.console import Console

    from photosift.run.driver import RunSummary

app = typer.Typer(
    name="photosift",
    help="Classify a photo library offline: ImageNet labels and album categories in a local catalog.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List the available models, or build one from pip-shipped weights.")
app.add_typer(models_app, name="models")

DbOpt = Annotated[
    Path | None, typer.Option("--db", help="Catalog file (default: PHOTOSIFT_DB or the user data dir).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
RulesOpt = Annotated[
    Path | None, typer.Option("--rules", help="Category rules file (default: config dir, else built in).")
]


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 1) -> NoReturn:
    _console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True)
    raise typer.Exit(code)


def _settings(db: Path | None = None, **overrides: Any) -> Settings:
    settings = Settings()
    if db is not None:
        settings.db = db
    for key, value in overrides.items():
        if value is not None:
            setattr(settings, key, value)
    return settings


class Provider(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    tensorrt = "tensorrt"
    openvino = "openvino"
    coreml = "coreml"
    dml = "dml"


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


@app.command()
def classify(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to classify (folders recursively).")],
    db: DbOpt = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name or path to an .onnx file.")] = None,
    provider: Annotated[Provider, typer.Option("--provider", help="Execution provider.")] = Provider.auto,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, max=1024)] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, max=256, help="Decode threads.")] = None,
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
    as_json: JsonOpt = False,
) -> None:
    """Classify every photo under PATHS into the catalog; unchanged files are not decoded again."""
    from photosift.core.scanner import missing_roots

    absent = missing_roots(paths)
    if absent:
        _fail(f"no such file or directory: {', '.join(absent)}", code=2)
    settings = _settings(
        db,
        model=model,
        batch_size=batch_size,
        workers=workers,
        provider=provider.value,
        rules=rules,
        people=people,
        gpu_decode=gpu_decode,
    )
    from photosift.services import build_pipeline

    try:
        pipeline = build_pipeline(settings)
        pipeline.options.retry_errors = retry_errors
        show_progress = not as_json and sys.stderr.isatty()
        with _progress_bar(show_progress) as on_progress, _stop_on_ctrl_c() as cancel:
            summary = pipeline.run([str(p) for p in paths], on_progress=on_progress, cancel=cancel)
    except PhotosiftError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_summary(summary, settings)
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


class _progress_bar:
    """A rich progress bar on a TTY (files, photos/s, ETA); nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>6.1f} photos/s"),
            TextColumn("{task.fields[errors]} errors"),
            TimeRemainingColumn(),
            console=_console(stderr=True),
            transient=True,
        )
        self.bar.__enter__()
        self.task = self.bar.add_task("scanning", total=None, rate=0.0, errors=0)
        return self.update

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

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _print_summary(s: RunSummary, settings: Settings) -> None:
    from rich.table import Table

    err = _console(stderr=True)
    for path, reason in s.error_files[:20]:
        err.print(f"skipping {path}: {reason}", markup=False)
    if len(s.error_files) > 20:
        err.print(f"… and {len(s.error_files) - 20} more unreadable files (photosift results --status error)")
    out = _console()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("seen", s.seen),
        ("classified", s.classified),
        ("unchanged", s.unchanged),
        ("reused (moved/copied)", s.reused),
        ("errors", s.errors),
        ("missing", s.missing),
        ("photos/s", f"{s.photos_per_s:.1f}"),
        ("model", s.model),
        ("provider", s.provider),
        ("catalog", str(settings.db_path)),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    if s.categories:
        table.add_row("categories", ", ".join(f"{c} {n}" for c, n in s.categories.most_common()))
    if s.cancelled:
        table.add_row("stopped", "interrupted; committed work is kept, rerun to finish")
    out.print(table)


@app.command()
def results(
    db: DbOpt = None,
    category: Annotated[str | None, typer.Option("--category", help="Only this album category.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="ok or error.")] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="Only photos whose label contains this.")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table, json or csv.")] = Format.table,
    limit: Annotated[int | None, typer.Option("--limit", min=1)] = None,
) -> None:
    """Show what the catalog holds."""
    from photosift.core.catalog import Catalog

    if status not in (None, "ok", "error"):
        _fail("--status must be ok or error", code=2)
    settings = _settings(db)
    try:
        with Catalog(settings.db_path, readonly=True) as cat:
            if category is not None:
                from photosift.album.rules import load_rules

                load_rules(settings.rules_path).check_category(category, extra=cat.user_categories())
            rows = cat.results(category=category, status=status, label=label, limit=limit)
    except UnknownCategory as exc:
        _fail(str(exc), code=2)
    except PhotosiftError as exc:
        _fail(str(exc))
    items = [r.to_dict() for r in rows]
    if fmt is Format.json:
        print(json.dumps(items, indent=2))
    elif fmt is Format.csv:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(
            [
                "path",
                "status",
                "error",
                "label",
                "score",
                "category",
                "category_score",
                "corrected_category",
                "model",
                "top5",
            ]
        )
        for it in items:
            writer.writerow(
                [
                    it["path"],
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
    else:
        _results_table(items)


def _results_table(items: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(show_lines=False)
    for col in ("path", "label", "score", "category", "status"):
        table.add_column(col, overflow="fold")
    for it in items:
        cat = it["corrected_category"] or it["category"] or ""
        if it["corrected_category"]:
            cat += " (corrected)"
        table.add_row(
            it["path"],
            it["label"] or (it["error"] or ""),
            "" if it["score"] is None else f"{it['score']:.2f}",
            cat,
            it["status"],
        )
    _console().print(table)


@app.command()
def correct(
    path: Annotated[Path, typer.Argument(help="A photo in the catalog.")],
    category: Annotated[str | None, typer.Option("--category", help="The right album category.")] = None,
    create: Annotated[
        bool, typer.Option("--create", help="Create CATEGORY as a user category if it is new.")
    ] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the correction instead.")] = False,
    db: DbOpt = None,
    rules: RulesOpt = None,
) -> None:
    """Set a photo's album category; it always wins, and teaches the personal head."""
    if (category is None) == (not clear):
        _fail("give --category NAME or --clear", code=2)
    settings = _settings(db, rules=rules)
    from photosift.album.decisions import correct as apply_correction
    from photosift.album.rules import load_rules
    from photosift.core.catalog import Catalog

    abs_path = str(path.expanduser().absolute())
    try:
        rules_obj = load_rules(settings.rules_path)
        with Catalog(settings.db_path) as cat:
            content_hash = cat.content_hash_of(abs_path)
            if content_hash is None:
                _fail(f"{abs_path}: not in the catalog (or unreadable); classify it first", code=2)
            report = apply_correction(
                cat, rules_obj, settings.data_dir, content_hash, category, create=create, path=abs_path
            )
    except UnknownCategory as exc:
        _fail(f"{exc}; pass --create to make a new category", code=2)
    except PhotosiftError as exc:
        _fail(str(exc))
    out = _console()
    out.print(f"{abs_path}: {'correction cleared' if clear else category}", markup=False)
    if report.train is not None:
        if report.train.trained:
            out.print(f"personal head retrained on {report.train.corrections} corrections")
        else:
            out.print(f"personal head not trained: {report.train.reason}")
    if report.recategorized is not None:
        out.print(
            f"recategorized {report.recategorized.photos} results, {report.recategorized.changed} changed"
        )


@app.command()
def recategorize(db: DbOpt = None, rules: RulesOpt = None, as_json: JsonOpt = False) -> None:
    """Re-derive every photo's category from stored model outputs (after editing the rules); no inference."""
    settings = _settings(db, rules=rules)
    from photosift.album.decisions import recategorize as rederive
    from photosift.album.rules import load_rules
    from photosift.core.catalog import Catalog

    try:
        rules_obj = load_rules(settings.rules_path)
        with Catalog(settings.db_path) as cat:
            report = rederive(cat, rules_obj, settings.data_dir)
    except PhotosiftError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    _console().print(
        f"{report.photos} results recategorized, {report.changed} changed: "
        + ", ".join(f"{c} {n}" for c, n in sorted(report.categories.items(), key=lambda kv: -kv[1]))
    )


def _sample_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("photosift") / "samples"))


@app.command()
def serve(
    db: DbOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; keep 127.0.0.1.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8765,
) -> None:
    """Browse, search and correct the catalog, and run scans, in a local web gallery."""
    try:
        from photosift.web.app import is_loopback_host, run_server
    except ImportError as exc:
        _fail(f"the web gallery needs the web extra: pip install 'photosift[web]' ({exc})")
    err = _console(stderr=True)
    if not is_loopback_host(host):
        err.print(
            f"[bold red]WARNING:[/] binding {host}: anyone who can reach this machine on port {port} can see "
            "your photos and start scans. Use --host 127.0.0.1 unless you mean it.",
            markup=True,
        )
    shown = f"[{host}]" if ":" in host else host
    err.print(f"photosift gallery on http://{shown}:{port}/ (Ctrl-C to stop)", markup=False)
    try:
        run_server(_settings(db), host=host, port=port)
    except PhotosiftError as exc:
        _fail(str(exc))


@app.command()
def bench(
    images: Annotated[
        Path | None, typer.Option("--images", help="Corpus folder (default: 72 generated phone JPEGs).")
    ] = None,
    model: Annotated[str, typer.Option("--model", help="Model name or .onnx file.")] = "efficientnet-lite0",
    as_json: JsonOpt = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a bar chart (PNG).")] = None,
    make_corpus: Annotated[
        Path | None, typer.Option("--make-corpus", help="Only generate a corpus in this folder.")
    ] = None,
    count: Annotated[int, typer.Option("--count", min=1, help="Phone photos to generate.")] = 72,
    mixed: Annotated[bool, typer.Option("--mixed", help="With --make-corpus: the mixed-format set.")] = False,
    scale: Annotated[
        bool, typer.Option("--scale", help="Also: RSS over 10k photos, 100k-file rescan, cold start.")
    ] = False,
    workroot: Annotated[Path, typer.Option("--workroot", help="Where corpora are generated.")] = Path(
        ".bench"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="Tiny iteration counts (smoke test).")] = False,
    settle: Annotated[
        float, typer.Option("--settle", min=0, help="Per stage, wait up to S seconds for a quiet machine.")
    ] = 0.0,
) -> None:
    """Measure decode, inference, the pipeline and the naive loop on one corpus; report the limit."""
    from photosift.bench import suite as b
    from photosift.bench.corpus import make_mixed_corpus, make_phone_corpus

    if make_corpus is not None:
        made = make_mixed_corpus(make_corpus) if mixed else make_phone_corpus(make_corpus, count)
        print(json.dumps({"folder": str(make_corpus), "files": len(made)}) if as_json else make_corpus)
        return
    opts = b.BenchOptions(
        images=images, model=model, workroot=workroot, corpus_count=count, scale=scale, settle_s=settle
    )
    if quick:
        opts.infer_photos, opts.naive_limit, opts.torch, opts.cli = 8, 2, False, False
        opts.memory_count, opts.rescan_count = 20, 200
    err = _console(stderr=True)
    try:
        report = b.run_bench(opts, log=(lambda s: None) if as_json else (lambda s: err.print(f"· {s}")))
    except PhotosiftError as exc:
        _fail(str(exc))
    if plot is not None:
        b.plot(report, plot)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _console().print(b.render(report))


# The model commands (models, export, optimize, quantize, eval) live in their own module and register on `app`.
from photosift.cli import models as cli_models  # noqa: E402,F401


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside a run: stop quietly
        sys.exit(130)


if __name__ == "__main__":
    main()
