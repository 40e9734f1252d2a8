"""Build src/photosift/data/face_gate.npz: is a face worth looking for in this photo? (album/facegate.py)

    PYTHONPATH=src .venv/bin/python tools/build_face_gate.py               # cross-validate, build, report, write
    PYTHONPATH=src .venv/bin/python tools/build_face_gate.py --dry-run     # the same, writing nothing

What it learns: whether the face detector (album/people.py, exactly as ``classify`` runs it, on every photo)
finds a face, from the model's 1280-d embedding — float16-rounded and L2-normalised, as the catalog stores it.
It is an L2-regularised logistic regression with balanced class weights (scikit-learn, lbfgs: deterministic).

Training photos: the category-photo corpus's ``train`` split (docs/data/category-photos.tsv, rebuilt by
tools/fetch_category_photos.py), album-dev and tests/data. The threshold is the lowest out-of-fold score of a
photo with a face, in 5-fold cross-validation grouped by source package (every photo of a package in one fold):
on photos from packages it never saw, the gate skipped no photo in which the detector finds a face.

The ``test`` split (no package shared with ``train``) is read only to report: faces the gate keeps, photos it
skips, and the people recall and accuracy of the album categories with and without the gate (a skipped photo
gets no face signal, as in ``classify``), through the shipped learned category head.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from build_category_head import CORPUS, Photos, read_csv
from photosift.album import learned
from photosift.album.abstract import load_head as load_abstract_head
from photosift.album.facegate import BUILTIN_GATE
from photosift.album.people import PeopleDetector, PeopleSignal
from photosift.album.rules import Categorizer, load_rules
from photosift.bench.corpus import ALBUM_DEV, REPOSITORY
from photosift.core import imaging
from photosift.models.tasks import softmax

MODEL = "efficientnet-lite0"
SCALE = 10.0  # the unit embedding times this is what the regression sees (folded into the stored weight)
C = 0.1


def tests_data() -> Photos:
    files = sorted(p for p in (REPOSITORY / "tests" / "data").iterdir() if p.suffix in (".jpg", ".png"))
    return Photos(files, ["?"] * len(files), ["tests-data"] * len(files))


def face_signals(photos: Photos, cache: Path) -> list[PeopleSignal]:
    """The detector's signal on every photo (no gate), decoded as the pipeline decodes; cached per file."""
    target = cache / "face-signals.json"
    stored: dict[str, Any] = json.loads(target.read_text()) if target.is_file() else {}
    detector = PeopleDetector()
    missing = [p for p in photos.paths if str(p) not in stored]
    for p in missing:
        image = imaging.decode(imaging.read_bytes(p), p, min_side=256)
        stored[str(p)] = detector.detect(image).to_dict()
    if missing:
        cache.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(stored))
    return [PeopleSignal.from_dict(stored[str(p)]) for p in photos.paths]


def unit16(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings).astype(np.float16).astype(np.float64)
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


def regression() -> Any:
    """The probe, unfitted: what cross-validation scores and what is shipped."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, class_weight="balanced", max_iter=5000)


def categories(
    photos: Photos, cache: Path, signals: list[PeopleSignal | None], categorizer: Categorizer
) -> list[str]:
    """The album categories classify would store: the shipped learned head over these face signals."""
    out = photos.outputs(MODEL, cache)
    head = learned.load_head()
    abstract = load_abstract_head()
    assert head is not None and abstract is not None
    found, _ = learned.decide(
        head,
        categorizer,
        softmax(out["logits"]),
        signals,
        out["embedding"],
        abstract.scores(out["embedding"]),
    )
    return [r.category for r in found]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--album-dev", type=Path, default=ALBUM_DEV)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "photosift-category-head")
    ap.add_argument("--out", type=Path, default=BUILTIN_GATE)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    from sklearn.model_selection import GroupKFold, cross_val_predict

    train = read_csv(args.corpus / "labels.csv", args.corpus, "train")
    album = read_csv(args.album_dev / "labels.csv", args.album_dev / "images")
    album.groups[:] = "album-dev"
    extra = tests_data()
    sets = [train, album, extra]
    x = np.concatenate([unit16(s.outputs(MODEL, args.cache)["embedding"]) for s in sets])
    y = np.concatenate([[sig.faces > 0 for sig in face_signals(s, args.cache)] for s in sets])
    groups = np.concatenate([s.groups for s in sets])
    print(
        f"training photos {len(y)}, with a face {int(y.sum())}, packages {len(set(groups))}", file=sys.stderr
    )

    oof = cross_val_predict(
        regression(),
        x * SCALE,
        y,
        cv=GroupKFold(5),
        groups=groups,
        method="decision_function",
    )
    threshold = float(np.floor(np.min(oof[y]) * 100) / 100)  # in logits, rounded down
    model = regression().fit(x * SCALE, y)
    weight = (model.coef_[0] * SCALE).astype(np.float32)
    bias = float(model.intercept_[0])
    report: dict[str, Any] = {
        "train_photos": len(y),
        "train_with_face": int(y.sum()),
        "cv_skipped_without_face": round(float(np.mean(oof[~y] < threshold)), 3),
    }

    # The test split: what the gate keeps and skips, and the categories with and without it.
    test = read_csv(args.corpus / "labels.csv", args.corpus, "test")
    signals = face_signals(test, args.cache)
    scores = unit16(test.outputs(MODEL, args.cache)["embedding"]) @ weight.astype(np.float64) + bias
    looked = scores >= threshold
    categorizer = Categorizer(load_rules())
    gated: list[PeopleSignal | None] = [s if k else None for s, k in zip(signals, looked, strict=True)]
    truth = test.labels
    has_face = np.array([s.faces > 0 for s in signals])
    for name, sig in (("without_gate", list(signals)), ("with_gate", gated)):
        cats = np.array(categories(test, args.cache, sig, categorizer))
        people = truth == "people"
        report[name] = {
            "accuracy": round(float(np.mean(cats == truth)), 3),
            "people_recall": f"{int(np.sum(cats[people] == 'people'))}/{int(people.sum())}",
            "false_people": int(np.sum((cats == "people") & ~people)),
        }
    report["test"] = {
        "photos": len(truth),
        "with_face": int(has_face.sum()),
        "faces_kept": f"{int(np.sum(looked & has_face))}/{int(has_face.sum())}",
        "faces_kept_of_people": f"{int(np.sum(looked & has_face & (truth == 'people')))}/"
        f"{int(np.sum(has_face & (truth == 'people')))}",
        "skipped_without_face": round(float(np.mean(~looked[~has_face])), 3),
        "skipped_all": round(float(np.mean(~looked)), 3),
    }
    print(json.dumps({"threshold": threshold, **report}, indent=1))
    if args.dry_run:
        return 0
    meta = {
        "arch": MODEL,
        "model": MODEL,
        "features": "float16-rounded embedding, L2-normalised",
        "label": "the face detector finds a face (album/people.py, every photo)",
        "c": C,
        "threshold_logit": threshold,
        "threshold": 1.0 / (1.0 + float(np.exp(-threshold))),
        "report": report,
        "built_by": "tools/build_face_gate.py",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out, weight=weight, bias=np.array(bias, dtype=np.float64), meta=np.array(json.dumps(meta))
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
