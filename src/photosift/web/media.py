"""Thumbnails and display-size photos, made on the fly and kept only in memory.

No image is ever written to disk (a thumbnail cache on disk is a copy of the library that outlives it).
Only the file the catalog knows is rendered: a regular file (a FIFO or a device is refused unread) within the
size cap whose size, mtime and content hash are still those the scan stored; anything else is
:class:`StaleFile` (a swapped symlink must not be served under the old photo's ETag). Reading and decoding
hold a reservation in the gallery's :class:`~photosift.core.imaging.MemoryBudget`.
JPEGs are DCT-scaled while decoding (:func:`photosift.core.imaging.decode` with ``min_side``), which makes a
thumbnail of a 12 MP photo several times cheaper than a full decode. A small byte-bounded LRU keeps recent
renders so scrolling back and forth does not decode again; browsers revalidate with the ETag (content hash
+ size), which the server answers with 304 without touching the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from PIL import Image

from photosift.core import imaging
from photosift.core.errors import UnreadableImage

THUMB_SIDE = 320  # shorter side of a grid thumbnail: sharp in a ~160 px cell on a 2x screen
VIEW_SIDE = 1600  # longest side of the photo page's image
THUMB_QUALITY = 80
VIEW_QUALITY = 85


@dataclass(frozen=True)
class Rendition:
    """One size the server makes: thumbnails fill a square cell, views fit in a box."""

    name: str
    side: int
    quality: int
    cover: bool  # True: the shorter side is ``side``; False: the longer side is at most ``side``


THUMB = Rendition("t", THUMB_SIDE, THUMB_QUALITY, cover=True)
VIEW = Rendition("v", VIEW_SIDE, VIEW_QUALITY, cover=False)


def etag_for(content_hash: str, rendition: Rendition) -> str:
    return f'"{content_hash[:24]}-{rendition.name}{rendition.side}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


class StaleFile(UnreadableImage):
    """The file at the photo's path is not the one the scan stored (swapped, replaced, edited)."""


@dataclass(frozen=True)
class Expected:
    """What the catalog stored about the file: only that file is served."""

    content_hash: str
    size: int
    mtime_ns: int


def render(
    path: str,
    rendition: Rendition,
    expected: Expected,
    budget: imaging.MemoryBudget,
    max_bytes: int = imaging.DEFAULT_MAX_FILE_BYTES,
) -> bytes:
    """Read, check against ``expected``, decode (DCT-scaled, upright, RGB) and shrink one photo to a JPEG.
    Raises UnreadableImage (StaleFile when the file is not the one scanned)."""
    # For a cover thumbnail the shorter side must reach ``side``; for a view, decoding to three quarters of
    # the box on the shorter side is enough for the common 4:3 and 3:2 shapes and saves a DCT step.
    min_side = rendition.side if rendition.cover else rendition.side * 3 // 4
    with imaging.read_for_decode(path, budget, min_side, max_bytes) as f:
        if (f.size, f.mtime_ns) != (expected.size, expected.mtime_ns) or (
            hashlib.sha256(f.data).hexdigest() != expected.content_hash
        ):
            raise StaleFile(path, "changed since it was scanned (scan its folder again)")
        im = imaging.decode(f.data, path, min_side=min_side)
        w, h = im.size
        scale = rendition.side / (min(w, h) if rendition.cover else max(w, h))
        if scale < 1:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            # reducing_gap: a cheap integer reduce first, then an antialiased resize; visually the same.
            im = im.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
        buf = io.BytesIO()
        im.save(
            buf, format="JPEG", quality=rendition.quality, optimize=False, progressive=not rendition.cover
        )
        return buf.getvalue()


def open_original(path: str, size: int, mtime_ns: int) -> IO[bytes]:
    """The photo's file, open, when it is still the regular file the scan stored (its size and mtime); the
    caller streams from this descriptor, so what is sent is what was checked. Raises UnreadableImage."""
    with imaging.open_regular(path, max_bytes=2**63 - 1) as (f, st):
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            raise StaleFile(path, "changed since it was scanned (scan its folder again)")
        return os.fdopen(os.dup(f.fileno()), "rb")


def chunks(f: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    """The file in ``size`` pieces, closed at the end (a download streams; nothing is held whole)."""
    with f:
        while piece := f.read(size):
            yield piece


class RenderCache:
    """A byte-bounded LRU of rendered JPEGs, keyed by (content hash, rendition). Memory only."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, content_hash: str, rendition: Rendition) -> bytes | None:
        key = (content_hash, rendition.name)
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, content_hash: str, rendition: Rendition, data: bytes) -> None:
        if len(data) > self.max_bytes // 4:
            return  # one huge item would flush everything else
        key = (content_hash, rendition.name)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted)
