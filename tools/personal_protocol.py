"""The personal-head protocol: simulated honest users correct photos; does anything else get worse?

    PYTHONPATH=src .venv/bin/python tools/personal_protocol.py                      # album-dev (+ sets below)
    PYTHONPATH=src .venv/bin/python tools/personal_protocol.py --set NAME=LABELS.csv[:IMAGES] ... [--trials 200]
    PYTHONPATH=src .venv/bin/python tools/personal_protocol.py --similarity 0.55   # another gate, to explore

Each set is a labels CSV (``file,category``; ``file`` relative to IMAGES, default ``images/`` beside the CSV, or
absolute); ``NAME=CSV:IMAGES@SPLIT`` keeps the rows whose ``split`` column says SPLIT. Every image goes through the pipeline's decoding, the packaged model, the face detector and the
abstract-art detector once (``--cache DIR`` keeps the outputs); each photo's category before any correction is
what ``classify`` decides (the shipped rules, the abstract-art detector, the learned head).
Then, for ``--trials`` seeded trials, a user corrects k = 1…20 photos one by one in a random order to their true
category — only photos the rules got wrong ("wrong", what users do), or any photo ("random") — and after each
correction the accuracy of the photos *not* corrected, under rules + the shipped personal head
(photosift.album.personal.simulate_users), is compared with the rules' accuracy on the same photos.

Prints a markdown table (k, mean and worst change in points per set and pick) for docs/CATEGORIES.md, and
whether the shipping rule holds: the mean change never below 0 and no trial below −1 point.

Default sets: album-dev; ``heldout-stamps`` (docs/data/heldout-stamps.csv, tuxpaint stamps not in album-dev) when
``--stamps DIR`` points at an extracted ``/usr/share/tuxpaint/stamps``; ``category-photos`` (its test split) when
/work/corpora/category-photos/labels.csv exists.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

# Thousands of small matrix products: one BLAS thread each is several times faster than threads that wait.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from photosift.album import learned
from photosift.album.abstract import head_for_model
from photosift.album.decisions import AlbumClassifier
from photosift.album.people import PeopleSignal
from photosift.album.personal import SIMILARITY, simulate_users
from photosift.album.rules import load_rules
from photosift.core.config import default_data_dir
from photosift.models.registry import resolve_model
from photosift.models.tasks import softmax

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling tool
from eval_categories import DEFAULT_SET, run_model

ALBUM_DEV = (
    DEFAULT_SET if DEFAULT_SET.is_dir() else Path("/work/shared/datasets/album-dev")
)  # from a worktree
REPO = Path(__file__).resolve().parents[1]
STAMPS_CSV = REPO / "docs" / "data" / "heldout-stamps.csv"
PHOTOS_CSV = Path("/work/corpora/category-photos/labels.csv")
PICKS = ("wrong", "random")


def load_set(spec: str, model: str, cache: Path | None) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(name, true categories, the rules' categories, float16 embeddings) of a ``NAME=CSV[:IMAGES]`` set."""
    name, _, rest = spec.partition("=")
    rest, _, split = rest.partition("@")
    labels, _, images = rest.partition(":")
    csv_path = Path(labels)
    root = Path(images) if images else csv_path.parent / "images"
    rows = [r for r in csv.DictReader(csv_path.open()) if not split or r.get("split") == split]
    paths = [Path(r["file"]) if Path(r["file"]).is_absolute() else root / r["file"] for r in rows]
    truth = np.array([r["category"] for r in rows])
    cached = cache / f"{name}{'@' + split if split else ''}.npz" if cache else None
    if cached is not None and cached.is_file():
        out = dict(np.load(cached))
    else:
        out = run_model(paths, model, people=True)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cached, **out)
    signals = [PeopleSignal.from_dict(json.loads(s)) for s in out["people"]] if len(out["people"]) else None
    sha = resolve_model(model, default_data_dir()).sha256
    # What classify decides for the packaged model: the shipped rules, the abstract-art detector, the learned head.
    album = AlbumClassifier(
        load_rules(None), abstract=head_for_model(sha), category_head=learned.head_for_model(sha)
    )
    decided = album.categorize(softmax(out["logits"]), signals, out["embedding"])
    rules = np.array([d.category for d in decided])
    return name, truth, rules, out["embedding"].astype(np.float16)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], help="NAME=LABELS.csv[:IMAGES]; repeatable")
    ap.add_argument("--stamps", type=Path, default=None, help="extracted usr/share/tuxpaint/stamps")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--k", type=int, default=20, help="corrections per trial (k = 1..K)")
    ap.add_argument("--similarity", type=float, default=SIMILARITY)
    ap.add_argument("--cache", type=Path, default=None, help="folder for the model outputs of each set")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    specs = args.set or [f"album-dev={ALBUM_DEV / 'labels.csv'}"]
    if not args.set and args.stamps is not None:
        specs.append(f"heldout-stamps={STAMPS_CSV}:{args.stamps}")
    if not args.set and PHOTOS_CSV.is_file():
        # Its test split: the learned head was trained on the rest.
        specs.append(f"category-photos={PHOTOS_CSV}:{PHOTOS_CSV.parent}@test")

    columns: list[tuple[str, str, np.ndarray]] = []
    for spec in specs:
        name, truth, rules, embeddings = load_set(spec, args.model, args.cache)
        wrong = int(np.sum(truth != rules))
        print(
            f"{name}: {len(truth)} photos, accuracy before corrections {np.mean(truth == rules):.3f}, {wrong} wrong",
            file=sys.stderr,
        )
        for pick in PICKS:
            changes = simulate_users(
                truth, rules, embeddings, pick=pick, k_max=args.k, trials=args.trials, seed=args.seed,
                similarity=args.similarity,
            )  # fmt: skip
            columns.append((name, pick, changes))

    print(f"\nsimilarity gate {args.similarity:g}, {args.trials} trials; change in accuracy of the photos not "
          "corrected, in points (mean / worst trial)\n")  # fmt: skip
    print("| k | " + " | ".join(f"{n} {p}" for n, p, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for k in range(args.k):
        cells = []
        for _, _, ch in columns:
            col = ch[:, k]
            cells.append("—" if np.isnan(col).all() else f"{np.nanmean(col):+.2f} / {np.nanmin(col):+.2f}")
        print(f"| {k + 1} | " + " | ".join(cells) + " |")
    ok = True
    for name, pick, ch in columns:
        ch = ch[:, ~np.isnan(ch).all(axis=0)]  # k beyond the photos there are to pick: no trial reaches it
        lowest_mean = float(np.nanmin(np.nanmean(ch, axis=0)))
        worst = float(np.nanmin(ch))
        good = lowest_mean >= 0 and worst >= -1.0
        ok &= good
        print(
            f"{name} {pick}: lowest mean {lowest_mean:+.3f}, worst trial {worst:+.2f} -> {'ok' if good else 'FAIL'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
