"""Face detection on the people sets: recall, false detections and cost, with and without the classifier gate.

    PYTHONPATH=src .venv/bin/python tools/eval_faces.py [--photos DIR] [--album-dev DIR] [--json]

Sets (each decoded as the pipeline decodes it: DCT-scaled to a shorter side of at least 256 px):

* ``--photos``: the labelled real-photo corpus (``labels.csv`` with a ``people`` yes/no column; see
  docs/data/README.md): recall on ``people=yes``, false detections on ``people=no``;
* ``--album-dev``: the dev album (no people): false detections;
* tests/data: astronaut, grace_hopper and camera have one face each, the rest none.

For each photo the classifier runs first, so the gates (``PeopleDetector.to_search``: the category gate, which
skips photos the classifier files under animals or plants with confidence, and the face gate on the embedding,
album/facegate.py, off with ``--no-face-gate``) are applied exactly as ``photosift classify`` applies them. "found" counts
photos with at least one face; "decisive" those whose faces cover >= 0.3 % of the photo (the rules' smallest
``min_face_area``). ms/photo is CPU time of the detector on one thread, over every photo of the set (gated photos
count as 0).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from photosift.album import learned
from photosift.album.abstract import head_for_model
from photosift.album.decisions import AlbumClassifier
from photosift.album.facegate import gate_for_model
from photosift.album.people import PeopleDetector
from photosift.album.rules import load_rules
from photosift.bench.corpus import ALBUM_DEV, REPOSITORY
from photosift.core import imaging
from photosift.models.registry import resolve_model
from photosift.models.session import open_session
from photosift.models.tasks import softmax

TEST_FACES = {"astronaut.jpg", "grace_hopper.jpg", "camera.png"}


def photo_sets(photos: Path | None, album_dev: Path | None) -> list[tuple[str, Path, bool]]:
    rows: list[tuple[str, Path, bool]] = []
    if photos is not None and (photos / "labels.csv").is_file():
        for r in csv.DictReader((photos / "labels.csv").open()):
            rows.append(("photos", photos / r["file"], r["people"] == "yes"))
    if album_dev is not None and (album_dev / "labels.csv").is_file():
        for r in csv.DictReader((album_dev / "labels.csv").open()):
            rows.append(("album-dev", album_dev / "images" / r["file"], False))
    data = REPOSITORY / "tests" / "data"
    for p in sorted(data.glob("*")):
        if p.suffix in (".jpg", ".png"):
            rows.append(("tests", p, p.name in TEST_FACES))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=Path("/work/corpora/category-photos"))
    ap.add_argument("--album-dev", type=Path, default=ALBUM_DEV)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--min-face", type=float, default=0.1)
    ap.add_argument(
        "--no-face-gate", action="store_true", help="the category gate only, as before the face gate"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rows = photo_sets(args.photos, args.album_dev)
    resolved = resolve_model(args.model)
    card = resolved.card
    session = open_session(resolved.path)
    sha = resolved.sha256
    album = AlbumClassifier(
        load_rules(None),
        abstract=head_for_model(sha),
        category_head=learned.head_for_model(sha),
        face_gate=None if args.no_face_gate else gate_for_model(sha),
    )
    detector = PeopleDetector(min_face=args.min_face)
    stats: dict[str, dict[str, float]] = {}
    for name, path, people in rows:
        image = imaging.decode(imaging.read_bytes(path), path, min_side=card.preprocess.resize_size)
        logits, embedding = session.run(
            [card.logits_name, "embedding"],
            {card.input_name: imaging.to_tensor(image, card.preprocess)[None]},
        )
        (first,) = album.categorize(softmax(logits), None, embedding)
        possible = album.might_show_faces(embedding)
        t0 = time.process_time()
        signal = detector.detect(image)
        cost = time.process_time() - t0
        (wanted,) = detector.to_search([first], possible)
        key = f"{name} people={'yes' if people else 'no'}"
        s = stats.setdefault(
            key, {"photos": 0, "found": 0, "decisive": 0, "gated_found": 0, "gated_decisive": 0}
        )
        s.setdefault("ms_all", 0.0)
        s.setdefault("ms_gated", 0.0)
        s.setdefault("looked", 0)
        s["photos"] += 1
        s["ms_all"] += 1000 * cost
        found, decisive = signal.faces > 0, signal.face_area >= 0.003
        s["found"] += found
        s["decisive"] += decisive
        if wanted:
            s["looked"] += 1
            s["ms_gated"] += 1000 * cost
            s["gated_found"] += found
            s["gated_decisive"] += decisive
    for s in stats.values():
        s["ms_all"] = round(s["ms_all"] / s["photos"], 2)
        s["ms_gated"] = round(s["ms_gated"] / s["photos"], 2)
    if args.json:
        print(json.dumps(stats, indent=1))
        return 0
    print(
        f"{'set':28} {'photos':>6} {'found':>6} {'decisive':>8} {'ms':>6} | gated: {'looked':>6} {'found':>6} {'decisive':>8} {'ms':>6}"
    )
    for key, s in stats.items():
        print(
            f"{key:28} {s['photos']:6} {s['found']:6} {s['decisive']:8} {s['ms_all']:6} |"
            f"        {s['looked']:6} {s['gated_found']:6} {s['gated_decisive']:8} {s['ms_gated']:6}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
