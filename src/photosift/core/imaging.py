"""Decode an image file into the tensor a model card asks for.

Pure functions, no global state beyond registering the HEIF opener. Shapes:

* :func:`decode` -> an RGB ``PIL.Image`` with EXIF orientation applied and transparency composited on white.
  JPEGs are decoded with DCT scaling (``Image.draft``) straight to the smallest size at or above what the
  caller needs, which makes a 12 MP decode several times cheaper.
* :func:`to_tensor` -> ``float32`` array of shape ``(3, input_size, input_size)`` (CHW), resized so the shorter
  side is ``resize_size``, centre-cropped to ``input_size`` and normalised as ``(pixel - mean) / std`` on the
  0–255 scale. A *cut-out* (an image whose transparent background :func:`decode` composited on white) is
  framed instead of centre-cropped: the square around its opaque pixels plus a margin, white beyond the image,
  so the object is whole and fills the frame (docs/CATEGORIES.md, "Cut-outs").

Memory is bounded for any input: :func:`read_file` reads only regular files up to a size cap (a 4 GB sparse
file, a FIFO or ``/dev/zero`` are refused before a byte is read), and :func:`read_for_decode` reserves the
file's bytes plus what its decode will need (:func:`decode_cost`, from the header) in a :class:`MemoryBudget`
shared by every decoder of the process, so concurrent large decodes take turns instead of adding up.

Every failure raises :class:`~photosift.core.errors.UnreadableImage` carrying the path and a one-line reason.
"""

from __future__ import annotations

import io
import math
import os
import stat
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from photosift.core.errors import UnreadableImage

# We enforce our own limit on the pixels actually decoded (after DCT scaling), so a 200 MP JPEG that draft()
# shrinks 8x is fine while a 200 MP PNG is refused before it is decoded.
DEFAULT_MAX_PIXELS = 180_000_000
MB = 2**20
DEFAULT_MAX_FILE_BYTES = 256 * MB  # PHOTOSIFT_MAX_FILE_MB: larger files are refused unread
DEFAULT_DECODE_MEMORY = 1024 * MB  # PHOTOSIFT_DECODE_MEMORY_MB: what the decodes in flight may hold together
# Peak bytes per decoded pixel, measured (RSS of decode + to_tensor on 16 MP images, 2026-12): Pillow keeps RGB
# in 4 bytes a pixel; transparency is composited through RGBA copies; 16-bit goes through float64.
_PEAK_BYTES_PER_PIXEL = {"1": 6, "L": 6, "P": 10, "RGB": 6, "CMYK": 8, "YCbCr": 6, "LAB": 6, "HSV": 6}
_PEAK_BYTES_TRANSPARENT = 22  # RGBA, LA, PA, RGBa, La and palettes with transparency (measured 20.1)
_PEAK_BYTES_HIGH_DEPTH = 40  # I;16*, I, F (measured 26.2 for I;16)
Image.MAX_IMAGE_PIXELS = None
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

_heif_registered = False

CUTOUT_INFO = "photosift.cutout"
"""``Image.info`` key that :func:`decode` sets on a cut-out: ``((left, top, right, bottom), (width, height))``, the
box of its opaque pixels (alpha >= 128) and the image size that box refers to (Pillow copies ``info`` to resized
copies; :func:`to_tensor` scales the box to the image it is given)."""
CUTOUT_MIN_TRANSPARENT = 0.05  # share of transparent pixels that makes a cut-out (not a rounded corner)
CUTOUT_MARGIN = 0.06  # white margin around a framed cut-out, as a share of its longer side (each side)


def cutout_framing() -> dict[str, float]:
    """The cut-out constants, for the page that reproduces this module in JS (web/static/classify.js)."""
    return {"cutout_min_transparent": CUTOUT_MIN_TRANSPARENT, "cutout_margin": CUTOUT_MARGIN}


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
    """How a model wants its input: the one preprocessing spec (a model card holds one; archs give defaults).

    Resize so the shorter side is ``resize_size``, centre-crop ``input_size`` (cut-outs are framed instead, see
    :func:`to_tensor`), normalise ``(pixel - mean) / std`` on the 0-255 scale, CHW float32.
    """

    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    crop: str = "center"

    def __post_init__(self) -> None:
        if self.input_size <= 0 or self.resize_size < self.input_size:
            raise ValueError("input_size must be positive and resize_size >= input_size")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"unknown interpolation {self.interpolation!r} (bilinear or bicubic)")
        if self.crop != "center":
            raise ValueError(f"unknown crop {self.crop!r} (center)")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError("mean and std need three values each, std > 0")


