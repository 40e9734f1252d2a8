"""The train command: a classifier for the user's own classes, from a folder, a labels CSV or the catalog.

The toolchain (torch) is imported inside the command; the conventions (exit codes, ``--json``, one-line errors)
are :mod:`photosift.cli.common`'s. On a TTY a rich progress bar shows each stage with its ETA; Ctrl-C during
training stops it and exports the best model so far.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from photosift.cli.app import app
from photosift.cli.common import DbOpt, JsonOpt, RichProgress, console, errors_to_exit, fail, settings


class Arch(str, Enum):
    lite0 = "lite0"
    lite2 = "lite2"
    mobilenetv2 = "mobilenetv2"
    unet = "unet-classifier"


@app.command("train")
def train_cmd(
    data: Annotated[
        Path | None, typer.Argument(help="Folder with one subfolder of photos per class.", show_default=False)
    ] = None,
    out: Annotated[
        Path | None, typer.Option("-o", "--output", help="Where to write the .onnx model.")
    ] = None,
    arch: Annotated[
        Arch, typer.Option("--arch", help="Backbone to transfer from, or unet-classifier.")
    ] = Arch.lite0,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            min=0,
            help="Training epochs (transfer: fine-tuning after the head, default 0 = head only; unet: 20).",
        ),
    ] = None,
    img_size: Annotated[
        int | None,
        typer.Option("--img-size", help="Input size in pixels, a multiple of 32 (default: arch's)."),
    ] = None,
    teacher: Annotated[
        str | None, typer.Option("--teacher", help="Distil from this classifier (name or .onnx file).")
    ] = None,
    temperature: Annotated[
        float, typer.Option("--temperature", min=1.0, help="Softening of the teacher's outputs.")
    ] = 4.0,
    unlabelled: Annotated[
        Path | None,
        typer.Option("--unlabelled", help="Unlabelled photos the teacher labels (with --teacher)."),
    ] = None,
    prune: Annotated[
        float, typer.Option("--prune", min=0.0, max=0.9, help="Share of channels to remove, then fine-tune.")
    ] = 0.0,
    val_split: Annotated[
        float, typer.Option("--val-split", min=0.0, max=0.9, help="Share of each class kept for validation.")
    ] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same data: the same model.")] = 0,
    name: Annotated[
        str | None, typer.Option("--name", help="Name to register the model under (default: file stem).")
    ] = None,
    skips: Annotated[
        int, typer.Option("--skips", min=0, max=3, help="unet-classifier: shallowest skip connections kept.")
    ] = 2,
    pretrained_encoder: Annotated[
        bool, typer.Option("--pretrained-encoder", help="unet-classifier: Lite0's ImageNet encoder.")
    ] = False,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="CSV file,category instead of class folders.")
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Photo folder for --labels (default: images/ beside it).")
    ] = None,
    from_catalog: Annotated[
        bool, typer.Option("--from-catalog", help="Learn from the corrections stored in the catalog.")
    ] = False,
    db: DbOpt = None,
    register: Annotated[
        bool, typer.Option("--register/--no-register", help="Register the model by name (default on).")
    ] = True,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write metrics (JSON) and plots (PNG) beside it.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a classifier on your photos and export it like the built-in models (export extra)."""
    sources = sum(x for x in (data is not None, labels is not None, from_catalog))
    if sources != 1:
        fail("give exactly one of DATA (a folder of class folders), --labels CSV or --from-catalog", code=2)
    if out is None:
        fail("-o/--output OUT.onnx is needed", code=2)
    config = settings(db)
    from photosift import services
    from photosift.toolchain.trainset import from_csv, from_folders, from_pairs

    with errors_to_exit():
        if data is not None:
            found = from_folders(data)
        elif labels is not None:
            found = from_csv(labels, images)
        else:
            found = from_pairs(services.corrected_photos(config), f"catalog {config.db_path}")
        if unlabelled is not None:
            from photosift.toolchain.modelfile import list_images

            if not unlabelled.is_dir():
                fail(f"{unlabelled}: unlabelled photo folder not found", code=2)
            found.unlabelled += list_images(unlabelled)
        from photosift.toolchain.train import TRANSFER_ARCHS, TrainOptions, train

        options = TrainOptions(
            arch=arch.value,
            epochs=epochs,
            img_size=img_size,
            teacher=teacher,
            temperature=temperature,
            prune=prune,
            val_split=val_split,
            seed=seed,
            name=name,
            skips=skips,
            pretrained_encoder=pretrained_encoder,
            # the transfer head also sees ImageNet's probabilities pooled by WordNet concept (docs/TRAINING.md)
            concepts=services.imagenet_concepts() if arch.value in TRANSFER_ARCHS else None,
        )
        with _StageBars(not as_json and sys.stderr.isatty()) as on_progress:
            try:
                result = train(found, out, options, on_progress)
            except KeyboardInterrupt:
                fail("interrupted before training started; nothing written", code=130)
        entry = None
        if register:
            from photosift.models.registry import register_built_model

            entry = register_built_model(config.data_dir, result.card.name, result.output, result.card)
        written = []
        if report is not None:
            from photosift.toolchain.trainreport import write_report

            written = write_report(result, report)
    if as_json:
        print(json.dumps({**result.to_dict(), "registered": entry.name if entry else None}, indent=2))
        return
    _print_result(result, entry.name if entry else None, written)


