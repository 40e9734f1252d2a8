"""Lay out the album-category training and held-out sets of docs/TRAINING.md as folders (one per category).

    PYTHONPATH=src .venv/bin/python tools/album_sets.py --stamps DIR --out DIR [--album-dev DIR]

``train/``: album-dev's 153 labelled images, one folder per category (symlinks). ``heldout/``: every other photo
stamp of Debian's ``tuxpaint-stamps-default`` 2022.06.04 in the folders album-dev draws from (animals, food,
plants, vehicles; clothes, hobbies, household, sports as objects), none of them in album-dev, skipping the
``cartoon``, ``toys`` and ``plastic`` sub-folders — the held-out cut-outs of docs/CATEGORIES.md without its 7
abstract wallpapers; ``heldout.csv`` labels them for ``photosift eval --labels heldout.csv --images
OUT/heldout``. ``--stamps`` is the package's ``usr/share/tuxpaint/stamps`` after

    apt-get download tuxpaint-stamps-default=2022.06.04-1 && dpkg-deb -x tuxpaint-stamps-default_*.deb x
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

FOLDER_CATEGORY = {
    "animals": "animals",
    "food": "food",
    "plants": "plants",
    "vehicles": "vehicles",
    "clothes": "objects",
    "hobbies": "objects",
    "household": "objects",
    "sports": "objects",
}
SKIP_PARTS = {"cartoon", "toys", "plastic"}
ALBUM_DEV = Path("/work/shared/datasets/album-dev")


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(src.resolve())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stamps", type=Path, required=True, help="tuxpaint-stamps-default's stamps folder")
    ap.add_argument("--album-dev", type=Path, default=ALBUM_DEV)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    used = set()
    train = Counter()
    with (args.album_dev / "labels.csv").open() as f:
        for row in csv.DictReader(f):
            link(args.album_dev / "images" / row["file"], args.out / "train" / row["category"] / row["file"])
            train[row["category"]] += 1
            source = row.get("source", "")
            if source.startswith("tuxpaint-stamps-default:"):
                used.add(source.split(":", 1)[1])
    held = Counter()
    rows = []
    for png in sorted(args.stamps.rglob("*.png")):
        rel = png.relative_to(args.stamps)
        category = FOLDER_CATEGORY.get(rel.parts[0])
        if category is None or SKIP_PARTS & set(rel.parts) or rel.as_posix() in used:
            continue
        name = f"{category}/{'__'.join(rel.parts)}"
        link(png, args.out / "heldout" / name)
        rows.append((name, category))
        held[category] += 1
    with (args.out / "heldout.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "category"])
        writer.writerows(rows)
    print(f"train: {sum(train.values())} {dict(sorted(train.items()))}")
    print(f"heldout: {sum(held.values())} {dict(sorted(held.items()))}")


if __name__ == "__main__":
    main()
