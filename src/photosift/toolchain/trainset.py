"""Training data for ``photosift train``: where the labelled photos come from, which of them are usable, how
they are split, and the views of each photo a model trains on.

Three sources give the same thing, a list of (photo, class name): a folder with one subfolder per class, a labels
CSV (``file,category``, as ``photosift eval`` reads it), or pairs the caller found (the corrections stored in a
catalog). Every photo is read and decoded once, by the decoder ``classify`` uses; an unreadable one is skipped and
listed, a second copy of the same content is dropped (a duplicate on both sides of the split would flatter the
validation score), and then the counts are checked: at least two classes, none empty, at least
:data:`MIN_PER_CLASS` photos in each.

A decoded photo keeps two images in memory (a few hundred kB): the exact square the model sees at inference
(:func:`photosift.core.imaging.model_view`, so validation scores are those of the exported model) and a *base*
image at about the model's resize size from which augmented views are cut: random crops, flips, small colour
changes. A cut-out (transparent background) is framed first, as at inference, so a crop never loses the object.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from photosift.core import imaging
from photosift.core.errors import PhotosiftError, ToolchainError
from photosift.core.imaging import Preprocess
from photosift.toolchain.evaluate import read_labels
from photosift.toolchain.modelfile import list_images

MIN_PER_CLASS = 2  # one to learn from and one to check on; a useful model needs far more (docs/TRAINING.md)
CROP_SCALE = (0.6, 1.0)  # side of a random crop, as a share of the base image's shorter side
CROP_ASPECT = (3 / 4, 4 / 3)
COLOUR_JITTER = 0.2  # brightness, contrast and saturation each scaled by 1 ± up to this
# The base image augmented views are cut from, relative to the model's resize size: large enough that a crop is
# scaled down to the input, never up (upscaling a 64 px base blurred 2-px scratches away: 0.77 instead of 0.97).
BASE_SCALE = 1.5


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    label: str


@dataclass
class TrainingData:
    """The photos a model will learn from, as found (nothing decoded yet)."""

    files: list[LabelledFile]
    origin: str  # "folder PATH", "labels PATH", "catalog PATH": names the data in messages and the card
    unlabelled: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return sorted({f.label for f in self.files})

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(f.label for f in self.files).items()))


def from_folders(root: Path) -> TrainingData:
    """``root/<class>/...``: every image under a class's folder (recursively) is one of its photos."""
    root = Path(root)
    if not root.is_dir():
        raise ToolchainError(f"{root}: training folder not found")
    files: list[LabelledFile] = []
    notes: list[str] = []
    empty = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = list_images(folder)
        if not found:
            empty.append(folder.name)
        files += [LabelledFile(p, folder.name) for p in found]
    loose = [p for p in list_images(root) if p.parent == root]
    if loose:
        notes.append(f"{len(loose)} images directly in {root} ignored: put each in its class's folder")
    data = TrainingData(files, f"folder {root}", notes=notes)
    if empty:
        raise ToolchainError(
            f"{root}: class folder{'s' if len(empty) > 1 else ''} {', '.join(map(repr, empty))} "
            f"{'have' if len(empty) > 1 else 'has'} no images; counts: {_counts_text(data.counts())}"
        )
    return data


def from_csv(labels_csv: Path, images: Path | None = None) -> TrainingData:
    """A labels CSV (``file,category``; ``file`` relative to ``images``, by default ``images/`` beside the CSV
    or else the CSV's folder, as for ``photosift eval``). Rows without a category are unlabelled photos."""
    labels_csv = Path(labels_csv)
    rows = read_labels(labels_csv)
    if images is None:
        images = (
            labels_csv.parent / "images" if (labels_csv.parent / "images").is_dir() else labels_csv.parent
        )
    files = [LabelledFile(Path(images) / r.file, r.category) for r in rows if r.category]
    unlabelled = [Path(images) / r.file for r in rows if not r.category]
    return TrainingData(files, f"labels {labels_csv}", unlabelled=unlabelled)


