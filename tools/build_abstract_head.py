"""Build src/photosift/data/abstract_head.npz: the "abstract art vs photo" detector over the model's embedding.

    PYTHONPATH=src .venv/bin/python tools/build_abstract_head.py                # build and write the head
    PYTHONPATH=src .venv/bin/python tools/build_abstract_head.py --dry-run      # cross-validate only
    PYTHONPATH=src .venv/bin/python tools/build_abstract_head.py --save-samples DIR   # look at the generated art

Positives: procedurally generated abstract images (gradients, waves, polygons, Mondrian grids, colour noise,
circles, fractals, blurred blobs, stripes and layered mixtures of them), seeded, so the build is reproducible.
Negatives: the photos and cut-outs we may tune on -- album-dev's images (tuxpaint cut-outs, MATE nature
photos), tests/data/*, and the sample photos of scikit-learn and matplotlib -- each also as a few seeded
augmentations (crops of at least half the photo, flips, small rotations, colour/brightness jitter, JPEG).
album-dev's own `other` images (abstract MATE backgrounds) are left out of both sides.

Every image goes through the pipeline's own decode and preprocessing (imaging.decode, imaging.to_tensor) and the
packaged efficientnet-lite0; the features are the 1280-d embedding rounded to float16 (what the catalog stores,
so `recategorize` gives exactly the classify-time answer), L2-normalised. The head is an L2-regularised logistic
regression. The suggested threshold is chosen by grouped cross-validation on this training data only (every
augmentation of one source image in the same fold): the lowest threshold at which at most 1% of the out-of-fold
negatives score above it, rounded up to 0.01. Held-out sets are never read here.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from photosift.bench.corpus import ALBUM_DEV
from photosift.core import imaging
from photosift.core.config import default_data_dir
from photosift.models.registry import resolve_model

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "photosift" / "data" / "abstract_head.npz"
SEED = 20261122


# -- generated abstract art -------------------------------------------------------------------------------------


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    # Mostly saturated, sometimes pastel or dark: wallpapers use all of them.
    h, s, v = rng.random(), rng.choice([rng.uniform(0.5, 1.0), rng.uniform(0.1, 0.5)]), rng.uniform(0.2, 1.0)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.array([_colour(rng) for _ in range(n)], dtype=np.float32)


def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return x / max(w, h), y / max(w, h)


def _ramp(t: np.ndarray, pal: np.ndarray) -> np.ndarray:
    """Map t in [0, 1] through a piecewise-linear palette."""
    t = np.clip(t, 0, 1) * (len(pal) - 1)
    i = np.minimum(t.astype(int), len(pal) - 2)
    f = (t - i)[..., None]
    return pal[i] * (1 - f) + pal[i + 1] * f


def gradient(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    x, y = _grid(w, h)
    pal = _palette(rng, int(rng.integers(2, 5)))
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * math.pi)
        t = x * math.cos(a) + y * math.sin(a)
    else:
        cx, cy = rng.uniform(-0.2, 1.2, 2)
        t = np.hypot(x - cx, y - cy)
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    return _ramp(t, pal)


def waves(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    x, y = _grid(w, h)
    t = np.zeros_like(x)
    for _ in range(int(rng.integers(1, 5))):
        a, f, ph = rng.uniform(0, 2 * math.pi), rng.uniform(2, 25), rng.uniform(0, 2 * math.pi)
        u = x * math.cos(a) + y * math.sin(a)
        warp = rng.uniform(0, 0.15) * np.sin(rng.uniform(2, 10) * (x * math.sin(a) - y * math.cos(a)))
        t += np.sin(2 * math.pi * f * (u + warp) + ph)
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    if rng.random() < 0.3:
        t = (t * rng.integers(3, 9)).astype(int) / 8.0  # posterised bands
    return _ramp(t, _palette(rng, int(rng.integers(2, 6))))


def polygons(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    im = Image.new("RGB", (w, h), _colour(rng))
    d = ImageDraw.Draw(im, "RGBA")
    for _ in range(int(rng.integers(3, 40))):
        k = int(rng.integers(3, 7))
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.6) * max(w, h)
        pts = [
            (cx + r * math.cos(a) * rng.uniform(0.5, 1), cy + r * math.sin(a) * rng.uniform(0.5, 1))
            for a in np.sort(rng.uniform(0, 2 * math.pi, k))
        ]
        d.polygon(pts, fill=(*_colour(rng), int(rng.integers(90, 256))))
    return np.asarray(im, dtype=np.float32)


def low_poly(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Triangulated gradient (the 'low poly' wallpaper look)."""
    base = gradient(rng, w, h)
    im = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(im)
    n = int(rng.integers(4, 14))
    xs = np.linspace(0, w, n + 1)
    ys = np.linspace(0, h, n + 1)
    jit = rng.uniform(-0.4, 0.4, (n + 1, n + 1, 2))
    pts = np.stack(np.meshgrid(xs, ys, indexing="xy"), -1) + jit * np.array([w / n, h / n])
    for i in range(n):
        for j in range(n):
            a, b, c, e = pts[i, j], pts[i, j + 1], pts[i + 1, j], pts[i + 1, j + 1]
            for tri in ((a, b, c), (b, e, c)):
                cx = int(np.clip(np.mean([p[0] for p in tri]), 0, w - 1))
                cy = int(np.clip(np.mean([p[1] for p in tri]), 0, h - 1))
                col = np.clip(base[cy, cx] * rng.uniform(0.85, 1.15), 0, 255)
                d.polygon([tuple(p) for p in tri], fill=tuple(int(v) for v in col))
    return np.asarray(im, dtype=np.float32)


