"""Benchmark corpora: phone-like 12 MP JPEGs, a mixed-format set, and cheap large trees for scale tests.

Phone photos are made from real photos (the nature photos of the dev album, or any images given), upscaled to
4032×3024 and given mild sensor-like grain so that a q92 baseline 4:2:0 JPEG weighs what a phone's does
(3–5 MB); smooth upscales compress far too well and would flatter every decoder. A third of them carry an EXIF
orientation (6, 3 or 8) the way phones store portrait and upside-down shots: the pixels stay 4032×3024.

Corpora are generated, never committed (``.bench/`` is git-ignored).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

PHONE_SIZE = (4032, 3024)
PHONE_QUALITY = 92
ORIENTATIONS = (1, 6, 1, 3, 1, 8)  # every other photo rotated, like a phone's camera roll
_SOURCE_SUFFIXES = {".jpg", ".jpeg", ".png"}


_PACKAGE = Path(__file__).resolve().parents[1]  # src/photosift
REPOSITORY = _PACKAGE.parents[1]  # meaningful in a source checkout only
ALBUM_DEV = REPOSITORY.parent / "shared" / "datasets" / "album-dev"
"""The development datasets live in ``../shared`` beside a checkout (a fresh clone anywhere finds them)."""


def default_sources() -> list[Path]:
    """Real photos to build the corpus from: the dev album's 1920 px nature JPEGs, then the test images."""
    candidates = [
        Path(os.environ.get("PHOTOSIFT_BENCH_SOURCES", str(ALBUM_DEV / "images"))),
        REPOSITORY / "tests" / "data",
        _PACKAGE / "samples",
    ]
    found: list[Path] = []
    for folder in candidates:
        if folder.is_dir():
            jpgs = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
            found.extend(jpgs)
    if not found:
        for folder in candidates:
            if folder.is_dir():
                found.extend(sorted(p for p in folder.iterdir() if p.suffix.lower() in _SOURCE_SUFFIXES))
    return found


def _exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "photosift-bench"  # Make
    return exif.tobytes()


