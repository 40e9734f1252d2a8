"""Peak RSS of `photosift classify` and `photosift serve` on inputs that used to blow memory up (the memory table of
docs/RELIABILITY.md; tests/test_memory.py asserts bounds on the same cases).

    PYTHONPATH=src .venv/bin/python tools/memory_peaks.py
    PYTHONPATH=src .venv/bin/python tools/memory_peaks.py --target-src OLD-CHECKOUT/src    # "before"

Peak RSS is the kernel's VmHWM of the process (bench.meter.run_child_rusage); nothing is timed.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from PIL import Image

from photosift.bench.corpus import big_png
from photosift.bench.meter import photosift_command, run_child_rusage

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def classify_mb(folder: Path, db: Path, env: dict[str, str], *extra: str) -> int:
    args = [*photosift_command(), "classify", str(folder), "--db", str(db), "--json", *extra]
    return int(run_child_rusage(args, env)[2])


def gallery_mb(folder: Path, db: Path, env: dict[str, str]) -> int:
    """Classify three 13000² PNGs, then ask a fresh `serve` for their three thumbnails at once."""
    classify_mb(folder, db, env, "--workers", "1", "--no-people")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [*photosift_command(), "serve", "--db", str(db), "--port", str(port)]
    server = subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)

        def fetch(photo_id: int) -> None:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/thumb/{photo_id}.jpg", timeout=600).read()

        threads = [threading.Thread(target=fetch, args=(i,)) for i in (1, 2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        status = Path(f"/proc/{server.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) // 1024
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-src", type=Path, help="measure the photosift found here (a checkout's src/)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="photosift-memory-") as tmp:
        work = Path(tmp)
        env = {"PHOTOSIFT_DATA_DIR": str(work / "data"), "PHOTOSIFT_CONFIG_DIR": str(work / "config")}
        if args.target_src:
            env["PYTHONPATH"] = str(args.target_src.resolve())

        def folder(name: str) -> Path:
            (work / name).mkdir()
            return work / name

        rows = []
        two = folder("two")
        for name in ("coffee.jpg", "chelsea.jpg"):
            (two / name).write_bytes((DATA / name).read_bytes())
        rows.append(("two ordinary photos", classify_mb(two, work / "two.db", env, "--workers", "2")))
        huge = folder("huge")
        with (huge / "sparse.jpg").open("wb") as f:
            f.truncate(4 * 2**30)
        big_png(huge / "poster.png", 13000, 13000)
        rows.append(
            ("4 GB sparse .jpg + 13000² PNG", classify_mb(huge, work / "huge.db", env, "--workers", "2"))
        )
        scans = folder("scans")
        for i in range(4):
            big_png(scans / f"scan{i}.png", 5000 + i, 5000)
        budget = {**env, "PHOTOSIFT_DECODE_MEMORY_MB": "200"}
        rows.append(
            (
                "four 25 MP PNGs, 4 workers, budget 200 MB",
                classify_mb(scans, work / "s.db", budget, "--workers", "4"),
            )
        )
        many = folder("many")
        source = Image.open(DATA / "chelsea.jpg").convert("RGB").resize((96, 64))
        for i in range(240):
            source.rotate(i * 1.5).save(many / f"{i:03d}.jpg", quality=80)
        for batch in ("1024", "16"):
            mb = classify_mb(many, work / f"m{batch}.db", env, "--batch-size", batch, "--no-people")
            rows.append((f"240 small photos, --batch-size {batch}", mb))
        posters = folder("posters")
        for i in range(3):
            big_png(posters / f"poster{i}.png", 13000 + i, 13000)
        rows.append(("gallery: 3 thumbnails of 13000² PNGs at once", gallery_mb(posters, work / "g.db", env)))
    print("| input | peak RSS |\n|---|---:|")
    for name, mb in rows:
        print(f"| {name} | {mb} MB |")
    print(
        f"\n{os.cpu_count()} cores, Python {sys.version.split()[0]}, target {args.target_src or 'this checkout'}"
    )


if __name__ == "__main__":
    main()