@dataclass(frozen=True, slots=True)
class ImageFile:
    """A file's bytes and the size and mtime of the open file they were read from (``fstat``, not a ``stat``
    of the path taken earlier: a file swapped after the scan is stored with its own stat)."""

    data: bytes
    size: int
    mtime_ns: int


class MemoryBudget:
    """Bytes the decodes in flight may hold together (file bytes + decode peak), shared by the decode threads.

    A decode that does not fit waits until others finish; one that could never fit is refused, so memory stays
    flat whatever the number of workers and whatever the files. Each thread holds one reservation at a time.
    """

    def __init__(self, total_bytes: int) -> None:
        self.total = total_bytes
        self.used = 0
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int, path: str | Path) -> Iterator[None]:
        if nbytes > self.total:
            raise UnreadableImage(
                path,
                f"too large to decode within the memory budget (needs about {nbytes / MB:.0f} MB; "
                f"PHOTOSIFT_DECODE_MEMORY_MB is {self.total / MB:.0f})",
            )
        with self._cond:
            self._cond.wait_for(lambda: self.used + nbytes <= self.total)
            self.used += nbytes
        try:
            yield
        finally:
            if nbytes >= _TRIM_AFTER:
                _trim_heap()
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


_TRIM_AFTER = 64 * MB