def phone_photo(
    source: Path, seed: int, size: tuple[int, int] = PHONE_SIZE, grain: float = 5.0
) -> Image.Image:
    """One phone-like RGB frame (landscape ``size``) from ``source``: random crop, upscale, grain."""
    rng = np.random.default_rng(seed)
    with Image.open(source) as src:
        im = src.convert("RGB")
    w, h = im.size
    target_ratio = size[0] / size[1]
    if w / h > target_ratio:  # too wide: crop width
        cw, ch = round(h * target_ratio), h
    else:
        cw, ch = w, round(w / target_ratio)
    # A random crop of 85–100% so copies of one source differ in content, not just in grain.
    f = float(rng.uniform(0.85, 1.0))
    cw, ch = max(1, int(cw * f)), max(1, int(ch * f))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    im = im.resize(size, Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.asarray(im, dtype=np.int16)
    # Luma-ish grain (same on all channels) plus a little chroma noise, like a phone sensor after denoise.
    if grain > 0:
        luma = (rng.standard_normal(arr.shape[:2], dtype=np.float32) * grain).astype(np.int16)
        chroma = (rng.standard_normal(arr.shape, dtype=np.float32) * (grain / 3)).astype(np.int16)
        arr += luma[:, :, None]
        arr += chroma
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def save_phone_jpeg(im: Image.Image, path: Path, orientation: int = 1, progressive: bool = False) -> None:
    im.save(
        path,
        "JPEG",
        quality=PHONE_QUALITY,
        subsampling=2,  # 4:2:0
        progressive=progressive,
        optimize=False,
        exif=_exif_with_orientation(orientation),
    )


def make_phone_corpus(
    out: str | Path,
    count: int,
    sources: Sequence[Path] | None = None,
    size: tuple[int, int] = PHONE_SIZE,
    seed: int = 0,
) -> list[Path]:
    """``count`` phone-like baseline JPEGs in ``out`` (kept when already there: the corpus is deterministic)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    srcs = list(sources) if sources is not None else default_sources()
    if not srcs:
        raise FileNotFoundError("no source photos found for the benchmark corpus")
    paths = [out / f"IMG_{i:05d}.jpg" for i in range(count)]
    todo = [(i, p) for i, p in enumerate(paths) if not p.is_file()]
    jobs = [(p, srcs[i % len(srcs)], seed + i, size, ORIENTATIONS[i % len(ORIENTATIONS)]) for i, p in todo]
    if len(jobs) > 1 and (os.cpu_count() or 1) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
            list(pool.map(_make_one_phone, jobs))
    else:
        for job in jobs:
            _make_one_phone(job)
    return paths


def _make_one_phone(job: tuple[Path, Path, int, tuple[int, int], int]) -> None:
    path, source, seed, size, orientation = job
    tmp = path.with_suffix(".tmp")
    save_phone_jpeg(phone_photo(source, seed, size), tmp, orientation)
    tmp.replace(path)


def make_mixed_corpus(
    out: str | Path, sources: Sequence[Path] | None = None, seed: int = 100, scale: float = 1.0
) -> list[Path]:
    """Formats a real library holds besides phone JPEGs: progressive JPEG, PNG, HEIC, small web images.

    ``scale`` shrinks the large ones (tests use a small scale so the set builds in a fraction of a second).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    srcs = list(sources) if sources is not None else default_sources()
    big = (max(64, int(PHONE_SIZE[0] * scale)), max(48, int(PHONE_SIZE[1] * scale)))
    made: list[Path] = []
    for i in range(2):
        p = out / f"progressive_{i}.jpg"
        if not p.is_file():
            save_phone_jpeg(phone_photo(srcs[i % len(srcs)], seed + i, big), p, progressive=True)
        made.append(p)
    for i in range(2):
        p = out / f"screenshot_{i}.png"
        if not p.is_file():
            w, h = max(32, int(2000 * scale)), max(24, int(1500 * scale))
            phone_photo(srcs[(i + 2) % len(srcs)], seed + 10 + i, (w, h), grain=0).save(p, "PNG")
        made.append(p)
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        for i in range(2):
            p = out / f"iphone_{i}.heic"
            if not p.is_file():
                # Half size and little grain: x265 is slow to encode noise, and real HEICs are ~2 MB.
                half = (big[0] // 2, big[1] // 2)
                phone_photo(srcs[(i + 4) % len(srcs)], seed + 20 + i, half, grain=1).save(
                    p, "HEIF", quality=80
                )
            made.append(p)
    except Exception:  # no HEIF encoder in this pillow-heif build: the set simply has no HEIC
        pass
    for i in range(6):
        p = out / f"web_{i}.jpg"
        if not p.is_file():
            im = phone_photo(srcs[(i + 6) % len(srcs)], seed + 30 + i, (800, 600), grain=2)
            im.save(p, "JPEG", quality=80)
        made.append(p)
    return made


def small_jpeg_bytes(source: Path, size: tuple[int, int] = (320, 240), seed: int = 0) -> bytes:
    buf = io.BytesIO()
    phone_photo(source, seed, size, grain=3).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def with_comment(jpeg: bytes, text: bytes) -> bytes:
    """The same JPEG with a COM segment after SOI: identical pixels, distinct bytes (so a distinct hash)."""
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def make_many_small(out: str | Path, count: int, variants: int = 16) -> Path:
    """``count`` small distinct JPEGs (320×240), in folders of 1,000: for the memory-at-scale benchmark."""
    out = Path(out)
    marker = out / f".complete-{count}"
    if marker.is_file():
        return out
    srcs = default_sources()
    bases = [small_jpeg_bytes(srcs[i % len(srcs)], seed=i) for i in range(variants)]
    for i in range(count):
        folder = out / f"{i // 1000:03d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"small_{i:06d}.jpg").write_bytes(with_comment(bases[i % variants], b"%d" % i))
    marker.touch()
    return out


def big_png(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    """A valid PNG of ``width`` x ``height`` (one flat colour, so a few hundred KB for 169 MP), written row by row:
    the memory tests' huge image, made without ever holding its pixels."""
    channels, color_type = {"RGB": (3, 2), "RGBA": (4, 6)}[mode]
    row = b"\x00" + bytes([200, 60, 30, 255][:channels]) * width
    comp = zlib.compressobj(6)
    with path.open("wb") as f:

        def chunk(kind: bytes, body: bytes) -> None:
            f.write(struct.pack(">I", len(body)) + kind + body)
            f.write(struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

        f.write(b"\x89PNG\r\n\x1a\n")
        chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
        chunk(b"IDAT", b"".join(comp.compress(row) for _ in range(height)) + comp.flush())
        chunk(b"IEND", b"")
    return path


def make_many_tiny(out: str | Path, count: int) -> Path:
    """``count`` tiny distinct files named .jpg, in folders of 1,000: for the rescan benchmark (never decoded)."""
    out = Path(out)
    marker = out / f".complete-{count}"
    if marker.is_file():
        return out
    for i in range(count):
        folder = out / f"{i // 1000:03d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f_{i:06d}.jpg").write_bytes(b"\xff\xd8\xff%d" % i)
    marker.touch()
    return out


def make_scale_catalog(path: str | Path, count: int, seed: int = 0) -> Path:
    """A catalog of ``count`` photos as a long-used library has it, for the gallery benchmark (no files behind
    it): 1 % unreadable, 2 % with no category, 1 % corrected, the rest spread over the album categories.
    Made once (the file is kept beside a marker) because writing 100,000 rows takes a while."""
    from photosift.album.rules import load_rules
    from photosift.core.catalog import Catalog, PhotoRecord, ResultRecord
    from photosift.models.card import imagenet_labels

    categories = [c for c in load_rules().categories if c not in ("objects", "other")]
    path = Path(path)
    marker = path.with_name(path.name + ".complete")
    if marker.is_file() and path.is_file():
        return path
    path.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    labels = imagenet_labels()
    model = "0" * 64
    probs = rng.dirichlet(np.full(len(labels), 0.05), size=256).astype(np.float32)
    with Catalog(path) as cat:
        cat.register_model(model, "bench-model", labels)
        for start in range(0, count, 5000):
            photos, results = [], []
            for i in range(start, min(count, start + 5000)):
                where = f"/library/{i // 1000:04d}/IMG_{i:07d}.jpg"
                if i % 100 == 7:
                    photos.append(PhotoRecord(where, 1000 + i, i, None, "corrupt or unsupported image data"))
                    continue
                category = None if i % 50 == 3 else categories[int(rng.integers(len(categories)))]
                results.append(
                    ResultRecord(f"{i:064x}", probs[i % 256], None, category, 0.7 if category else None)
                )
                photos.append(PhotoRecord(where, 1000 + i, i, f"{i:064x}"))
            cat.write_batch(photos, results, model, labels)
        for i in range(0, count, 97):
            cat.set_correction(f"{i:064x}", "people")
    marker.touch()
    return path
