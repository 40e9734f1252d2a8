"""Build src/photosift/data/category_head.npz: album categories learned from hand-labelled real photos.

    PYTHONPATH=src .venv/bin/python tools/build_category_head.py [--corpus DIR]       # cross-validate, build, write
    PYTHONPATH=src .venv/bin/python tools/build_category_head.py --dry-run             # cross-validate and report only
    PYTHONPATH=src .venv/bin/python tools/build_category_head.py --report-only         # score the shipped head

Training data: the ``train`` split of the category-photo corpus (docs/data/category-photos.tsv, rebuilt by
tools/fetch_category_photos.py into DIR with a labels.csv) and album-dev (141 tuxpaint cut-outs, 12 MATE
photos), so that the head knows cut-outs too. The corpus's ``test`` split shares no package with ``train``; it
is scored at the end and never used to choose anything. album-dev is therefore no longer an evaluation set for
the head; the held-out cut-outs (docs/data/heldout-cutouts.tsv) are.

Every photo goes through the pipeline's decode and preprocessing and the packaged efficientnet-lite0 (outputs
cached in --cache), and the face detector, as ``classify`` runs them. Features are photosift.album.learned's
``raw_features``: the float16-rounded, L2-normalised embedding, the log of each category's softmax mass under the
shipped rules, the face signal and the abstract-art probability. The head is an L2-regularised multinomial
logistic regression (scikit-learn, lbfgs: deterministic for the same inputs) with balanced class weights, on the
embedding times a scale and the other features standardised; the scale and C are the pair with the best
accuracy in cross-validation grouped by package (every photo of a package in the same fold; album-dev is one
group), so the choice too is made on photos from unseen packages. Scale and standardisation are folded into the
stored weights: the runtime computes ``softmax(W @ raw_features + b)``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from eval_categories import run_model
from photosift.album.abstract import load_head as load_abstract_head
from photosift.album.learned import BUILTIN_HEAD, CategoryHead, load_head, raw_features
from photosift.album.people import PeopleSignal
from photosift.album.rules import Categorizer, load_rules
from photosift.bench.corpus import ALBUM_DEV
from photosift.models.registry import registry
from photosift.models.tasks import softmax
from photosift.toolchain.evaluate import read_labels

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "corpora" / "category-photos"
if not CORPUS.is_dir():
    CORPUS = Path("/work/corpora/category-photos")
CUTOUTS = ROOT / "docs" / "data" / "heldout-cutouts.tsv"
MODELS = ("efficientnet-lite0", "efficientnet-lite0-int8")
SCALES = (3.0, 10.0, 30.0)  # the embedding's weight against the standardised side features
CS = (1.0,)
FOLDS = 5
# Corpus photos that are also in an evaluation set: never trained on.
EXCLUDE = {
    # the same MATE wallpaper as Elephants.jpg among the held-out cut-outs' `other` images
    "train/other/mate-backgrounds__backgrounds_mate_abstract_Elephants_5640x3172.jpg",
}


class Photos:
    """Labelled photos with what classify computes for them: model outputs and face signals."""

    def __init__(self, paths: list[Path], labels: list[str], groups: list[str]) -> None:
        self.paths, self.labels, self.groups = paths, np.array(labels), np.array(groups)

    def __len__(self) -> int:
        return len(self.paths)

    def outputs(self, model: str, cache: Path) -> dict[str, np.ndarray]:
        """logits, embedding and (fp32 model only) faces per photo, cached per model and file."""
        target = cache / f"{model}.npz"
        stored: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}
        if target.is_file():
            with np.load(target) as z:
                files, logits, embedding, people = z["files"], z["logits"], z["embedding"], z["people"]
            for i, f in enumerate(files):
                stored[str(f)] = (logits[i], embedding[i], str(people[i]))
        missing = [p for p in self.paths if str(p) not in stored]
        if missing:
            print(f"{model}: running on {len(missing)} photos", file=sys.stderr)
            got = run_model(missing, model, people=True)
            for i, p in enumerate(missing):
                stored[str(p)] = (got["logits"][i], got["embedding"][i], str(got["people"][i]))
            cache.mkdir(parents=True, exist_ok=True)
            files = sorted(stored)
            np.savez(
                target,
                files=np.array(files),
                logits=np.stack([stored[f][0] for f in files]),
                embedding=np.stack([stored[f][1] for f in files]),
                people=np.array([stored[f][2] for f in files]),
            )
        rows = [stored[str(p)] for p in self.paths]
        return {
            "logits": np.stack([r[0] for r in rows]),
            "embedding": np.stack([r[1] for r in rows]),
            "people": np.array([r[2] for r in rows]),
        }

    def features(self, model: str, cache: Path, categorizer: Categorizer) -> np.ndarray:
        """What the runtime computes (learned.decide): raw_features over the shipped rules' categories."""
        out = self.outputs(model, cache)
        abstract = load_abstract_head()
        assert abstract is not None
        faces = [PeopleSignal.from_dict(json.loads(s)) for s in out["people"]]
        probs = softmax(out["logits"])
        return raw_features(
            out["embedding"], categorizer.mass(probs), faces, abstract.scores(out["embedding"])
        )

    def rules(self, model: str, cache: Path, categorizer: Categorizer) -> np.ndarray:
        """The categories the rules alone give (with faces and the abstract detector), for comparison."""
        out = self.outputs(model, cache)
        abstract = load_abstract_head()
        assert abstract is not None
        faces = [PeopleSignal.from_dict(json.loads(s)) for s in out["people"]]
        found = categorizer.categorize(softmax(out["logits"]), faces, abstract.scores(out["embedding"]))
        return np.array([r.category for r in found])


