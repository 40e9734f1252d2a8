"""Reproduce the measurements of docs/TRAINING.md: train, then score the exported model on photos it never saw.

    PYTHONPATH=src .venv/bin/python tools/train_measure.py album --sets DIR [--arch lite0] [--seeds 0,1,2]
        [--no-concepts] [--epochs N] [--val-split 0.2] [--int8]
    PYTHONPATH=src .venv/bin/python tools/train_measure.py plates --sets DIR [--skips 0,2,3] [--epochs N]
        [--img-size 64] [--pretrained-encoder] [--prune 0.3]
    PYTHONPATH=src .venv/bin/python tools/train_measure.py distil --sets DIR --teacher MODEL [--arch ARCH] [--temperature 4]

``album``: DIR is tools/album_sets.py's output (``train/``: album-dev by category; ``heldout/`` and
``heldout.csv``: the other tuxpaint stamps of those categories). ``plates``/``distil``: DIR holds ``train/`` and
``test/`` from tools/make_plates.py (two seeds); ``distil`` also ``unlabelled/`` (plates of a third seed, in one
folder). Each run prints wall time, process CPU time and how many cores
*other* processes kept busy meanwhile (the development machine is shared; bench.meter.Meter), the validation
accuracy, and the accuracy of the exported ONNX model (ONNX Runtime, the photos decoded as classify decodes them)
on the held-out photos; ``--int8`` also quantizes the model (``photosift quantize``'s search and bar, calibrated
on the training photos) and scores that.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from photosift import services
from photosift.bench.meter import Meter
from photosift.core.imaging import load_tensor
from photosift.models.card import read_card
from photosift.toolchain.modelfile import list_images, session
from photosift.toolchain.train import TrainOptions, train
from photosift.toolchain.trainset import from_folders


def score(model: Path, files: list[tuple[Path, str]]) -> dict[str, Any]:
    """Accuracy of ``model`` on (photo, class) pairs, per class too."""
    card = read_card(model)
    sess = session(model)
    hits: dict[str, list[int]] = {}
    for start in range(0, len(files), 32):
        chunk = files[start : start + 32]
        x = np.stack([load_tensor(p, card.preprocess) for p, _ in chunk])
        predicted = sess.run([card.logits_name], {card.input_name: x})[0].argmax(1)
        for (_, truth), p in zip(chunk, predicted, strict=True):
            hits.setdefault(truth, []).append(int(card.labels[int(p)] == truth))
    every = [h for v in hits.values() for h in v]
    return {
        "accuracy": round(float(np.mean(every)), 4),
        "photos": len(every),
        "per_class": {c: f"{sum(v)}/{len(v)}" for c, v in sorted(hits.items())},
    }


def folder_pairs(root: Path) -> list[tuple[Path, str]]:
    return [(f.path, f.label) for f in from_folders(root).files]


def run_one(
    data: Path, out: Path, options: TrainOptions, test: list[tuple[Path, str]], unlabelled: Path | None = None
) -> dict[str, Any]:
    found = from_folders(data)
    if unlabelled is not None:
        found.unlabelled = list_images(unlabelled)
    meter = Meter()
    with meter.measure():
        result = train(found, out, options)
    row: dict[str, Any] = {
        "arch": result.card.arch,
        "seed": options.seed,
        "wall_s": round(meter.wall, 1),
        "cpu_s": round(meter.cpu, 1),
        "other_cores": round(meter.other_cores, 2),
        "val_accuracy": result.validation.accuracy,
        "test": score(out, test),
        "bytes": out.stat().st_size,
        "epochs_run": len(result.history),
    }
    if result.pruning:
        row["pruning"] = result.pruning
    if result.distillation:
        row["distillation"] = result.distillation
    return row


def int8(model: Path, calibrate: Path, test: list[tuple[Path, str]], out: Path) -> dict[str, Any]:
    from photosift.toolchain.quantize import quantize

    # The CLI's bar (97 % agreement on the held-out half of the training photos), not 0: with no bar every
    # candidate passes and the fastest wins, however far it strays (per-tensor weights lose 8 points here).
    q = quantize(model, calibrate, out)
    return {
        "agreement_with_fp32": q.agreement,
        "config": q.config,
        "speedup": round(q.speed.speedup, 3) if q.speed else None,
        "test": score(out, test),
        "bytes": out.stat().st_size,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["album", "plates", "distil"])
    ap.add_argument("--sets", type=Path, required=True)
    ap.add_argument("--arch", default=None)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--val-split", type=float, default=0.2)
    ap.add_argument("--no-concepts", action="store_true")
    ap.add_argument("--skips", default="2")
    ap.add_argument("--pretrained-encoder", action="store_true")
    ap.add_argument("--prune", type=float, default=0.0)
    ap.add_argument("--teacher", default=None)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="keep the models here (default: a temp dir)")
    args = ap.parse_args()

    work = args.out or Path(tempfile.mkdtemp(prefix="photosift-measure-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.what == "album":
        train_dir = args.sets / "train"
        with (args.sets / "heldout.csv").open() as f:
            test = [(args.sets / "heldout" / r["file"], r["category"]) for r in csv.DictReader(f)]
        arch = args.arch or "lite0"
        concepts = None if args.no_concepts else services.imagenet_concepts()
        variants = [{"arch": arch, "concepts": concepts}]
    else:
        train_dir, test = args.sets / "train", folder_pairs(args.sets / "test")
        arch = args.arch or "unet-classifier"
        variants = [
            {"arch": arch, "skips": int(s), "pretrained_encoder": args.pretrained_encoder}
            for s in args.skips.split(",")
        ]
    for variant in variants:
        for seed in (int(s) for s in args.seeds.split(",")):
            options = TrainOptions(
                epochs=args.epochs,
                img_size=args.img_size,
                val_split=args.val_split,
                seed=seed,
                prune=args.prune,
                teacher=args.teacher,
                temperature=args.temperature,
                **variant,
            )
            out = work / f"{args.what}-{variant.get('skips', arch)}-{seed}.onnx"
            unlabelled = args.sets / "unlabelled" if args.what == "distil" else None
            row = run_one(train_dir, out, options, test, unlabelled)
            if args.teacher:
                row["teacher_test"] = score(Path(args.teacher), test)
            if args.int8:
                row["int8"] = int8(out, train_dir, test, out.with_name(out.stem + "-int8.onnx"))
            print(json.dumps(row), flush=True)
    print(f"models in {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