def from_pairs(pairs: Sequence[tuple[Path, str]], origin: str) -> TrainingData:
    """Photos the caller labelled (``--from-catalog``: the user's corrections)."""
    return TrainingData([LabelledFile(Path(p), c) for p, c in pairs], origin)


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{c} {n}" for c, n in counts.items()) or "none"


def check_counts(counts: dict[str, int], where: str) -> None:
    """At least two classes with at least MIN_PER_CLASS photos each, or an error that gives every count."""
    if len(counts) < 2:
        raise ToolchainError(
            f"{where}: a classifier needs at least two classes, found {len(counts)} ({_counts_text(counts)})"
        )
    few = [c for c, n in counts.items() if n < MIN_PER_CLASS]
    if few:
        raise ToolchainError(
            f"{where}: too few photos in {', '.join(map(repr, few))} (need at least {MIN_PER_CLASS} readable "
            f"photos per class); counts: {_counts_text(counts)}"
        )


@dataclass(eq=False)
class Photo:
    """One decoded photo: its inference views (one per preprocessing asked for) and the base for augmentation."""

    path: Path
    label: int  # index into the class list; -1 for an unlabelled photo
    sha256: str
    views: list[Image.Image]  # model_view(decoded, pre) for each Preprocess, in order
    base: Image.Image  # framed cut-out, or the photo, at BASE_SCALE x the resize size on its shorter side


@dataclass
class PhotoSet:
    """The decoded training photos: labelled ones (``photos``), unlabelled ones, and what was skipped."""

    classes: list[str]
    photos: list[Photo]
    unlabelled: list[Photo]
    skipped: list[tuple[str, str]]  # (path, reason)
    duplicates: int
    origin: str
    notes: list[str]

    def labels(self) -> np.ndarray:
        return np.array([p.label for p in self.photos], dtype=np.int64)

    def counts(self) -> dict[str, int]:
        found = Counter(p.label for p in self.photos)
        return {c: found.get(i, 0) for i, c in enumerate(self.classes)}

    def fingerprint(self) -> str:
        """sha256 over the sorted (class, content sha256) pairs: the same photos with the same labels give the
        same fingerprint wherever they lie and whatever their names."""
        lines = sorted(f"{self.classes[p.label]}\t{p.sha256}" for p in self.photos)
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _decode(
    path: Path, pres: Sequence[Preprocess], work_size: int
) -> tuple[str, list[Image.Image], Image.Image]:
    data = imaging.read_bytes(path)
    decoded: dict[int, Image.Image] = {}

    def at(min_side: int) -> Image.Image:
        # A JPEG is DCT-scaled to the size asked for, as classify decodes it for each model: decode once per
        # size so every inference view has exactly the pixels classify's would. Other formats decode once.
        key = min_side if data[:3] == b"\xff\xd8\xff" else 0
        if key not in decoded:
            decoded[key] = imaging.decode(data, path, min_side=min_side)
        return decoded[key]

    views = [imaging.model_view(at(p.resize_size), p) for p in pres]
    image = at(work_size)
    box = imaging.cutout_box(image)
    if box is not None:
        base = imaging.frame_cutout(image, box, work_size)
    else:
        scale = work_size / min(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        base = image.resize(size, Image.Resampling.BILINEAR) if scale < 1 else image.copy()
    return hashlib.sha256(data).hexdigest(), views, base


def load_photos(
    data: TrainingData,
    pres: Sequence[Preprocess],
    *,
    threads: int = 2,
    on_photo: Callable[[int, int], None] | None = None,
) -> PhotoSet:
    """Read and decode every photo of ``data`` once (unreadable ones skipped and listed, duplicates dropped),
    then check the counts of what is left."""
    classes = data.classes
    check_counts(data.counts(), data.origin)
    index = {c: i for i, c in enumerate(classes)}
    work_size = round(BASE_SCALE * max(p.resize_size for p in pres))
    jobs = [(f.path, index[f.label]) for f in data.files] + [(p, -1) for p in data.unlabelled]

    def one(job: tuple[Path, int]) -> tuple[str, list[Image.Image], Image.Image] | PhotosiftError:
        try:
            return _decode(job[0], pres, work_size)
        except PhotosiftError as exc:
            return exc

    photos: list[Photo] = []
    unlabelled: list[Photo] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    duplicates = 0
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # Pillow decodes without the GIL
        for n, ((path, label), got) in enumerate(zip(jobs, pool.map(one, jobs), strict=True), 1):
            if on_photo is not None:
                on_photo(n, len(jobs))
            if isinstance(got, PhotosiftError):
                skipped.append((str(path), getattr(got, "reason", str(got))))
                continue
            sha, views, base = got
            if sha in seen:
                duplicates += 1
                continue
            seen.add(sha)
            (photos if label >= 0 else unlabelled).append(Photo(Path(path), label, sha, views, base))
    result = PhotoSet(classes, photos, unlabelled, skipped, duplicates, data.origin, list(data.notes))
    counts = result.counts()
    if skipped or duplicates:
        check_counts(
            counts, f"{data.origin} (after skipping {len(skipped)} unreadable, {duplicates} duplicates)"
        )
    return result


def split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation indices: about ``val_fraction`` of each class (at least one photo when the
    fraction is above zero), never a class's last training photo."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = 0 if val_fraction <= 0 else min(len(idx) - 1, max(1, round(len(idx) * val_fraction)))
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64)


