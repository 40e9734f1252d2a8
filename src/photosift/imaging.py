"""Decode an image file into the tensor a model card asks for.

Pure functions, no global state beyond registering the HEIF opener. Shapes:

* :func:`decode` -> an RGB ``PIL.Image`` with EXIF orientation applied and transparency composited on white.
  JPEGs are decoded with DCT scaling (``Image.draft``) straight to the smallest size at or above what the
  caller needs, which makes a 12 MP decode several times cheaper.
* :func:`to_tensor` -> ``float32`` array of shape ``(3, input_size, input_size)`` (CHW), resized so the shorter
  side is ``resize_size``, centre-cropped to ``input_size`` and normalised as ``(pixel - mean) / std`` on the
  0–255 scale.

Every failure raises :class:`~photosift.errors.UnreadableImage` carrying the path and a one-line reason.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from photosift.errors import UnreadableImage

# We enforce our own limit on the pixels actually decoded (after DCT scaling), so a 200 MP JPEG that draft()
# shrinks 8x is fine while a 200 MP PNG is refused before it is decoded.
DEFAULT_MAX_PIXELS = 180_000_000
Image.MAX_IMAGE_PIXELS = None
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

_heif_registered = False


def _register_heif() -> None:
    global _heif_registered
    if not _heif_registered:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:  # pragma: no cover - pillow-heif is a runtime dependency
            pass
        _heif_registered = True


_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class Preprocess:
    """The preprocessing half of a model card."""

    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.resize_size < self.input_size:
            raise ValueError("resize_size must be >= input_size")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")


def read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except IsADirectoryError:
        raise UnreadableImage(path, "is a directory") from None
    except FileNotFoundError:
        raise UnreadableImage(path, "file not found") from None
    except PermissionError:
        raise UnreadableImage(path, "permission denied") from None
    except OSError as exc:
        raise UnreadableImage(path, f"cannot read file ({exc.strerror or exc})") from None


def decode(
    data: bytes,
    path: str | Path,
    min_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode ``data`` (the bytes of ``path``) to an upright RGB image.

    ``min_side``: the shorter side the caller needs; JPEGs are DCT-scaled down to no less than that.
    None decodes at full size.
    """
    if not data:
        raise UnreadableImage(path, "empty file")
    _register_heif()
    try:
        im = Image.open(io.BytesIO(data))
        im.seek(0)  # first frame of animations and multi-page files
        if min_side is not None and im.format == "JPEG":
            w, h = im.size
            scale = min_side / min(w, h)
            if scale < 1:
                im.draft(im.mode, (math.ceil(w * scale), math.ceil(h * scale)))
        w, h = im.size
        if w * h > max_pixels:
            raise UnreadableImage(
                path,
                f"image too large to decode safely ({w}x{h} = {w * h / 1e6:.0f} MP; limit {max_pixels / 1e6:.0f} MP)",
            )
        if w == 0 or h == 0:
            raise UnreadableImage(path, "image has no pixels")
        im.load()
        return _to_rgb(_upright(im))
    except UnreadableImage:
        raise
    except UnidentifiedImageError:
        raise UnreadableImage(path, "not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(path, f"image too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError) as exc:
        # Pillow reports corrupt data through a variety of exception types; all mean "cannot decode".
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreadableImage(path, f"corrupt or unsupported image data ({reason})") from None
    except MemoryError:
        raise UnreadableImage(path, "not enough memory to decode") from None


def _upright(im: Image.Image) -> Image.Image:
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # malformed EXIF must not make a decodable photo unreadable
        return im
    if orientation in (None, 1):
        return im
    try:
        return ImageOps.exif_transpose(im) or im
    except Exception:
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        im = _high_depth_to_l(im)
        mode = "L"
    if mode in ("RGBa", "La"):
        im = im.convert("RGBA" if mode == "RGBa" else "LA")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale to 8-bit by scaling, not clipping (Pillow's convert('L') clips)."""
    arr = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        hi = 1.0 if arr.size and float(np.nanmax(arr)) <= 1.0 else 255.0
    else:
        hi = 65535.0 if arr.size and float(arr.max()) > 255 else 255.0
    arr = np.clip(np.nan_to_num(arr) * (255.0 / hi), 0, 255)
    return Image.fromarray(arr.round().astype(np.uint8), mode="L")


def to_tensor(im: Image.Image, pre: Preprocess) -> np.ndarray:
    """Resize (shorter side -> resize_size), centre-crop input_size, normalise; returns CHW float32."""
    w, h = im.size
    scale = pre.resize_size / min(w, h)
    # The textbook rule is resize (shorter side -> resize_size, sides rounded) then centre-crop at integer
    # offsets. We resize only the crop box, mapped back to source coordinates: one resampling pass with the
    # same sampling grid and filter support, so the same pixels, at a fraction of the cost.
    new_w, new_h = max(pre.input_size, round(w * scale)), max(pre.input_size, round(h * scale))
    left = round((new_w - pre.input_size) / 2.0)
    top = round((new_h - pre.input_size) / 2.0)
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + pre.input_size) * sx, (top + pre.input_size) * sy)
    resized = im.resize((pre.input_size, pre.input_size), _RESAMPLE[pre.interpolation], box=box)
    arr = np.asarray(resized, dtype=np.float32)
    mean = np.asarray(pre.mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(pre.std, dtype=np.float32)
    arr = (arr - mean) * inv_std
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_tensor(path: str | Path, pre: Preprocess, data: bytes | None = None) -> np.ndarray:
    """Read, decode (DCT-scaled) and preprocess one file."""
    if data is None:
        data = read_bytes(path)
    return to_tensor(decode(data, path, min_side=pre.resize_size), pre)
