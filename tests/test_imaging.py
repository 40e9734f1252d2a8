"""Decoding real images in every awkward form a photo library holds, and refusing the malformed ones."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photosift.core import imaging
from photosift.core.errors import UnreadableImage
from testkit import DATA

PRE = imaging.Preprocess(input_size=224, resize_size=256, mean=(127.0,) * 3, std=(128.0,) * 3)


def _decode(data: bytes, name: str = "x", min_side: int | None = 256) -> Image.Image:
    return imaging.decode(data, name, min_side=min_side)


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return Image.open(DATA / "chelsea.jpg").convert("RGB")


def test_jpeg_decode_uses_dct_scaling(cat: Image.Image) -> None:
    big = cat.resize((cat.width * 4, cat.height * 4))  # 1804x1200
    data = _bytes(big, "JPEG", quality=90)
    im = _decode(data, min_side=256)
    # draft() picks the smallest 1/2^k scale at or above the request: 1200 -> 300 (1/4), never below 256
    assert min(im.size) == 300
    full = _decode(data, min_side=None)
    assert full.size == big.size


def test_exif_orientation_applied(cat: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    data = _bytes(cat, "JPEG", exif=exif, quality=95)
    im = _decode(data, min_side=None)
    assert im.size == (cat.height, cat.width)
    expected = np.asarray(cat.transpose(Image.Transpose.ROTATE_270), dtype=np.float32)
    assert np.abs(np.asarray(im, dtype=np.float32) - expected).mean() < 4


def test_transparency_composited_on_white(cat: Image.Image) -> None:
    rgba = cat.convert("RGBA")
    alpha = Image.new("L", cat.size, 0)
    alpha.paste(255, (0, 0, cat.width // 2, cat.height))  # right half fully transparent
    rgba.putalpha(alpha)
    im = _decode(_bytes(rgba, "PNG"))
    arr = np.asarray(im)
    assert im.mode == "RGB"
    assert (arr[:, -10:] == 255).all()
    assert arr[:, :10].mean() < 250


def test_palette_gif_with_transparency_and_first_frame(cat: Image.Image) -> None:
    frames = [cat.convert("P", palette=Image.Palette.ADAPTIVE), Image.new("P", cat.size, 0)]
    data = _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], transparency=0)
    im = _decode(data)
    assert im.mode == "RGB" and im.size == cat.size
    assert np.asarray(im).std() > 20  # the cat, not the blank second frame


def test_animated_webp_first_frame(cat: Image.Image) -> None:
    blank = Image.new("RGB", cat.size, (0, 0, 0))
    data = _bytes(cat, "WEBP", save_all=True, append_images=[blank], quality=90)
    im = _decode(data)
    assert np.asarray(im).mean() > 30


def test_multipage_tiff_first_page(cat: Image.Image) -> None:
    blank = Image.new("RGB", cat.size, (0, 0, 0))
    data = _bytes(cat, "TIFF", save_all=True, append_images=[blank])
    assert np.asarray(_decode(data)).mean() > 30


def test_cmyk_jpeg(cat: Image.Image) -> None:
    data = _bytes(cat.convert("CMYK"), "JPEG", quality=95)
    im = _decode(data, min_side=None)
    assert im.mode == "RGB"
    assert np.abs(np.asarray(im, np.float32) - np.asarray(cat, np.float32)).mean() < 12


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    gray = np.asarray(Image.open(DATA / "camera.png").convert("L"), dtype=np.uint16)
    im16 = Image.fromarray(gray * 257)  # full 16-bit range
    assert im16.mode.startswith("I")
    im = _decode(_bytes(im16, "PNG"))
    arr = np.asarray(im)
    assert arr.shape[2] == 3
    assert np.abs(arr[..., 0].astype(int) - gray).max() <= 1  # clipping would make almost all 255


def test_grayscale_to_rgb() -> None:
    im = _decode((DATA / "camera.png").read_bytes())
    assert im.mode == "RGB"


def test_heic(cat: Image.Image) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    heif = pillow_heif.from_pillow(cat)
    buf = io.BytesIO()
    heif.save(buf, quality=90)
    im = _decode(buf.getvalue(), "photo.heic")
    assert im.size == cat.size


def test_truncated_jpeg_is_an_error() -> None:
    data = (DATA / "chelsea.jpg").read_bytes()
    with pytest.raises(UnreadableImage) as e:
        _decode(data[: len(data) // 2], "half.jpg")
    assert e.value.path == "half.jpg" and "truncated" in e.value.reason.lower()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"", "empty file"), (b"hello, I am a text file\n", "not a recognised image format")],
)
def test_not_an_image(payload: bytes, reason: str) -> None:
    with pytest.raises(UnreadableImage, match=reason):
        _decode(payload, "fake.jpg")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_refused_before_decoding() -> None:
    with pytest.raises(UnreadableImage, match="too large"):
        _decode(_png_header_only(60000, 60000), "bomb.png")


def test_to_tensor_shape_and_normalisation(cat: Image.Image) -> None:
    t = imaging.to_tensor(cat, PRE)
    assert t.shape == (3, 224, 224) and t.dtype == np.float32 and t.flags.c_contiguous
    white = imaging.to_tensor(Image.new("RGB", (300, 500), (255, 255, 255)), PRE)
    np.testing.assert_allclose(white, (255 - 127) / 128, rtol=1e-6)


def test_to_tensor_matches_resize_then_centre_crop(cat: Image.Image) -> None:
    """Our one-pass box resize equals the textbook resize-shorter-side then centre-crop."""
    w, h = cat.size
    scale = 256 / min(w, h)
    resized = cat.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
    left, top = round((resized.width - 224) / 2), round((resized.height - 224) / 2)
    ref = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    ours = imaging.to_tensor(cat, PRE).transpose(1, 2, 0) * 128 + 127
    assert np.abs(ours - ref).max() <= 1.01  # same pixels up to 8-bit rounding


def _cutout(size: tuple[int, int] = (300, 100), box: tuple[int, int, int, int] = (20, 30, 280, 70)) -> bytes:
    """A red bar (the object) on a transparent canvas, as a PNG."""
    im = Image.new("RGBA", size, (0, 0, 0, 0))
    im.paste((200, 0, 0, 255), box)
    return _bytes(im, "PNG")


def _pixels(t: np.ndarray) -> np.ndarray:
    return t.transpose(1, 2, 0) * 128 + 127


def test_cutout_is_framed_whole_not_centre_cropped() -> None:
    im = _decode(_cutout())
    assert im.info[imaging.CUTOUT_INFO] == ((20, 30, 280, 70), (300, 100))
    framed = _pixels(imaging.to_tensor(im, PRE))
    red = (framed[..., 0] > 150) & (framed[..., 1] < 60)
    cols, rows = np.nonzero(red.any(axis=0))[0], np.nonzero(red.any(axis=1))[0]
    # The whole 260x40 bar, scaled so its longer side fills the frame less the margin, centred, white around it.
    margin = round(224 * imaging.CUTOUT_MARGIN / (1 + 2 * imaging.CUTOUT_MARGIN))
    assert abs(cols[0] - margin) <= 1 and abs(cols[-1] - (223 - margin)) <= 1
    assert abs((rows[0] + rows[-1]) / 2 - 111.5) <= 1 and 30 <= len(rows) <= 36
    assert (framed[:5] >= 254).all() and (framed[:, : margin - 1] >= 254).all()
    # The textbook centre crop cuts the ends off the bar and fills the frame with its middle.
    cropped = _pixels(imaging.to_tensor(im, PRE, fit_cutouts=False))
    assert (cropped[112, [0, 223], 0] > 150).all()


def test_cutout_box_follows_a_resized_copy_and_the_image_edge() -> None:
    im = _decode(_cutout())
    small = im.resize((150, 50))  # Pillow copies info; the box is scaled to the copy
    a, b = imaging.to_tensor(im, PRE), imaging.to_tensor(small, PRE)
    assert np.abs(a - b).mean() < 0.05
    # An object touching the edge: the square around it leaves the image, and is white there.
    edge = _decode(_cutout((200, 200), (0, 50, 60, 150)))
    t = _pixels(imaging.to_tensor(edge, PRE))
    assert t.shape == (224, 224, 3) and (t[:, :3] >= 254).all() and (t[112, 100:120, 0] > 150).all()


def test_not_a_cutout_keeps_the_centre_crop(cat: Image.Image) -> None:
    # Opaque or half-transparent everywhere (an overlay), or transparent only in a corner: photos, not cut-outs.
    for alpha in (255, 128):
        rgba = cat.convert("RGBA")
        rgba.putalpha(alpha)
        im = _decode(_bytes(rgba, "PNG"), min_side=None)
        assert imaging.CUTOUT_INFO not in im.info
    corner = cat.convert("RGBA")
    mask = Image.new("L", cat.size, 255)
    mask.paste(0, (0, 0, 10, 10))
    corner.putalpha(mask)
    assert imaging.CUTOUT_INFO not in _decode(_bytes(corner, "PNG")).info
    blank = _decode(_bytes(Image.new("RGBA", (50, 40), (0, 0, 0, 0)), "PNG"))
    assert imaging.CUTOUT_INFO not in blank.info  # nothing opaque to frame
    np.testing.assert_allclose(imaging.to_tensor(blank, PRE), (255 - 127) / 128, rtol=1e-6)


def test_read_bytes_errors(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImage, match="file not found"):
        imaging.read_bytes(tmp_path / "nope.jpg")
    with pytest.raises(UnreadableImage, match="is a directory"):
        imaging.read_bytes(tmp_path)


def test_only_regular_files_within_the_cap_are_read(tmp_path: Path) -> None:
    import os
    import threading

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jpg"
    zero.symlink_to("/dev/zero")
    sparse = tmp_path / "sparse.jpg"
    with sparse.open("wb") as f:
        f.truncate(4 * 2**30)
    (tmp_path / "folder.jpg").mkdir()
    outcome: dict[str, str] = {}

    def read_all() -> None:  # a thread, so a blocking open fails the test instead of hanging it
        for path in (fifo, zero, sparse, tmp_path / "folder.jpg"):
            try:
                imaging.read_file(path, max_bytes=64 * 2**20)
            except UnreadableImage as exc:
                outcome[path.name] = exc.reason

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert outcome["pipe.jpg"].startswith("not a regular file")
    assert outcome["zero.jpg"].startswith("not a regular file")
    assert outcome["sparse.jpg"] == "file too large (4,096 MB; limit 64 MB, PHOTOSIFT_MAX_FILE_MB)"
    assert outcome["folder.jpg"] == "is a directory"
    photo = imaging.read_file(DATA / "coffee.jpg")
    st = (DATA / "coffee.jpg").stat()
    assert (len(photo.data), photo.size, photo.mtime_ns) == (st.st_size, st.st_size, st.st_mtime_ns)


def test_the_memory_budget_refuses_what_can_never_fit(tmp_path: Path, cat: Image.Image) -> None:
    big = tmp_path / "big.png"
    cat.resize((2000, 1500)).save(big)  # 3 MP RGB: ~18 MB to decode
    small_budget = imaging.MemoryBudget(8 * 2**20)
    with (
        pytest.raises(UnreadableImage, match="memory budget"),
        imaging.read_for_decode(big, small_budget, 256),
    ):
        pass
    budget = imaging.MemoryBudget(64 * 2**20)
    with imaging.read_for_decode(big, budget, 256) as f:
        assert budget.used >= imaging.decode_cost(2000, 1500, "RGB") + len(f.data)
        assert _decode(f.data).size == (2000, 1500)
    assert budget.used == 0
    # a JPEG is reserved at the scale it is decoded at (DCT scaling): 1/8 of 2000x1500 for 256 px
    jpeg = tmp_path / "big.jpg"
    cat.resize((2000, 1500)).save(jpeg, quality=90)
    with imaging.read_for_decode(jpeg, budget, 256):
        assert budget.used <= imaging.decode_cost(500, 375, "RGB") + jpeg.stat().st_size
