"""Reproduce the album-category numbers in docs/CATEGORIES.md.

    PYTHONPATH=src .venv/bin/python tools/eval_categories.py                       # album-dev, default rules
    PYTHONPATH=src .venv/bin/python tools/eval_categories.py --labels CSV --images DIR [--rules FILE]
    PYTHONPATH=src .venv/bin/python tools/eval_categories.py --topk 5,10,20,50      # recategorize-from-storage check
    PYTHONPATH=src .venv/bin/python tools/eval_categories.py --no-people            # classifier only
    PYTHONPATH=src .venv/bin/python tools/eval_categories.py --centre-crop          # cut-outs centre-cropped too
    PYTHONPATH=src .venv/bin/python tools/eval_categories.py --no-abstract          # without the abstract detector

The labels CSV has columns ``file,category`` (``file`` relative to --images, or absolute). Each image is decoded
once, as the pipeline does (DCT-scaled to a shorter side of at least 256 px); the model runs on the tensor and
the face detector on the decoded image. Model outputs are cached next to nothing: pass --cache FILE.npz to reuse.
The personal head's evaluation (simulated users correcting photos) is tools/personal_protocol.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from photosift.album.abstract import head_for_model
from photosift.album.people import PeopleDetector, PeopleSignal
from photosift.album.rules import Categorizer, load_rules
from photosift.bench.corpus import ALBUM_DEV
from photosift.core import imaging
from photosift.core.config import default_data_dir
from photosift.models.registry import resolve_model
from photosift.models.tasks import softmax

DEFAULT_SET = ALBUM_DEV


def run_model(paths: list[Path], model: str, people: bool, fit_cutouts: bool = True) -> dict[str, np.ndarray]:
    from photosift.models.session import open_session

    resolved = resolve_model(model, default_data_dir())  # packaged models and those built here
    card = resolved.card
    sess = open_session(resolved.path)
    detector = PeopleDetector() if people else None
    logits, embs, signals = [], [], []
    det_s = 0.0
    for start in range(0, len(paths), 16):
        batch = []
        for p in paths[start : start + 16]:
            image = imaging.decode(imaging.read_bytes(p), p, min_side=card.preprocess.resize_size)
            batch.append(imaging.to_tensor(image, card.preprocess, fit_cutouts=fit_cutouts))
            if detector is not None:
                t = time.perf_counter()
                signals.append(detector.detect(image).to_dict())
                det_s += time.perf_counter() - t
        lg, emb = sess.run(
            [card.logits_name, card.embedding_name or "embedding"], {card.input_name: np.stack(batch)}
        )
        logits.append(lg)
        embs.append(emb)
    if detector is not None:
        print(f"face detector: {det_s / max(1, len(paths)) * 1000:.1f} ms/photo (1 thread)", file=sys.stderr)
    return {
        "logits": np.concatenate(logits),
        "embedding": np.concatenate(embs),
        "people": np.array([json.dumps(s) for s in signals]) if signals else np.array([]),
    }


def report(truth: list[str], pred: list[str], title: str) -> float:
    acc = float(np.mean([t == p for t, p in zip(truth, pred, strict=True)]))
    print(
        f"\n{title}: accuracy {acc:.3f} ({sum(t == p for t, p in zip(truth, pred, strict=True))}/{len(truth)})"
    )
    for cat, n in sorted(Counter(truth).items()):
        ok = sum(1 for t, p in zip(truth, pred, strict=True) if t == cat and p == cat)
        wrong = Counter(p for t, p in zip(truth, pred, strict=True) if t == cat and p != cat)
        print(
            f"  {cat:13} {ok:3}/{n:<3} {ok / n:.2f}  "
            + ", ".join(f"->{k} {v}" for k, v in wrong.most_common())
        )
    return acc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=Path, default=DEFAULT_SET / "labels.csv")
    ap.add_argument("--images", type=Path, default=None, help="default: images/ beside the labels CSV")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--rules", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=None, help="npz file to store/reuse model outputs")
    ap.add_argument("--no-people", action="store_true")
    ap.add_argument("--no-abstract", action="store_true", help="leave the abstract-art detector out")
    ap.add_argument(
        "--centre-crop", action="store_true", help="centre-crop cut-outs too (default: framed whole)"
    )
    ap.add_argument("--topk", default="", help="comma-separated k values to check against the full softmax")
    ap.add_argument("--errors", action="store_true", help="list the misclassified files")
    args = ap.parse_args()

    images = args.images or args.labels.parent / "images"
    rows = list(csv.DictReader(args.labels.open()))
    paths = [Path(r["file"]) if Path(r["file"]).is_absolute() else images / r["file"] for r in rows]
    truth = [r["category"] for r in rows]

    if args.cache and args.cache.is_file():
        out = dict(np.load(args.cache))
    else:
        out = run_model(paths, args.model, people=not args.no_people, fit_cutouts=not args.centre_crop)
        if args.cache:
            np.savez(args.cache, **out)
    probs = softmax(out["logits"])
    signals: list[PeopleSignal | None] | None = None
    if not args.no_people and len(out["people"]):
        signals = [PeopleSignal.from_dict(json.loads(s)) for s in out["people"]]

    cat = Categorizer(load_rules(args.rules))
    abstract = None
    if not args.no_abstract and cat.rules.abstract_threshold < 1.0:
        head = head_for_model(resolve_model(args.model, default_data_dir()).sha256)
        abstract = head.scores(out["embedding"]) if head is not None else None
    results = cat.categorize(probs, signals, abstract)
    pred = [r.category for r in results]
    what = ("rules + faces" if signals else "rules only") + (" + abstract" if abstract is not None else "")
    report(truth, pred, f"{args.labels} ({what})")
    if args.errors:
        for path, t, r in zip(paths, truth, results, strict=True):
            if t != r.category:
                extra = f", abstract {abstract[paths.index(path)]:.2f}" if abstract is not None else ""
                print(f"  {path.name}: {t} -> {r.category} ({r.score:.2f}{extra})")

    for k in [int(x) for x in args.topk.split(",") if x.strip()]:
        idx = np.argsort(-probs, axis=1)[:, :k]
        stored = (idx.astype(np.int16), np.take_along_axis(probs, idx, axis=1).astype(np.float16))
        again = [r.category for r in cat.categorize(stored, signals, abstract)]
        same = sum(a == b for a, b in zip(again, pred, strict=True))
        print(f"top-{k} stored as float16: same category as the full softmax for {same}/{len(pred)}")

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
