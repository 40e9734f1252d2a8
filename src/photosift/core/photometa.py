"""What a photo's file says about it besides its pixels: when it was taken, by which camera, whether it knows
where, its size, and a perceptual hash of what it shows.

Read at scan time, cheaply: :func:`read_header` parses only the file's header (Pillow opens an image lazily, so
the EXIF block is read and no pixel is decoded), and :func:`perceptual_hash` works on the small image the
loader has already decoded for the model. Nothing here raises for a malformed header: a photo with broken EXIF
is still a photo, it just falls back to its file's modification time.

* ``taken_at``: EXIF DateTimeOriginal (then DateTimeDigitized), as the camera wrote it — local time, no zone —
  in ISO form ``YYYY-MM-DDTHH:MM:SS``; without it the file's mtime in local time, and ``taken_source`` says
  which (``exif`` or ``mtime``), so the gallery can mark a date that is only a guess.
* ``phash``: the DCT hash of pHash (a 32×32 grey thumbnail, its 8×8 lowest frequencies against their median):
  64 bits, stored as a signed 64-bit integer for SQLite. Re-encoding, resizing and small edits change a few
  bits; a different photo differs in about half of them (docs/FIND.md has the measurements).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache

import numpy as np
from PIL import Image

TAG_ORIENTATION = 0x0112
TAG_MAKE = 0x010F
TAG_MODEL = 0x0110
IFD_EXIF = 0x8769
IFD_GPS = 0x8825
TAG_DATETIME_ORIGINAL = 0x9003
TAG_DATETIME_DIGITIZED = 0x9004
GPS_LATITUDE = 2

HASH_SIDE = 32  # pHash's thumbnail
HASH_LOW = 8  # the 8x8 lowest frequencies give 64 bits


@dataclass(frozen=True, slots=True)
class PhotoMeta:
    """Per file: size as displayed (EXIF orientation applied), date, camera, GPS, perceptual hash."""

    width: int | None = None
    height: int | None = None
    taken_at: str | None = None
    taken_source: str = "mtime"  # "exif" | "mtime"
    camera: str | None = None
    has_gps: bool = False
    phash: int | None = None

    def with_phash(self, image: Image.Image) -> PhotoMeta:
        return replace(self, phash=perceptual_hash(image))


def _iso_from_exif(value: object) -> str | None:
    """'2023:06:01 14:03:22' -> '2023-06-01T14:03:22'; None for blanks and impossible dates."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    text = value.strip().rstrip("\x00").strip()
    try:
        when = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    return when.isoformat(timespec="seconds") if when.year >= 1800 else None


def mtime_iso(mtime_ns: int) -> str:
    """A file's modification time as local time in the same ISO form as EXIF dates."""
    return datetime.fromtimestamp(mtime_ns / 1e9).replace(microsecond=0).isoformat(timespec="seconds")


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip().rstrip("\x00").strip() if value is not None else ""


def camera_name(make: object, model: object) -> str | None:
    """'Canon' + 'Canon EOS 80D' -> 'Canon EOS 80D'; 'Apple' + 'iPhone 12' -> 'Apple iPhone 12'."""
    mk, md = _text(make), _text(model)
    if md and mk and md.lower().startswith(mk.split()[0].lower()):
        return md[:80]
    return (f"{mk} {md}".strip() or None) if (mk or md) else None


def read_header(data: bytes, mtime_ns: int) -> PhotoMeta:
    """Size, date, camera and GPS from the file's header (no pixels decoded). Never raises."""
    taken = camera = None
    width = height = None
    gps = False
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            exif = im.getexif()
            if exif.get(TAG_ORIENTATION) in (5, 6, 7, 8):  # stored sideways: shown the other way round
                width, height = height, width
            sub = exif.get_ifd(IFD_EXIF)
            taken = _iso_from_exif(sub.get(TAG_DATETIME_ORIGINAL)) or _iso_from_exif(
                sub.get(TAG_DATETIME_DIGITIZED)
            )
            camera = camera_name(exif.get(TAG_MAKE), exif.get(TAG_MODEL))
            gps = bool(exif.get_ifd(IFD_GPS).get(GPS_LATITUDE))
    except Exception:
        pass
    if taken is not None:
        return PhotoMeta(width, height, taken, "exif", camera, gps)
    return PhotoMeta(width, height, mtime_iso(mtime_ns), "mtime", camera, gps)


@cache
def _dct_matrix() -> np.ndarray:
    """Rows of the DCT-II basis for HASH_SIDE samples, the lowest HASH_LOW frequencies only."""
    n = np.arange(HASH_SIDE)
    k = np.arange(HASH_LOW)[:, None]
    return np.cos(math.pi * (2 * n[None, :] + 1) * k / (2 * HASH_SIDE)).astype(np.float32)


def perceptual_hash(image: Image.Image) -> int:
    """pHash of an image: 64 bits as a signed int64 (bit i = low frequency i above the median)."""
    grey = image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = np.asarray(grey, dtype=np.float32)
    dct = _dct_matrix()
    low = (dct @ pixels @ dct.T).ravel()
    bits = low > np.median(low)
    value = int(np.packbits(bits).view(">u8")[0])
    return value - (1 << 64) if value >= 1 << 63 else value


def hamming(a: int, b: int) -> int:
    """Bits that differ between two 64-bit hashes (as stored: signed)."""
    return ((a ^ b) & 0xFFFF_FFFF_FFFF_FFFF).bit_count()
