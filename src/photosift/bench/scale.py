"""The scale suite: memory over many photos, no-change rescans of 100k–1M files, the gallery overview on a large
catalog, and the cold start of ``photosift classify one.jpg`` (``photosift bench --scale``)."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from photosift.bench.meter import SETTLE, photosift_command, run_child_rusage, system_busy_s, wait_quiet


def memory_at_scale(root: Path, count: int, model: str) -> dict[str, Any]:
    from photosift.bench.corpus import make_many_small

    folder = make_many_small(root / f"small{count}", count)
    with tempfile.TemporaryDirectory(prefix="photosift-bench-mem-") as tmp:
        cmd = [
            *photosift_command(),
            "classify",
            str(folder),
            "--db",
            f"{tmp}/c.db",
            "--model",
            model,
            "--json",
        ]
        wall, _, rss, out = run_child_rusage(cmd)
    summary = json.loads(out)
    return {
        "photos": summary["classified"],
        "errors": summary["errors"],
        "image_size": "320x240 JPEG (distinct bytes, 16 distinct pictures)",
        "wall_s": round(wall, 2),
        "photos_per_s": round(summary["classified"] / wall, 1) if wall else 0.0,
        "peak_rss_mb": round(rss, 1),
        "target_peak_rss_mb": 500,
    }


def _prefilled_catalog(folder: Path, db: Path, resolved: Any) -> None:
    """A catalog that already knows every file under ``folder`` (all "ok", 64 shared contents with results).

    Built once and kept beside the folder: a no-change rescan writes nothing, so the next run reuses it."""
    from photosift.core import scanner
    from photosift.core.catalog import Catalog, PhotoRecord, ResultRecord
    from photosift.core.photometa import PhotoMeta, mtime_iso

    done = db.with_name(db.name + ".complete")
    if done.is_file() and db.is_file():
        return
    db.unlink(missing_ok=True)
    labels = resolved.card.labels
    with Catalog(db) as catalog:
        catalog.register_model(resolved.sha256, resolved.name, labels, str(resolved.path))
        probs = np.full(len(labels), 1.0 / len(labels), dtype=np.float32)
        hashes = [f"bench{i:04d}" for i in range(64)]  # copies share content: few results, many photos
        catalog.write_batch(
            [], [ResultRecord(h, probs, None, None, None) for h in hashes], resolved.sha256, labels
        )
        batch: list[PhotoRecord] = []
        for i, e in enumerate(scanner.walk([folder])):
            meta = PhotoMeta(8, 8, mtime_iso(e.mtime_ns), "mtime")  # as scanned: nothing left to fill in
            batch.append(PhotoRecord(e.path, e.size, e.mtime_ns, hashes[i % len(hashes)], meta=meta))
            if len(batch) >= 20_000:
                catalog.write_batch(batch, [], resolved.sha256, labels)
                batch.clear()
        catalog.write_batch(batch, [], resolved.sha256, labels)
    done.touch()


def rescan_at_scale(root: Path, count: int, resolved: Any, target_s: float | None = None) -> dict[str, Any]:
    """No-change rescan of ``count`` files: ``photosift classify`` as a subprocess over a pre-filled catalog.

    Its wall time includes start-up (~0.8 s); its peak RSS is what a library of that size costs the process
    (the snapshot of the catalog, the known contents, the walk)."""
    from photosift.bench.corpus import make_many_tiny

    folder = make_many_tiny(root / f"tiny{count}", count)
    db = root / f"tiny{count}.db"
    _prefilled_catalog(folder, db, resolved)
    cmd = [
        *photosift_command(),
        "classify",
        str(folder),
        "--db",
        str(db),
        "--model",
        str(resolved.path),
        "--json",
    ]
    wait_quiet(SETTLE["max_wait_s"])
    s0 = system_busy_s()
    wall, cpu, rss, out = run_child_rusage(cmd)
    summary = json.loads(out)
    return {
        "files": summary["seen"],
        "unchanged": summary["unchanged"],
        "classified": summary["classified"],
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "peak_rss_mb": round(rss, 1),
        "other_cores": round(max(0.0, (system_busy_s() - s0 - cpu) / wall), 2) if s0 else 0.0,
        "target_s": target_s if target_s is not None else round(5.0 * count / 100_000, 1),
        "note": "`photosift classify` subprocess, tiny distinct files, page cache warm, catalog pre-filled",
    }


def _served_page_ms(db: Path, urls: Sequence[str], repeats: int) -> dict[str, Any]:
    """Whole pages as a browser gets them: ``photosift serve`` in a subprocess, best of ``repeats`` GETs each
    (the first GET of each page is not timed). Skipped, with the reason, where the web extra is missing."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [*photosift_command(), "serve", "--db", str(db), "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/scan", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    reason = (server.stderr.read() if server.stderr else b"").decode()[-200:]
                    return {"pages": f"skipped: photosift serve did not start ({reason.strip()})"}
                time.sleep(0.2)
        for url in urls:
            times = []
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{url}", timeout=60) as resp:
                    resp.read()
                if i:
                    times.append(time.perf_counter() - t0)
            out[f"page {url}"] = round(1000 * min(times), 2)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"pages_ms": out}


def overview_at_scale(root: Path, count: int, repeats: int = 5) -> dict[str, Any]:
    """The gallery's overview, a deep category page and a search on a ``count``-photo catalog (best of
    ``repeats``): the catalog queries alone, and the whole page through the app when the web extra is here."""
    from photosift.bench.corpus import make_scale_catalog
    from photosift.core.catalog import Catalog

    db = make_scale_catalog(root / f"catalog{count}.db", count)

    def best(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return round(1000 * min(times), 2)

    out: dict[str, Any] = {"photos": count, "target_ms": 100}
    wait_quiet(SETTLE["max_wait_s"])
    s0, c0, w0 = system_busy_s(), time.process_time(), time.perf_counter()
    with Catalog(db) as cat:

        def overview_queries() -> None:
            for name in cat.counts():
                if name == "None":
                    cat.results(status="ok", uncategorized=True, limit=4)
                else:
                    cat.results(category=name, status="ok", limit=4)
            cat.status_counts()

        out["overview_queries_ms"] = best(overview_queries)
        deep = count // 10 // 48 // 2  # a page half way through a category of ~count/10 photos
        out["category_page_ms"] = best(
            lambda: cat.results(category="animals", status="ok", limit=48, offset=48 * deep)
        )
        out["search_page_ms"] = best(lambda: cat.results(status="ok", text="dog", limit=48))
        out["search_count_ms"] = best(lambda: cat.count_results(status="ok", text="dog"))
    out |= _served_page_ms(db, ["/", f"/category/animals?page={deep + 1}"], repeats)
    wall = time.perf_counter() - w0
    out["other_cores"] = (
        round(max(0.0, (system_busy_s() - s0 - (time.process_time() - c0)) / wall), 2) if s0 else 0.0
    )
    return out


def cold_start(sample: Path, model: str, repeats: int = 3) -> dict[str, Any]:
    walls = []
    with tempfile.TemporaryDirectory(prefix="photosift-bench-cold-") as tmp:
        for i in range(repeats):
            cmd = [
                *photosift_command(),
                "classify",
                str(sample),
                "--db",
                f"{tmp}/c{i}.db",
                "--model",
                model,
                "--json",
            ]
            walls.append(run_child_rusage(cmd)[0])
    return {
        "command": "photosift classify ONE.jpg --db NEW.db --json",
        "walls_s": [round(w, 3) for w in walls],
        "best_s": round(min(walls), 3),
        "first_s": round(walls[0], 3),
        "target_s": 0.8,
    }