def _trim_heap() -> None:
    """Give a large decode's freed memory back to the system before the next decode starts.

    glibc keeps freed memory in per-thread arenas: the next large decode, on another thread, takes fresh pages,
    and two decodes that never overlapped still add up in RSS (measured: 3 thumbnails of a 13000² PNG, one at
    a time, peaked at 1.4 GB instead of 0.8). ``malloc_trim`` returns it; elsewhere this does nothing.
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


@contextmanager
def open_regular(path: str | Path, max_bytes: int) -> Iterator[tuple[IO[bytes], os.stat_result]]:
    """The open file and its fstat, refused unless it is a regular file within ``max_bytes``.

    O_NONBLOCK: opening a FIFO (swapped in after the scan, or named on purpose) returns at once instead of
    waiting for a writer forever; for regular files it changes nothing.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise UnreadableImage(path, "is a directory") from None
    except FileNotFoundError:
        raise UnreadableImage(path, "file not found") from None
    except PermissionError:
        raise UnreadableImage(path, "permission denied") from None
    except OSError as exc:
        raise UnreadableImage(path, f"cannot read file ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UnreadableImage(path, "is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableImage(path, "not a regular file (a FIFO, device or socket)")
        if st.st_size > max_bytes:
            raise UnreadableImage(path, _too_large(st.st_size, max_bytes))
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        yield f, st


def _too_large(size: int, max_bytes: int) -> str:
    return f"file too large ({size / MB:,.0f} MB; limit {max_bytes / MB:,.0f} MB, PHOTOSIFT_MAX_FILE_MB)"


def _read_all(f: IO[bytes], st: os.stat_result, path: str | Path, max_bytes: int) -> ImageFile:
    try:
        data = f.read(st.st_size)
        more = f.read(1)
        if more:  # the file grew after fstat: read on, within the cap
            rest = f.read(max_bytes - len(data))
            data = data + more + rest
            if len(data) > max_bytes or f.read(1):
                raise UnreadableImage(path, _too_large(len(data), max_bytes))
    except OSError as exc:
        raise UnreadableImage(path, f"cannot read file ({exc.strerror or exc})") from None
    return ImageFile(data, st.st_size, st.st_mtime_ns)


def read_file(path: str | Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> ImageFile:
    """The bytes of a regular file of at most ``max_bytes``, with the fstat of the file they came from."""
    with open_regular(path, max_bytes) as (f, st):
        return _read_all(f, st, path, max_bytes)


def read_bytes(path: str | Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    return read_file(path, max_bytes).data


@contextmanager
def read_for_decode(
    path: str | Path, budget: MemoryBudget, min_side: int | None, max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> Iterator[ImageFile]:
    """Open, estimate, reserve, read: the file's bytes, with memory for them and for their decode at
    ``min_side`` reserved in ``budget`` until the block ends (decode and preprocess inside it)."""
    with open_regular(path, max_bytes) as (f, st):
        cost = st.st_size + _header_cost(f, min_side)
        with budget.reserve(cost, path):
            f.seek(0)
            yield _read_all(f, st, path, max_bytes)


def decode_cost(width: int, height: int, mode: str, transparency: bool = False) -> int:
    """Peak bytes that decoding (and preprocessing) a ``width`` x ``height`` image of ``mode`` takes."""
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and transparency):
        per_pixel = _PEAK_BYTES_TRANSPARENT
    elif mode.startswith("I") or mode == "F":
        per_pixel = _PEAK_BYTES_HIGH_DEPTH
    else:
        per_pixel = _PEAK_BYTES_PER_PIXEL.get(mode, 8)
    return width * height * per_pixel


def _header_cost(f: IO[bytes], min_side: int | None) -> int:
    """:func:`decode_cost` from the file's header (nothing decoded); 0 when it is no image Pillow knows (the
    decode then reports why, having needed no pixel memory)."""
    head = f.read(12)
    f.seek(0)
    if head[4:8] == b"ftyp":
        _register_heif()
    try:
        with Image.open(f) as im:
            im.seek(0)
            w, h = _scaled_size(im, min_side)
            return decode_cost(w, h, im.mode, "transparency" in im.info)
    except Exception:  # anything Pillow cannot parse is the decoder's to report
        return 0


def _scaled_size(im: Image.Image, min_side: int | None) -> tuple[int, int]:
    """The size :func:`decode` decodes ``im`` at: a JPEG's DCT scale (``draft``) for ``min_side``, else full."""
    w, h = im.size
    if min_side is None or im.format != "JPEG" or min(w, h) == 0:
        return w, h
    scale = min_side / min(w, h)
    if scale >= 1:
        return w, h
    request = (math.ceil(w * scale), math.ceil(h * scale))
    factor = _draft_factor((w, h), request)
    return (w + factor - 1) // factor, (h + factor - 1) // factor


def _draft_factor(size: tuple[int, int], request: tuple[int, int]) -> int:
    """The DCT scale denominator Pillow's JpegImageFile.draft picks for ``request``."""
    ratio = min(size[0] // request[0], size[1] // request[1])
    return next(f for f in (8, 4, 2, 1) if ratio >= f)


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
    if data[4:8] == b"ftyp":  # an ISO-BMFF container (HEIC/HEIF): only then pay for pillow-heif (~0.1 s)
        _register_heif()
    try:
        im = Image.open(io.BytesIO(data))
        im.seek(0)  # first frame of animations and multi-page files
        if min_side is not None and im.format == "JPEG":
            w, h = im.size
            scale = min_side / min(w, h)
            if scale < 1:
                request = (math.ceil(w * scale), math.ceil(h * scale))
                fast = _fast_scaled_jpeg(data, im, request, max_pixels)
                if fast is not None:
                    return _to_rgb(_orient(fast, im))
                im.draft(im.mode, request)
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


try:  # optional accelerator: the same libjpeg-turbo scaled decode with less overhead (docs/BENCHMARKS.md)
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - exercised where simplejpeg is not installed
    _simplejpeg = None

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _fast_scaled_jpeg(
    data: bytes, header: Image.Image, request: tuple[int, int], max_pixels: int
) -> Image.Image | None:
    """DCT-scaled JPEG decode with simplejpeg, at exactly the scale ``Image.draft(request)`` picks.

    Same libjpeg-turbo, same accurate IDCT and fancy upsampling, so the pixels are identical to Pillow's
    (tests check it); it saves ~2.5 core-ms of a ~33 core-ms 12 MP decode (measured). None means "use Pillow":
    simplejpeg missing, CMYK or unusual files, no DCT scaling to do, or anything simplejpeg reports (strict
    mode), so corrupt and truncated files still get Pillow's verdict.
    """
    if _simplejpeg is None or header.mode not in ("RGB", "L") or len(getattr(header, "tile", ())) != 1:
        return None
    w, h = header.size
    factor = _draft_factor((w, h), request)
    if factor == 1:
        return None
    out_w, out_h = (w + factor - 1) // factor, (h + factor - 1) // factor
    if out_w * out_h > max_pixels:
        return None  # Pillow's path reports it
    try:
        arr = _simplejpeg.decode_jpeg(
            data, "RGB" if header.mode == "RGB" else "GRAY", min_height=out_h, min_width=out_w, strict=True
        )
    except Exception:
        return None
    if arr.shape[:2] != (out_h, out_w):
        return None
    return Image.fromarray(arr if header.mode == "RGB" else arr[:, :, 0], header.mode)


def _orient(im: Image.Image, header: Image.Image) -> Image.Image:
    """Apply the EXIF orientation of ``header`` (the undecoded file) to ``im``, as _upright does."""
    try:
        orientation = header.getexif().get(0x0112, 1)
    except Exception:
        return im
    method = _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    return im.transpose(method) if method is not None else im


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
        out = Image.alpha_composite(background, rgba).convert("RGB")
        box = _cutout_box(rgba.getchannel("A"))
        if box is not None:
            out.info[CUTOUT_INFO] = (box, out.size)
        return out
    return im.convert("RGB")


def _cutout_box(alpha: Image.Image) -> tuple[int, int, int, int] | None:
    """Box of the opaque pixels when enough of the image is transparent to call it a cut-out, else None."""
    opaque = alpha.point(lambda v: 255 if v >= 128 else 0)
    transparent = opaque.histogram()[0] / max(1, alpha.width * alpha.height)
    if transparent < CUTOUT_MIN_TRANSPARENT:
        return None
    return opaque.getbbox()  # None when nothing is opaque: a blank image, centre-cropped like any other


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale to 8-bit by scaling, not clipping (Pillow's convert('L') clips)."""
    arr = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        hi = 1.0 if arr.size and float(np.nanmax(arr)) <= 1.0 else 255.0
    else:
        hi = 65535.0 if arr.size and float(arr.max()) > 255 else 255.0
    arr = np.clip(np.nan_to_num(arr) * (255.0 / hi), 0, 255)
    return Image.fromarray(arr.round().astype(np.uint8), mode="L")


def to_tensor(im: Image.Image, pre: Preprocess, *, fit_cutouts: bool = True) -> np.ndarray:
    """Resize (shorter side -> resize_size), centre-crop input_size, normalise; returns CHW float32.

    A cut-out from :func:`decode` (``im.info[CUTOUT_INFO]``) is framed whole instead (:func:`frame_cutout`)
    unless ``fit_cutouts`` is False.
    """
    cutout = im.info.get(CUTOUT_INFO) if fit_cutouts else None
    if cutout is not None:
        (left, top, right, bottom), (bw, bh) = cutout
        sx, sy = im.width / bw, im.height / bh
        box = (left * sx, top * sy, right * sx, bottom * sy)
        return _normalise(frame_cutout(im, box, pre.input_size, pre.interpolation), pre)
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
    return _normalise(resized, pre)


def frame_cutout(
    im: Image.Image, box: tuple[float, float, float, float], size: int, interpolation: str = "bilinear"
) -> Image.Image:
    """The ``size``-pixel square around ``box`` (the object) plus :data:`CUTOUT_MARGIN`, white where it leaves
    the image.

    Why: a centre crop keeps the middle 224 of 256 px of the shorter side and throws away the ends of a long
    object (a carrot, a car, a fish in profile); ImageNet's photos show the object whole and large. Around a
    cut-out there is only white background, so framing the object adds nothing that is not in the photo.
    """
    left, top, right, bottom = box
    side = max(right - left, bottom - top) * (1.0 + 2.0 * CUTOUT_MARGIN)
    x0 = (left + right) / 2.0 - side / 2.0
    y0 = (top + bottom) / 2.0 - side / 2.0
    scale = size / side
    # The part of the square inside the image, resized in one pass and pasted onto white.
    ix0, iy0 = max(0.0, x0), max(0.0, y0)
    ix1, iy1 = min(float(im.width), x0 + side), min(float(im.height), y0 + side)
    dx, dy = round((ix0 - x0) * scale), round((iy0 - y0) * scale)
    dw = max(1, min(size - dx, round((ix1 - ix0) * scale)))
    dh = max(1, min(size - dy, round((iy1 - iy0) * scale)))
    part = im.resize((dw, dh), _RESAMPLE[interpolation], box=(ix0, iy0, ix1, iy1))
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(part, (dx, dy))
    return canvas


def _normalise(im: Image.Image, pre: Preprocess) -> np.ndarray:
    arr = np.asarray(im, dtype=np.float32)
    mean = np.asarray(pre.mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(pre.std, dtype=np.float32)
    arr = (arr - mean) * inv_std
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_tensor(path: str | Path, pre: Preprocess, data: bytes | None = None) -> np.ndarray:
    """Read, decode (DCT-scaled) and preprocess one file."""
    if data is None:
        data = read_bytes(path)
    return to_tensor(decode(data, path, min_side=pre.resize_size), pre)


class GpuJpegDecoder:
    """Optional JPEG decode on an NVIDIA GPU (nvJPEG through ``torchvision.io.decode_jpeg(device='cuda')``).

    On a CPU the Huffman decoding of a 12 MP JPEG is the floor of the whole pipeline (~35 core-ms even with DCT
    scaling); nvJPEG moves it off the cores. The GPU path decodes at full size, applies the EXIF orientation,
    resizes with antialiasing, crops and normalises on the GPU, and returns the same CHW float32 array as
    :func:`load_tensor`. Pixels are close to, not bit-identical with, the CPU path (another decoder, another
    resampler). Anything it cannot take (not a baseline/progressive JPEG nvJPEG accepts, CMYK, a CUDA error)
    goes through the CPU decoder, so turning it on never makes a readable photo unreadable.

    Not run on the development machines (no GPU there): see docs/BENCHMARKS.md.
    """

    def __init__(self, device: str = "cuda", decode_jpeg: Callable[..., Any] | None = None) -> None:
        """``decode_jpeg`` replaces torchvision's (tests run the tensor half on the CPU with it)."""
        import torch  # lazy: the CPU path never imports torch

        if decode_jpeg is None:
            from torchvision.io import decode_jpeg as nvjpeg_decode

            if not torch.cuda.is_available():
                raise RuntimeError("torch sees no CUDA device")
            decode_jpeg = nvjpeg_decode
        self._torch = torch
        self._decode_jpeg: Callable[..., Any] = decode_jpeg
        self.device = device

    @classmethod
    def create(cls) -> tuple[GpuJpegDecoder | None, str]:
        """(decoder, '') or (None, why not) — callers print the reason and decode on the CPU."""
        try:
            return cls(), ""
        except Exception as exc:  # ImportError (no torchvision) or no CUDA device
            return (
                None,
                f"GPU JPEG decode unavailable ({str(exc).splitlines()[0][:200]}); decoding on the CPU",
            )

    def load_tensor(self, data: bytes, path: str | Path, pre: Preprocess) -> np.ndarray:
        if data[:3] != b"\xff\xd8\xff":
            return load_tensor(path, pre, data)
        try:
            return self._gpu_tensor(data, pre)
        except Exception:  # nvJPEG refuses some JPEGs (e.g. CMYK, 4:1:1, corrupt): the CPU decoder decides
            return load_tensor(path, pre, data)

    def _gpu_tensor(self, data: bytes, pre: Preprocess) -> np.ndarray:
        torch = self._torch
        with Image.open(io.BytesIO(data)) as head:  # header only: orientation and mode
            if head.mode not in ("RGB", "L"):
                raise ValueError(head.mode)
            orientation = head.getexif().get(0x0112, 1) or 1
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        img = self._decode_jpeg(raw, device=self.device)  # (C,H,W) uint8 on the GPU
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)
        img = _orient_chw(img, orientation)
        x = img.unsqueeze(0).float()
        _, _, h, w = x.shape
        scale = pre.resize_size / min(w, h)
        new_h, new_w = max(pre.input_size, round(h * scale)), max(pre.input_size, round(w * scale))
        mode = "bicubic" if pre.interpolation == "bicubic" else "bilinear"
        x = torch.nn.functional.interpolate(
            x, size=(new_h, new_w), mode=mode, antialias=True, align_corners=False
        )
        top, left = round((new_h - pre.input_size) / 2.0), round((new_w - pre.input_size) / 2.0)
        x = x[0, :, top : top + pre.input_size, left : left + pre.input_size].clamp_(0, 255)
        mean = torch.tensor(pre.mean, device=x.device).view(3, 1, 1)
        std = torch.tensor(pre.std, device=x.device).view(3, 1, 1)
        result: np.ndarray = ((x - mean) / std).contiguous().cpu().numpy()
        return result


def _orient_chw(img: Any, orientation: int) -> Any:
    """EXIF orientation (1–8) on a (C,H,W) tensor, as ImageOps.exif_transpose does on an image."""
    ops: dict[int, Callable[[Any], Any]] = {
        2: lambda x: x.flip(-1),
        3: lambda x: x.flip(-1).flip(-2),
        4: lambda x: x.flip(-2),
        5: lambda x: x.transpose(-1, -2),
        6: lambda x: x.transpose(-1, -2).flip(-1),
        7: lambda x: x.transpose(-1, -2).flip(-1).flip(-2),
        8: lambda x: x.transpose(-1, -2).flip(-2),
    }
    op = ops.get(orientation)
    return op(img) if op else img