def read_csv(labels: Path, images: Path, split: str | None = None) -> Photos:
    rows = [r for r in read_labels(labels, split) if r.category and r.file not in EXCLUDE]
    return Photos(
        [images / r.file for r in rows],
        [str(r.category) for r in rows],
        [r.source.split("=", 1)[0] for r in rows],
    )


def fit(
    x: np.ndarray, y: np.ndarray, c: float, scale: float, categories: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) over raw features: the embedding times ``scale``, the side features standardised on ``x``."""
    from sklearn.linear_model import LogisticRegression

    side = x.shape[1] - EMBEDDING_DIM
    mean = x[:, -side:].mean(axis=0)
    std = x[:, -side:].std(axis=0) + 1e-6
    z = x.copy()
    z[:, :-side] *= scale
    z[:, -side:] = (z[:, -side:] - mean) / std
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    model.fit(z, y)
    order = [list(model.classes_).index(name) for name in categories]
    w = model.coef_[order].astype(np.float64)
    b = model.intercept_[order].astype(np.float64)
    # Fold the scaling into the weights: W @ raw + b == coef @ z + intercept.
    w[:, :-side] *= scale
    w[:, -side:] /= std
    b = b - w[:, -side:] @ mean
    return w, b


EMBEDDING_DIM = 1280


def predict(w: np.ndarray, b: np.ndarray, x: np.ndarray, categories: list[str]) -> np.ndarray:
    return np.array(categories)[np.argmax(x @ w.T + b, axis=1)]


def cross_validate(x: np.ndarray, y: np.ndarray, groups: np.ndarray, categories: list[str]) -> dict[str, Any]:
    """Grouped out-of-fold accuracy for each (scale, C); the best pair."""
    from sklearn.model_selection import GroupKFold

    scores = {}
    for scale in SCALES:
        for c in CS:
            pred = np.empty(len(y), dtype=object)
            for train, held in GroupKFold(n_splits=FOLDS).split(x, y, groups):
                w, b = fit(x[train], y[train], c, scale, categories)
                pred[held] = predict(w, b, x[held], categories)
            acc = float(np.mean(pred == y))
            recall = float(np.mean([np.mean(pred[y == k] == k) for k in np.unique(y)]))
            scores[f"{scale:g}/{c:g}"] = {"accuracy": round(acc, 4), "mean_recall": round(recall, 4)}
            print(
                f"  scale {scale:g}, C {c:g}: accuracy {acc:.3f}, mean recall {recall:.3f}", file=sys.stderr
            )
    best = max(scores, key=lambda k: (scores[k]["accuracy"], scores[k]["mean_recall"]))
    return {"folds": FOLDS, "grid": scores, "chosen": best}


def report(name: str, truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    acc = float(np.mean(truth == pred))
    print(f"{name}: accuracy {acc:.3f} ({int(np.sum(truth == pred))}/{len(truth)})")
    per = {}
    for c in sorted(set(truth)):
        hit = int(np.sum((truth == c) & (pred == c)))
        n = int(np.sum(truth == c))
        wrong = Counter(pred[(truth == c) & (pred != c)])
        per[c] = [hit, n]
        print(f"  {c:13} {hit:3}/{n:<3} " + ", ".join(f"->{k} {v}" for k, v in wrong.most_common()))
    return {"accuracy": round(acc, 4), "per_category": per}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=CORPUS, help="the fetched category-photo corpus")
    ap.add_argument("--album-dev", type=Path, default=ALBUM_DEV)
    ap.add_argument(
        "--cutouts",
        type=Path,
        default=None,
        help="folder of the held-out cut-outs (docs/data/heldout-cutouts.tsv)",
    )
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "photosift-category-head")
    ap.add_argument("--out", type=Path, default=BUILTIN_HEAD)
    ap.add_argument("--dry-run", action="store_true", help="cross-validate and report; write nothing")
    ap.add_argument("--report-only", action="store_true", help="score the head at --out; train nothing")
    args = ap.parse_args()

    rules = load_rules()
    categorizer = Categorizer(rules)
    categories = list(rules.categories)
    train_corpus = read_csv(args.corpus / "labels.csv", args.corpus, "train")
    album = read_csv(args.album_dev / "labels.csv", args.album_dev / "images")
    album.groups[:] = "album-dev"
    test = read_csv(args.corpus / "labels.csv", args.corpus, "test")
    sets = {"test split": test}
    if args.cutouts is not None:
        sets["held-out cut-outs"] = read_csv(CUTOUTS, args.cutouts)

    model = MODELS[0]
    x = np.concatenate(
        [
            train_corpus.features(model, args.cache, categorizer),
            album.features(model, args.cache, categorizer),
        ]
    )
    y = np.concatenate([train_corpus.labels, album.labels])
    groups = np.concatenate([train_corpus.groups, album.groups])
    print(f"training photos: {len(y)} ({dict(sorted(Counter(y).items()))})", file=sys.stderr)

    if args.report_only:
        head = load_head(args.out)
        if head is None:
            print(f"{args.out}: no head", file=sys.stderr)
            return 1
        w, b, meta = head.weight, head.bias, head.meta
    else:
        cv = cross_validate(x, y, groups, categories)
        scale, c = (float(v) for v in cv["chosen"].split("/"))
        print(f"chosen: embedding scale {scale:g}, C {c:g}", file=sys.stderr)
        w, b = fit(x, y, c, scale, categories)
        meta = {
            "arch": registry()[model].summary.get("arch"),
            "trained_on": model,
            "features": "learned.raw_features: float16 embedding (L2), log category mass, faces, abstract",
            "training": {
                "corpus_train": len(train_corpus),
                "album_dev": len(album),
                "per_category": dict(sorted(Counter(y).items())),
            },
            "embedding_scale": scale,
            "C": c,
            "class_weight": "balanced",
            "cross_validation": cv,
        }
    results: dict[str, Any] = {}
    for name in MODELS:
        for what, photos in sets.items():
            xs = photos.features(name, args.cache, categorizer)
            results[f"{name} {what}"] = report(
                f"{name}, {what}, learned head", photos.labels, predict(w, b, xs, categories)
            )
            report(f"{name}, {what}, rules", photos.labels, photos.rules(name, args.cache, categorizer))
    if args.dry_run or args.report_only:
        return 0
    meta["measured"] = results
    head = CategoryHead(tuple(categories), w, b, meta)
    head.save(args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