class _StageBars(RichProgress):
    """One rich progress bar per training stage (done/total, ETA) on a TTY; nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        super().__init__(enabled)
        self.tasks: dict[str, Any] = {}

    def columns(self) -> list[Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        return [
            TextColumn("[bold]{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
        ]

    def update(self, p: Any) -> None:
        if p.stage not in self.tasks:
            self.tasks[p.stage] = self.bar.add_task(p.stage, total=p.total, note="")
        self.bar.update(self.tasks[p.stage], completed=p.done, total=p.total, note=p.note)


def _print_result(r: Any, registered: str | None, written: list[Path]) -> None:
    err = console(stderr=True)
    for path, reason in r.skipped[:20]:
        err.print(f"skipping {path}: {reason}", markup=False)
    if len(r.skipped) > 20:
        err.print(f"… and {len(r.skipped) - 20} more unreadable files")
    v = r.validation
    lines = [
        f"wrote {r.output} ({r.card.arch}, {r.output.stat().st_size / 1e6:.1f} MB)",
        f"sha256 {r.sha256}",
        f"classes: {', '.join(f'{c} {n}' for c, n in r.counts.items())}"
        + (f"; {r.duplicates} duplicates dropped" if r.duplicates else "")
        + (f"; {r.unlabelled_photos} unlabelled" if r.unlabelled_photos else ""),
        f"trained on {r.train_photos} photos in {r.seconds:.0f} s"
        + (" (interrupted: the best model so far was kept)" if r.interrupted else ""),
    ]
    if v.accuracy is not None:
        per_class = ", ".join(f"{c} {a:.2f}" for c, a in v.per_class.items() if a is not None)
        lines.append(f"validation accuracy {v.accuracy:.1%} on {v.photos} photos ({per_class})")
    lines.append(f"parity on {r.parity['images']} photos: max |Δlogit| {r.parity['max_abs_diff']:.2e}")
    if r.distillation:
        d = r.distillation
        teacher_acc = d["teacher_val_accuracy"]
        lines.append(
            f"distilled from {d['teacher']} (T={d['temperature']}): teacher "
            + (f"{teacher_acc:.1%}, " if teacher_acc is not None else "")
            + f"{d['teacher_bytes'] / 1e6:.1f} MB, {d['teacher_images_per_s']:.0f} images/s; student "
            + (f"{v.accuracy:.1%}, " if v.accuracy is not None else "")
            + f"{d['student_bytes'] / 1e6:.1f} MB, {d['student_images_per_s']:.0f} images/s"
        )
    if r.pruning:
        p = r.pruning
        kept = f", {p['accuracy_kept']:.1%} of the accuracy kept" if p["accuracy_kept"] is not None else ""
        lines.append(
            f"pruned {p['fraction']:.0%} of {p['channels_before']} inner channels{kept}: "
            f"{p['bytes_before'] / 1e6:.1f} -> {p['bytes_after'] / 1e6:.1f} MB, {p['speedup']:.2f}x as fast"
        )
    lines += [f"note: {n}" for n in r.notes]
    if registered:
        lines.append(f"registered as {registered}: photosift classify PATH --model {registered}")
    lines += [f"report: {p}" for p in written]
    console().print("\n".join(lines), markup=False)