def class_weights(labels: np.ndarray, classes: int) -> np.ndarray:
    """Weights that give every class the same total weight in the loss (n / (k * n_c))."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    weights = len(labels) / (classes * np.maximum(counts, 1))
    return weights.astype(np.float32)


def augment(
    base: Image.Image,
    size: int,
    rng: np.random.Generator,
    crop: tuple[float, float] = CROP_SCALE,
    jitter: float = COLOUR_JITTER,
) -> Image.Image:
    """A random view of ``base`` at ``size`` x ``size``: a crop of ``crop`` (share of its shorter side) with a
    little aspect change, a horizontal flip half the time, brightness, contrast and saturation within
    ±``jitter``. The draws do not depend on ``size``: the same generator state gives the same view at any size."""
    w, h = base.size
    short = min(w, h)
    side = short * rng.uniform(*crop)
    aspect = math.exp(rng.uniform(math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1])))
    cw, ch = min(w, side * math.sqrt(aspect)), min(h, side / math.sqrt(aspect))
    x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    flip = rng.random() < 0.5
    factors = 1.0 + rng.uniform(-jitter, jitter, 3)
    view = base.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    if flip:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if jitter > 0:
        for enhancer, factor in zip(
            (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color), factors, strict=True
        ):
            view = enhancer(view).enhance(float(factor))
    return view


@dataclass(frozen=True)
class Views:
    """Renders view ``v`` of a photo for one preprocessing: view 0 is the inference view, view v > 0 a random
    augmentation drawn from a generator seeded by (seed, the photo's content, v) — the same view whatever the
    order of the photos, the size asked for, or the thread that renders it."""

    pre: Preprocess
    which: int  # index of ``pre`` in load_photos' list (its inference view)
    seed: int
    crop: tuple[float, float] = CROP_SCALE
    jitter: float = COLOUR_JITTER

    def image(self, photo: Photo, v: int) -> Image.Image:
        if v == 0:
            return photo.views[self.which]
        rng = np.random.default_rng([self.seed, int(photo.sha256[:12], 16), v])
        return augment(photo.base, self.pre.input_size, rng, self.crop, self.jitter)

    def batch(self, photos: Sequence[Photo], v: Sequence[int]) -> np.ndarray:
        """(N, 3, S, S) float32, normalised as the card says."""
        return np.stack(
            [imaging.normalise(self.image(p, k), self.pre) for p, k in zip(photos, v, strict=True)]
        )