def mondrian(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    im = Image.new("RGB", (w, h), (245, 245, 240) if rng.random() < 0.6 else _colour(rng))
    d = ImageDraw.Draw(im)
    boxes = [(0.0, 0.0, float(w), float(h))]
    for _ in range(int(rng.integers(3, 12))):
        i = int(rng.integers(len(boxes)))
        x0, y0, x1, y1 = boxes.pop(i)
        if (x1 - x0) > (y1 - y0):
            s = rng.uniform(x0 + 0.2 * (x1 - x0), x1 - 0.2 * (x1 - x0))
            boxes += [(x0, y0, s, y1), (s, y0, x1, y1)]
        else:
            s = rng.uniform(y0 + 0.2 * (y1 - y0), y1 - 0.2 * (y1 - y0))
            boxes += [(x0, y0, x1, s), (x0, s, x1, y1)]
    classic = rng.random() < 0.5
    line = int(rng.integers(2, 12))
    for b in boxes:
        if classic:
            fill = [(220, 30, 30), (30, 60, 180), (240, 210, 30), (245, 245, 240), (245, 245, 240)]
            col = fill[int(rng.integers(len(fill)))]
        else:
            col = _colour(rng)
        d.rectangle(b, fill=col, outline=(20, 20, 20) if classic or rng.random() < 0.5 else None, width=line)
    return np.asarray(im, dtype=np.float32)


def noise(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    scale = float(rng.choice([1, 2, 4, 8, 16, 32, 64]))
    sw, sh = max(2, int(w / scale)), max(2, int(h / scale))
    small = rng.random((sh, sw, 3 if rng.random() < 0.6 else 1))
    arr = (small * 255).astype(np.uint8)
    im = Image.fromarray(arr if arr.shape[2] == 3 else arr[..., 0]).convert("RGB")
    im = im.resize((w, h), Image.Resampling.BICUBIC if rng.random() < 0.7 else Image.Resampling.NEAREST)
    out = np.asarray(im, dtype=np.float32)
    if rng.random() < 0.5:  # tint through a palette
        out = _ramp(out.mean(axis=2) / 255.0, _palette(rng, int(rng.integers(2, 5))))
    return out


def circles(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    if rng.random() < 0.4:  # concentric rings / bokeh-free target
        x, y = _grid(w, h)
        cx, cy = rng.uniform(0, 1, 2)
        t = np.hypot(x - cx, y - cy) * rng.uniform(5, 40)
        return _ramp((np.sin(t) + 1) / 2, _palette(rng, int(rng.integers(2, 5))))
    im = (
        Image.fromarray(gradient(rng, w, h).astype(np.uint8))
        if rng.random() < 0.5
        else Image.new("RGB", (w, h), _colour(rng))
    )
    d = ImageDraw.Draw(im, "RGBA")
    for _ in range(int(rng.integers(3, 60))):
        r = rng.uniform(0.01, 0.3) * max(w, h)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        box = (cx - r, cy - r, cx + r, cy + r)
        if rng.random() < 0.3:
            d.ellipse(box, outline=(*_colour(rng), 255), width=int(rng.integers(1, 10)))
        else:
            d.ellipse(box, fill=(*_colour(rng), int(rng.integers(60, 256))))
    return np.asarray(im, dtype=np.float32)


def fractal(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    x, y = _grid(w, h)
    zoom = 10 ** rng.uniform(-2.5, 0.4)
    if rng.random() < 0.5:  # Julia set
        c = complex(
            *rng.choice([(-0.8, 0.156), (0.285, 0.01), (-0.4, 0.6), (-0.70176, -0.3842), (0.355, 0.355)])
        )
        z = (x - 0.5 * w / max(w, h)) * 3 * zoom + 1j * (y - 0.5 * h / max(w, h)) * 3 * zoom
        c = c + complex(*rng.normal(0, 0.01, 2))
    else:  # Mandelbrot, around a point near the boundary
        centre = complex(
            *rng.choice([(-0.745, 0.113), (-0.1011, 0.9563), (-1.25066, 0.02012), (-0.75, 0.0), (0.275, 0.0)])
        )
        c = centre + ((x - 0.5 * w / max(w, h)) + 1j * (y - 0.5 * h / max(w, h))) * 3 * zoom
        z = np.zeros_like(c)
    count = np.zeros(x.shape, dtype=np.float32)
    alive = np.ones(x.shape, dtype=bool)
    for i in range(80):
        z = np.where(alive, z * z + c, z)
        escaped = alive & (np.abs(z) > 4)
        count[escaped] = i
        alive &= ~escaped
    t = (count / 80.0) ** rng.uniform(0.3, 1.0)
    t = (t * rng.uniform(1, 4)) % 1.0
    return _ramp(t, _palette(rng, int(rng.integers(3, 7))))


def blobs(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    im = Image.new("RGB", (w, h), _colour(rng))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 15))):
        r = rng.uniform(0.05, 0.45) * max(w, h)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        d.ellipse((cx - r, cy - r * rng.uniform(0.4, 1.6), cx + r, cy + r), fill=_colour(rng))
    return np.asarray(
        im.filter(ImageFilter.GaussianBlur(rng.uniform(0.03, 0.15) * max(w, h))), dtype=np.float32
    )


def stripes(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    x, y = _grid(w, h)
    a = rng.uniform(0, math.pi)
    u = x * math.cos(a) + y * math.sin(a)
    n = rng.uniform(3, 40)
    pal = _palette(rng, int(rng.integers(2, 6)))
    if rng.random() < 0.3:  # checks / plaid
        v = -x * math.sin(a) + y * math.cos(a)
        idx = ((np.floor(u * n) + np.floor(v * n)) % len(pal)).astype(int)
    else:
        widths = rng.uniform(0.3, 1.0, 64)
        edges = np.cumsum(widths) / widths.sum() * n
        idx = np.searchsorted(edges, (u - u.min()) / (np.ptp(u) + 1e-6) * n * 0.999) % len(pal)
    return pal[idx]


def lines(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Smooth curves and flowing lines over a plain or gradient ground."""
    im = (
        Image.fromarray(gradient(rng, w, h).astype(np.uint8))
        if rng.random() < 0.6
        else Image.new("RGB", (w, h), _colour(rng))
    )
    d = ImageDraw.Draw(im, "RGBA")
    xs = np.linspace(-0.1 * w, 1.1 * w, 200)
    for _ in range(int(rng.integers(3, 40))):
        y0, amp, f, ph = (
            rng.uniform(0, h),
            rng.uniform(0.02, 0.3) * h,
            rng.uniform(0.5, 4),
            rng.uniform(0, 6.3),
        )
        ys = y0 + amp * np.sin(2 * math.pi * f * xs / w + ph)
        d.line(
            list(zip(xs, ys, strict=True)),
            fill=(*_colour(rng), int(rng.integers(80, 256))),
            width=int(rng.integers(1, 30)),
        )
    out = im.filter(ImageFilter.GaussianBlur(rng.uniform(0, 4))) if rng.random() < 0.5 else im
    return np.asarray(out, dtype=np.float32)


GENERATORS = [gradient, waves, polygons, low_poly, mondrian, noise, circles, fractal, blobs, stripes, lines]


def generate(rng: np.random.Generator) -> tuple[str, Image.Image]:
    w, h = (
        int(v) for v in rng.choice([(640, 480), (480, 640), (512, 512), (800, 450), (600, 400), (400, 600)])
    )
    gen = GENERATORS[int(rng.integers(len(GENERATORS)))]
    arr = gen(rng, w, h)
    name = gen.__name__
    if rng.random() < 0.25:  # layer two generators
        other = GENERATORS[int(rng.integers(len(GENERATORS)))]
        arr = arr * 0.5 + other(rng, w, h) * 0.5
        name += "+" + other.__name__
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.2:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(1, 12)))
    if rng.random() < 0.15:  # film grain
        a = np.asarray(im, dtype=np.float32) + rng.normal(0, rng.uniform(3, 15), (h, w, 1))
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return name, im


# -- photos and augmentation ------------------------------------------------------------------------------------


def negatives() -> list[Path]:
    files = []
    rows = list(csv.DictReader((ALBUM_DEV / "labels.csv").open()))
    files += [ALBUM_DEV / "images" / r["file"] for r in rows if r["category"] != "other"]
    files += sorted(p for p in (ROOT / "tests" / "data").iterdir() if p.suffix.lower() in {".jpg", ".png"})
    try:
        import sklearn.datasets

        files += sorted((Path(sklearn.datasets.__file__).parent / "images").glob("*.jpg"))
    except ImportError:
        pass
    try:
        import matplotlib

        files.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    except ImportError:
        pass
    seen, out = set(), []
    for p in files:  # scikit-learn's and matplotlib's samples are also in tests/data
        key = p.read_bytes()
        if p.is_file() and key not in seen:
            seen.add(key)
            out.append(p)
    return out


def augment(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    s = math.sqrt(rng.uniform(0.5, 1.0))
    cw, ch = int(w * s), int(h * s)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = im.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.3:
        out = out.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR, expand=False)
    out = ImageEnhance.Color(out).enhance(rng.uniform(0.6, 1.4))
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.7, 1.3))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.7, 1.3))
    return out


def encode(im: Image.Image, rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    if rng.random() < 0.5:
        im.convert("RGB").save(buf, "JPEG", quality=int(rng.integers(75, 96)))
    else:
        im.save(buf, "PNG")
    return buf.getvalue()


# -- features ---------------------------------------------------------------------------------------------------


class Embedder:
    def __init__(self, model: str) -> None:
        from photosift.models.session import open_session

        resolved = resolve_model(model, default_data_dir())
        self.card = resolved.card
        self.sess = open_session(resolved.path, threads=2)

    def tensor(self, data: bytes, name: str) -> np.ndarray:
        image = imaging.decode(data, name, min_side=self.card.preprocess.resize_size)
        return imaging.to_tensor(image, self.card.preprocess)

    def run(self, tensors: list[np.ndarray]) -> np.ndarray:
        out = []
        for i in range(0, len(tensors), 16):
            (emb,) = self.sess.run(
                [self.card.embedding_name or "embedding"],
                {self.card.input_name: np.stack(tensors[i : i + 16])},
            )
            out.append(emb)
        return np.concatenate(out)


def features(embedding: np.ndarray) -> np.ndarray:
    """What the head sees: the float16-rounded embedding (as stored), L2-normalised. Mirrors abstract.py."""
    e = np.asarray(embedding, dtype=np.float16).astype(np.float64)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def collect(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    emb = Embedder(args.model)
    rng = np.random.default_rng(SEED)
    tensors, y, groups, names = [], [], [], []
    for i in range(args.generated):
        name, im = generate(rng)
        data = encode(im, rng)
        if args.save_samples:
            args.save_samples.mkdir(parents=True, exist_ok=True)
            (args.save_samples / f"{i:04d}_{name}.png").write_bytes(
                data if data[:4] == b"\x89PNG" else _png(data)
            )
        tensors.append(emb.tensor(data, name))
        y.append(1)
        groups.append(i)
        names.append(f"gen:{name}")
    for k, path in enumerate(negatives()):
        data = path.read_bytes()
        tensors.append(emb.tensor(data, str(path)))
        y.append(0)
        groups.append(args.generated + k)
        names.append(str(path))
        base = imaging.decode(data, str(path))
        real_photo = imaging.CUTOUT_INFO not in base.info
        for _ in range(args.augment_photos if real_photo else args.augment_cutouts):
            tensors.append(emb.tensor(encode(augment(base, rng), rng), str(path)))
            y.append(0)
            groups.append(args.generated + k)
            names.append(f"aug:{path}")
    print(f"{sum(y)} generated, {len(y) - sum(y)} photos/cut-outs (with augmentations)", file=sys.stderr)
    return emb.run(tensors), np.array(y), np.array(groups), names


def _png(jpeg: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buf, "PNG")
    return buf.getvalue()


# -- training ---------------------------------------------------------------------------------------------------


def fit(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    clf.fit(x, y)
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


def prob(x: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-(x @ w + b)))
    return out


def cross_validate(x: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float, folds: int) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    ug = np.unique(groups)
    fold_of = dict(zip(ug, rng.permutation(len(ug)) % folds, strict=True))
    f = np.array([fold_of[g] for g in groups])
    oof = np.zeros(len(y))
    for k in range(folds):
        w, b = fit(x[f != k], y[f != k], c)
        oof[f == k] = prob(x[f == k], w, b)
    return oof


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--generated", type=int, default=600)
    ap.add_argument("--augment-photos", type=int, default=24, help="augmentations per real photo")
    ap.add_argument("--augment-cutouts", type=int, default=0, help="augmentations per cut-out")
    ap.add_argument("--c", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument(
        "--max-fp", type=float, default=0.01, help="out-of-fold false-positive rate for the threshold"
    )
    ap.add_argument("--cache", type=Path, default=None, help="npz to store/reuse the embeddings")
    ap.add_argument("--save-samples", type=Path, default=None)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    if args.cache and args.cache.is_file():
        z = np.load(args.cache, allow_pickle=False)
        emb, y, groups, names = z["embedding"], z["y"], z["groups"], list(z["names"])
    else:
        emb, y, groups, names = collect(args)
        if args.cache:
            np.savez(args.cache, embedding=emb, y=y, groups=groups, names=np.array(names))
    x = features(emb)

    oof = cross_validate(x, y, groups, args.c, args.folds)
    neg = oof[y == 0]
    threshold = min(0.99, math.ceil(float(np.quantile(neg, 1.0 - args.max_fp)) * 100 + 1e-9) / 100)
    photo = np.array([not n.startswith("gen:") and "__" not in Path(n).name for n in names])
    print(f"cross-validated ({args.folds} folds, grouped by source image), C={args.c}:")
    print(f"  threshold {threshold:.2f} (at most {args.max_fp:.0%} of the negatives above it)")
    print(f"  generated abstract recalled: {np.mean(oof[y == 1] >= threshold):.3f} of {int(np.sum(y == 1))}")
    print(
        f"  negatives above: {int(np.sum(neg >= threshold))}/{len(neg)}; "
        f"real photos above: {int(np.sum(oof[photo & (y == 0)] >= threshold))}/{int(np.sum(photo & (y == 0)))}"
    )
    kinds: dict[str, list[float]] = {}
    for n, p, t in zip(names, oof, y, strict=True):
        if t == 1:
            kinds.setdefault(n.split(":", 1)[1].split("+")[0], []).append(p)
    for k, v in sorted(kinds.items()):
        print(f"    {k:10} recall {np.mean(np.array(v) >= threshold):.2f} (n={len(v)})")
    worst = np.argsort(-np.where(y == 0, oof, -1))[:8]
    print("  highest-scoring negatives: " + ", ".join(f"{Path(names[i]).name} {oof[i]:.2f}" for i in worst))

    if args.dry_run:
        return 0
    w, b = fit(x, y, args.c)
    meta = {
        "arch": "efficientnet-lite0",
        "model": args.model,
        "features": "float16-rounded embedding, L2-normalised",
        "generated": int(np.sum(y == 1)),
        "negatives": int(np.sum(y == 0)),
        "c": args.c,
        "seed": SEED,
        "cv_threshold": threshold,
        "built_by": "tools/build_abstract_head.py",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        weight=w.astype(np.float32),
        bias=np.array(b, dtype=np.float64),
        meta=np.array(json.dumps(meta)),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
