"""Generate a surface-inspection data set: textured metal plates that are clean, scratched or stained.

    PYTHONPATH=src .venv/bin/python tools/make_plates.py --out DIR [--per-class 200] [--seed 0] [--size 128]
        [--unlabelled]

Writes ``DIR/clean/``, ``DIR/scratched/`` and ``DIR/stained/`` (PNG, one folder per class, ready for
``photosift train DIR``); with ``--unlabelled``, every plate straight into ``DIR`` under a name that does not
tell its class (``u-<sha256 of its seed>.png``: photos for ``photosift train --teacher … --unlabelled DIR``).
Every plate is drawn from its own seeded generator, so a set is reproducible and two
seeds give two sets that share no plate (train on one, test on the other).

A plate: a base colour (steel, aluminium, brass, painted grey or green), a brushed texture (noise stretched
along a random direction), a lighting gradient and grain, and things every class has: bolt holes in some
corners, faint tool marks (low-contrast, broad streaks), dust specks. A *scratch* is 1–3 thin lines (straight
or slightly bent, 1–2 px at 128 px, brighter or darker than the metal, fading along their length); a *stain* is
1–3 soft-edged irregular blotches of rust, oil or water-mark colour, partly transparent. Defects are small and
low in contrast on purpose: the task needs local detail, which is what the UNet-classifier's skips carry.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("clean", "scratched", "stained")
METALS = [(150, 152, 156), (190, 192, 196), (176, 148, 92), (110, 112, 116), (92, 120, 96)]
STAINS = [(120, 62, 30), (60, 48, 36), (150, 140, 120), (90, 70, 40)]


def _brushed(rng: np.random.Generator, size: int) -> np.ndarray:
    """Noise stretched along a random direction: the look of brushed metal, in [-1, 1]."""
    big = size * 2
    noise = Image.fromarray((rng.random((big, big)) * 255).astype(np.uint8))
    stretched = noise.resize((big, max(2, big // 16)), Image.Resampling.BILINEAR).resize(
        (big, big), Image.Resampling.BICUBIC
    )
    rotated = stretched.rotate(float(rng.uniform(0, 180)), resample=Image.Resampling.BILINEAR)
    off = (big - size) // 2
    arr = np.asarray(rotated, dtype=np.float32)[off : off + size, off : off + size]
    return (arr - arr.mean()) / (arr.std() + 1e-6)


def _plate(rng: np.random.Generator, size: int) -> np.ndarray:
    base = np.array(METALS[rng.integers(len(METALS))], dtype=np.float32) * rng.uniform(0.85, 1.15)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * math.pi)
    light = 1 + rng.uniform(0.05, 0.25) * ((xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle))
    texture = 1 + rng.uniform(0.03, 0.08) * _brushed(rng, size)
    img = base[None, None, :] * (light * texture)[:, :, None]
    # tool marks: broad, faint streaks every class has (a detector must not call them scratches)
    for _ in range(rng.integers(0, 3)):
        mark = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mark)
        x0, y0 = rng.uniform(0, size, 2)
        a = rng.uniform(0, math.pi)
        length = rng.uniform(0.3, 1.0) * size
        draw.line(
            [(x0, y0), (x0 + length * math.cos(a), y0 + length * math.sin(a))], fill=255, width=int(size / 12)
        )
        soft = np.asarray(mark.filter(ImageFilter.GaussianBlur(size / 25)), dtype=np.float32) / 255
        img *= 1 + rng.choice([-1, 1]) * 0.05 * soft[:, :, None]
    return img


def _holes(img: np.ndarray, rng: np.random.Generator, size: int) -> None:
    r = size * rng.uniform(0.03, 0.05)
    for cx, cy in ((0.1, 0.1), (0.9, 0.1), (0.1, 0.9), (0.9, 0.9)):
        if rng.random() < 0.5:
            yy, xx = np.ogrid[0:size, 0:size]
            d = np.hypot(xx - cx * size, yy - cy * size)
            img[d < r] *= 0.25
            ring = (d >= r) & (d < r * 1.4)
            img[ring] *= 1.15


def _specks(img: np.ndarray, rng: np.random.Generator, size: int) -> None:
    for _ in range(rng.integers(0, 6)):
        x, y = rng.integers(0, size, 2)
        img[max(0, y - 1) : y + 1, max(0, x - 1) : x + 1] *= rng.uniform(0.7, 1.2)


def _scratch(img: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.integers(1, 4)):
        x, y = rng.uniform(0.15, 0.85, 2) * size
        a = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(0.3, 0.7) * size
        steps = 8
        bend = rng.uniform(-0.04, 0.04)
        points = []
        for _ in range(steps + 1):
            points.append((x, y))
            a += bend
            x += math.cos(a) * length / steps
            y += math.sin(a) * length / steps
        strength = int(rng.uniform(120, 255))
        draw.line(points, fill=strength, width=max(1, round(rng.uniform(2.0, 4.0) * size / 128)))
    alpha = np.asarray(layer.filter(ImageFilter.GaussianBlur(0.5)), dtype=np.float32) / 255
    tone = rng.choice([1.4, 0.55])  # a bright scratch (bare metal) or a dark one (groove)
    return img * (1 + (tone - 1) * alpha[:, :, None])


def _stain(img: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    for _ in range(rng.integers(1, 4)):
        mask = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mask)
        cx, cy = rng.uniform(0.15, 0.85, 2) * size
        radius = rng.uniform(0.05, 0.14) * size
        for _ in range(rng.integers(3, 7)):  # a blotch: overlapping ellipses around one centre
            dx, dy = rng.normal(0, radius * 0.5, 2)
            rx, ry = radius * rng.uniform(0.5, 1.0, 2)
            draw.ellipse([cx + dx - rx, cy + dy - ry, cx + dx + rx, cy + dy + ry], fill=255)
        alpha = np.asarray(mask.filter(ImageFilter.GaussianBlur(radius * 0.3)), dtype=np.float32) / 255
        alpha *= rng.uniform(0.25, 0.55)
        colour = np.array(STAINS[rng.integers(len(STAINS))], dtype=np.float32)
        img = img * (1 - alpha[:, :, None]) + colour[None, None, :] * alpha[:, :, None]
    return img


def plate(kind: str, seed: int, size: int = 128) -> Image.Image:
    """One plate of class ``kind``, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    img = _plate(rng, size)
    _holes(img, rng, size)
    _specks(img, rng, size)
    if kind == "scratched":
        img = _scratch(img, rng, size)
    elif kind == "stained":
        img = _stain(img, rng, size)
    img = img + rng.normal(0, rng.uniform(1.5, 4.0), img.shape)  # sensor grain
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0, help="sets with different seeds share no plate")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--unlabelled", action="store_true", help="one folder, names that hide the class")
    args = ap.parse_args()
    for c, kind in enumerate(CLASSES):
        folder = args.out if args.unlabelled else args.out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(args.per_class):
            seed = (args.seed * 1_000_003 + c) * 100_003 + i
            name = (
                f"u-{hashlib.sha256(str(seed).encode()).hexdigest()[:10]}.png"
                if args.unlabelled
                else f"plate-{args.seed}-{i:05d}.png"
            )
            plate(kind, seed, args.size).save(folder / name)
    print(f"wrote {args.per_class * len(CLASSES)} plates to {args.out}")


if __name__ == "__main__":
    main()
