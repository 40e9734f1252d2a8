"""Find the image files under the paths a user gives, and stat them.

Directories are walked recursively (hidden files and folders skipped, directory symlinks not followed so a
link loop cannot hang a scan). A file is picked by its extension, case-insensitive; a file with no extension is
picked when its first bytes look like an image. Either way the decoder sniffs the content and never trusts the
name, so a PNG called .jpg decodes and a text file called .jpg is reported as unreadable.
Files named explicitly on the command line are always taken.

Paths are ``str`` as Python's ``os`` functions give them: a name whose bytes are not UTF-8 (Latin-1 names from
old zips, FAT and Samba copies) carries them as lone surrogates (``surrogateescape``), which opens the right file
but cannot be printed or stored as text as it is. :func:`printable` shows such a path to people, :func:`path_text`
gives scripts a text and the exact bytes.
"""

from __future__ import annotations

import base64
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".gif",
        ".webp",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".avif",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".tga",
        ".ico",
    ]
)

_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF little-endian
    b"MM\x00*",  # TIFF big-endian
)


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str  # absolute, as the user sees it (symlinks not resolved)
    size: int
    mtime_ns: int


def looks_like_image(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    if head.startswith(_MAGIC):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return head[4:8] == b"ftyp" and head[8:12] in (
        b"heic",
        b"heix",
        b"mif1",
        b"msf1",
        b"avif",
        b"heis",
        b"hevc",
    )


def _wanted(name: str, path: str) -> bool:
    # os.path.splitext's answer; rfind is enough unless the name starts with a dot (".jpg" has no extension).
    dot = name.rfind(".")
    suffix = (
        os.path.splitext(name)[1].lower() if name.startswith(".") else name[dot:].lower() if dot > 0 else ""
    )
    if suffix:
        return suffix in IMAGE_EXTENSIONS
    return looks_like_image(path)


def walk(paths: Iterable[str | Path], include_hidden: bool = False) -> Iterator[FileEntry]:
    """Yield every image file under ``paths`` (files given directly are yielded as they are)."""
    paths = list(paths)
    # One root cannot yield a path twice (directory links are not followed): remember paths only when several
    # roots may overlap, so a rescan of a million files does not keep a second million-path set.
    seen: set[str] | None = set() if len(paths) > 1 else None
    for root in paths:
        root_abs = os.path.abspath(os.path.expanduser(str(root)))
        found = _walk_dir(root_abs, include_hidden) if not os.path.isfile(root_abs) else _stat_one(root_abs)
        for entry in found:
            if seen is None:
                yield entry
            elif entry.path not in seen:
                seen.add(entry.path)
                yield entry


def _stat_one(path: str) -> Iterator[FileEntry]:
    entry = _stat_entry(path)
    if entry is not None:
        yield entry


def _stat_entry(path: str) -> FileEntry | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileEntry(path, st.st_size, st.st_mtime_ns)


def _walk_dir(top: str, include_hidden: bool) -> Iterator[FileEntry]:
    stack = [top]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue  # unreadable directory: nothing to classify there
        subdirs = []
        for de in entries:
            if not include_hidden and de.name.startswith("."):
                continue
            try:
                if de.is_dir(follow_symlinks=False):
                    subdirs.append(de.path)
                elif de.is_file() and _wanted(de.name, de.path):
                    st = de.stat()
                    yield FileEntry(de.path, st.st_size, st.st_mtime_ns)
            except OSError:
                continue
        stack.extend(reversed(subdirs))


_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` as one line of valid Unicode for people: a byte of a name that is not UTF-8 as ``\\xNN``, a
    control character (a newline in a file name) as ``\\n``, ``\\t`` or ``\\xNN``. Everything else is kept."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the undecodable byte code - 0xDC00
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        elif unicodedata.category(ch) == "Cc":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, f"\\x{code:02x}"))
        else:
            out.append(ch)
    return "".join(out)


def path_text(path: str) -> tuple[str, str | None]:
    """(text, exact) for JSON and CSV: the path as valid Unicode (an undecodable byte becomes U+FFFD), and None
    when that text is the exact path, else the base64 of its exact bytes (``os.fsencode``)."""
    if _SURROGATE.search(path) is None:
        return path, None
    raw = os.fsencode(path)
    return raw.decode("utf-8", "replace"), base64.b64encode(raw).decode("ascii")


def missing_roots(paths: Iterable[str | Path]) -> list[str]:
    return [str(p) for p in paths if not os.path.exists(os.path.expanduser(str(p)))]
