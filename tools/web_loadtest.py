"""Bounded load test of `photosift serve` on loopback: pages and thumbnails, with and without a scan running.

    .venv/bin/python tools/web_loadtest.py [--big 48] [--scan-big 240] [--requests 400] [--concurrency 8]

Builds a library under .bench/web (git-ignored) from ../shared/datasets/album-dev (or tests/data when it
is absent): the small PNG cut-outs as they are, plus the JPEG photos upscaled to 12 MP phone-like JPEGs
(distinct crops, so each is its own content). Classifies it with the CLI, starts a real server process, and
runs each phase for a bounded number of requests (and at most --max-seconds). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image, ImageFilter

from photosift.bench.corpus import ALBUM_DEV

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".bench" / "web"
DATASET = ALBUM_DEV / "images"
PORT = 8799


def make_library(n_big: int, folder: Path, seed: int) -> None:
    if folder.exists() and len(list(folder.iterdir())) >= n_big:
        return
    folder.mkdir(parents=True, exist_ok=True)
    src_dir = DATASET if DATASET.is_dir() else REPO / "tests" / "data"
    sources = sorted(p for p in src_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    rng = random.Random(seed)
    for i in range(n_big):
        out = folder / f"img_{seed}_{i:04d}.jpg"
        cuts = [
            rng.random() / 10 for _ in range(4)
        ]  # drawn even when skipping, so reruns make the same files
        if out.exists():
            continue
        with Image.open(sources[i % len(sources)]) as im:
            im = im.convert("RGB")
            w, h = im.size
            box = (w * cuts[0], h * cuts[1], w * (1 - cuts[2]), h * (1 - cuts[3]))
            im = im.crop(tuple(round(v) for v in box))
            im = im.resize((4032, 3024), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(0.6))
            im.save(out, quality=90)


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def run_phase(
    client: httpx.Client, urls: list[str], n: int, conc: int, max_s: float
) -> dict[str, float | str]:
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    deadline = time.monotonic() + max_s

    def one(i: int) -> None:
        nonlocal failures
        if time.monotonic() > deadline:
            return
        t0 = time.perf_counter()
        r = client.get(urls[i % len(urls)])
        dt = time.perf_counter() - t0
        with lock:
            latencies.append(dt)
            failures += r.status_code != 200

    t0 = time.perf_counter()
    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    scan = client.get("/api/scan").json()
    return {
        "scan": f"{scan['state']} {scan['files_done']}/{scan['files_total']}",
        "n": len(latencies),
        "rps": len(latencies) / wall,
        "p50": 1000 * statistics.median(latencies),
        "p95": 1000 * percentile(latencies, 0.95),
        "fail": failures,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big", type=int, default=48, help="12 MP JPEGs in the browsed library")
    ap.add_argument("--scan-big", type=int, default=240, help="12 MP JPEGs in the folder scanned meanwhile")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-seconds", type=float, default=60)
    args = ap.parse_args()

    lib, scan_dir, db = WORK / "library", WORK / "scan-me", WORK / "catalog.db"
    make_library(args.big, lib / "phone", seed=1)
    if DATASET.is_dir() and not (lib / "album").exists():
        shutil.copytree(DATASET, lib / "album")
    make_library(args.scan_big, scan_dir, seed=2)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PHOTOSIFT_DATA_DIR": str(WORK / "data")}
    if not db.exists():
        subprocess.run([bin_dir / "photosift", "classify", str(lib), "--db", str(db)], check=True, env=env)
    # Each run serves a fresh copy, so the scan folder is new to it every time.
    run_db = WORK / "run.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{run_db}{suffix}").unlink(missing_ok=True)
    shutil.copy2(db, run_db)

    server = subprocess.Popen(
        [bin_dir / "photosift", "serve", "--db", str(run_db), "--port", str(PORT)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{PORT}"
    try:
        with httpx.Client(base_url=base, timeout=60, limits=httpx.Limits(max_connections=64)) as client:
            for _ in range(100):
                try:
                    home = client.get("/")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            token = home.text.split('name="photosift-token" content="')[1].split('"')[0]
            with sqlite3.connect(run_db) as conn:
                ids = [r[0] for r in conn.execute("SELECT id FROM photos WHERE status = 'ok' ORDER BY path")]
            pages = ["/", "/uncategorized", "/search?q=a", "/errors", "/scan"] + [
                f"/photo/{i}" for i in ids[:20]
            ]
            thumbs = [f"/thumb/{i}.jpg" for i in ids]
            n, c, m = args.requests, args.concurrency, args.max_seconds
            rows = []
            rows.append(
                ("thumbnails, cold (first decode of each)", run_phase(client, thumbs, len(thumbs), c, m))
            )
            rows.append(("thumbnails, warm (in-memory cache)", run_phase(client, thumbs, n, c, m)))
            rows.append(("pages", run_phase(client, pages, n, c, m)))
            hdr = {"X-Photosift-Token": token, "Accept": "application/json"}
            client.post("/scan/start", data={"folder": str(scan_dir)}, headers=hdr).raise_for_status()
            while client.get("/api/scan").json()["phase"] != "classify":
                time.sleep(0.1)
            rows.append(("pages, scan running", run_phase(client, pages, n, c, m)))
            rows.append(("thumbnails, warm, scan running", run_phase(client, thumbs, n, c, m)))
            views = [f"/view/{i}.jpg" for i in ids if i % 3 == 0]
            rows.append(
                ("photo views 1600 px, cold, scan running", run_phase(client, views, len(views), c, m))
            )
            state = client.get("/api/scan").json()
            client.post("/scan/stop", headers=hdr)
            while client.get("/api/scan").json()["active"]:
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(10)
    print(
        f"\n{len(ids)} photos in the catalog; scan meanwhile: {state['files_done']}/{state['files_total']} "
        f"files at {state['photos_per_s']} photos/s; concurrency {args.concurrency}\n"
    )
    print("| phase | requests | req/s | p50 ms | p95 ms | non-200 | scan after the phase |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['n']:.0f} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['fail']:.0f} "
            f"| {r['scan']} |"
        )


if __name__ == "__main__":
    main()
