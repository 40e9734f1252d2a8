"""Memory stays flat for any input: huge, sparse and oversized files, many large decodes at once, huge batches.

Each case runs the real `photosift classify` in a subprocess and reads that process's peak RSS from the kernel
(``ru_maxrss`` of a fresh wrapper's only child); nothing is timed.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.slow

PEAK_RSS = """
import resource, subprocess, sys
res = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(res.stderr)
sys.stdout.write(res.stdout)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, file=sys.stderr)
sys.exit(res.returncode)
"""


def classify_peak_mb(
    folder: Path, db: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, dict]:
    """Run `photosift classify FOLDER --json` and return (peak RSS in MB, its JSON summary)."""
    cmd = [sys.executable, "-m", "photosift", "classify", str(folder), "--db", str(db), "--json", *extra]
    res = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *cmd],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    return int(res.stderr.strip().splitlines()[-1]), json.loads(res.stdout)


def big_png(path: Path, width: int, height: int, mode: str = "RGB") -> None:
    """A valid PNG of width x height, written row by row (the test never holds the pixels)."""
    channels, color_type = {"RGB": (3, 2), "RGBA": (4, 6)}[mode]
    row = b"\x00" + bytes([200, 60, 30, 255][:channels]) * width
    comp = zlib.compressobj(6)
    with path.open("wb") as f:

        def chunk(kind: bytes, body: bytes) -> None:
            f.write(struct.pack(">I", len(body)) + kind + body)
            f.write(struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

        f.write(b"\x89PNG\r\n\x1a\n")
        chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
        body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
        chunk(b"IDAT", body)
        chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def baseline_mb(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> int:
    """Peak RSS of classifying two ordinary photos: the model, the runtime and the face detector loaded."""
    folder = tmp_path_factory.mktemp("baseline")
    for name in ("coffee.jpg", "chelsea.jpg"):
        (folder / name).write_bytes((data_dir / name).read_bytes())
    peak, _ = classify_peak_mb(folder, folder / "c.db", "--workers", "2")
    return peak


def test_huge_sparse_and_oversized_files_keep_memory_flat(tmp_path: Path, baseline_mb: int) -> None:
    folder = tmp_path / "huge"
    folder.mkdir()
    with (folder / "sparse.jpg").open("wb") as f:  # 4 GB that take no disk space
        f.truncate(4 * 2**30)
    big_png(folder / "poster.png", 13000, 13000)  # 169 MP, 0.5 MB on disk
    peak, summary = classify_peak_mb(folder, tmp_path / "c.db", "--workers", "2")
    errors = {Path(e["path"]).name: e["error"] for e in summary["error_files"]}
    assert "file too large" in errors["sparse.jpg"]
    assert summary["classified"] + summary["errors"] == 2
    # the default decode memory budget is 1 GB; before the fix this run peaked at 4.4 GB
    assert peak < baseline_mb + 1100, (peak, baseline_mb)


def test_parallel_large_decodes_share_one_memory_budget(tmp_path: Path, baseline_mb: int) -> None:
    folder = tmp_path / "large"
    folder.mkdir()
    for i in range(4):
        big_png(folder / f"scan{i}.png", 5000 + i, 5000)  # 25 MP each, ~150 MB to decode each
    budget_mb = 200
    peak, summary = classify_peak_mb(
        folder, tmp_path / "c.db", "--workers", "4", env={"PHOTOSIFT_DECODE_MEMORY_MB": str(budget_mb)}
    )
    assert summary["classified"] == 4  # each fits the budget: they wait their turn instead of failing
    assert peak < baseline_mb + budget_mb + 100, (peak, baseline_mb)


def test_a_huge_batch_size_does_not_scale_memory(tmp_path: Path, data_dir: Path, baseline_mb: int) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    source = Image.open(data_dir / "chelsea.jpg").convert("RGB").resize((96, 64))
    for i in range(240):
        source.rotate(i * 1.5).save(folder / f"{i:03d}.jpg", quality=80)
    peak, summary = classify_peak_mb(folder, tmp_path / "c.db", "--batch-size", "1024", "--no-people")
    assert summary["classified"] == 240
    # one ORT run over 240 photos held ~2 GB of activations; runs of 16 hold ~0.15 GB
    assert peak < baseline_mb + 400, (peak, baseline_mb)


def test_gallery_thumbnails_of_huge_images_share_the_budget(tmp_path: Path) -> None:
    """Three thumbnails of a 13000² PNG at once took the server to 9 GB; they now take turns."""
    import socket
    import threading
    import time
    import urllib.request

    pytest.importorskip("uvicorn")
    from test_web_serving import register

    posters = []
    for i in range(3):
        posters.append(tmp_path / f"poster{i}.png")
        big_png(posters[-1], 13000 + i, 13000)
    db = tmp_path / "c.db"
    ids = register(db, [str(p) for p in posters])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "photosift", "serve", "--db", str(db), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        statuses: list[int] = []

        def fetch(photo_id: int) -> None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/thumb/{photo_id}.jpg", timeout=300) as r:
                statuses.append(r.status)

        threads = [threading.Thread(target=fetch, args=(ids[str(p)],)) for p in posters]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        status = Path(f"/proc/{server.pid}/status").read_text()
        peak_mb = (
            int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) // 1024
        )
    finally:
        server.terminate()
        server.wait(30)
    assert statuses == [200, 200, 200]
    # one decode at a time under the default 1 GB budget, its memory returned before the next (before: 2.1 GB)
    assert peak_mb < 1100, peak_mb
