"""Finding at scale: search, similar and duplicates on a synthetic 100,000-photo catalog (``bench --scale``).

The catalog is written through :meth:`~photosift.core.catalog.Catalog.write_batch`, as a scan writes it: per
photo a classifier result (softmax over the 1000 ImageNet classes, one class made likely, so the top-100 and
the categories are as a real run stores them), a 1280-d embedding and dates. Embeddings come from 2,000
"scenes" (a random centre each, plus noise: photos of one scene are alike, other photos are not) and 1 % of the
photos are near-copies of another (the duplicates to find). Everything goes through :mod:`photosift.services`,
the code the CLI and the gallery run: the first call of each kind builds the arrays (*cold*), the next ones
reuse them (*warm*, the gallery's case).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

SCENES = 2000
DIM = 1280
QUERIES = ("dog", "musical instrument", "vehicles 2023", "bird", "june 2024")


def build_catalog(db: Path, count: int, labels: list[str], seed: int = 0) -> dict[str, Any]:
    """A catalog of ``count`` photos with results, embeddings and dates; returns what it holds."""
    from photosift.core.catalog import Catalog, PhotoRecord, ResultRecord
    from photosift.core.photometa import PhotoMeta
    from photosift.models.tasks import softmax

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (SCENES, DIM)).astype(np.float32)
    copies = set(rng.choice(count, count // 100, replace=False).tolist())
    model = "f" * 64
    t0 = time.perf_counter()
    with Catalog(db) as cat:
        cat.register_model(model, "bench-classifier", labels)
        chunk = 5000
        for start in range(0, count, chunk):
            n = min(chunk, count - start)
            ids = np.arange(start, start + n)
            scene = rng.integers(0, SCENES, n)
            logits = rng.normal(0, 1, (n, len(labels))).astype(np.float32)
            logits[np.arange(n), rng.integers(0, len(labels), n)] += 7.0
            probs = softmax(logits)
            emb = centres[scene] + rng.normal(0, 1.2, (n, DIM)).astype(np.float32)
            for k, i in enumerate(ids):
                if int(i) in copies and k > 0:  # a near-copy of the photo before it
                    emb[k] = emb[k - 1] + rng.normal(0, 0.15, DIM).astype(np.float32)
                    probs[k] = probs[k - 1]
            results = [ResultRecord(f"h{i:07d}", probs[k], emb[k], None, None) for k, i in enumerate(ids)]
            photos = []
            for i in ids:
                month = 1 + int(i) % 12
                meta = PhotoMeta(
                    4032, 3024, f"{2015 + int(i) % 10}-{month:02d}-15T12:00:00", "exif", None, False, int(i)
                )
                photos.append(
                    PhotoRecord(
                        f"/bench/photos/{int(i) // 1000:03d}/IMG_{int(i):06d}.jpg",
                        3_000_000,
                        0,
                        f"h{i:07d}",
                        meta=meta,
                    )
                )
            cat.write_batch(photos, results, model, labels)
    return {
        "photos": count,
        "near_copies": len(copies),
        "scenes": SCENES,
        "write_s": round(time.perf_counter() - t0, 1),
    }


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return 1000 * (time.perf_counter() - t0), out


def find_at_scale(
    count: int = 100_000, repeats: int = 5, log: Callable[[str], None] = lambda s: None
) -> dict[str, Any]:
    """Search, similar and duplicates timings (ms) on a fresh ``count``-photo catalog."""
    from photosift import services
    from photosift.core.config import Settings
    from photosift.models.card import imagenet_labels

    with tempfile.TemporaryDirectory(prefix="photosift-bench-find-") as tmp:
        db = Path(tmp) / "catalog.db"
        log(f"find: writing a {count}-photo catalog")
        built = build_catalog(db, count, imagenet_labels())
        settings = Settings(db=db, data_dir=Path(tmp) / "data")
        try:
            report: dict[str, Any] = {"catalog": built}
            log("find: search")
            cold, _ = _timed(lambda: services.search(settings, QUERIES[0], limit=48))
            searches = {}
            for q in QUERIES:
                runs = [_timed(partial(services.search, settings, q, limit=48)) for _ in range(repeats)]
                searches[q] = {
                    "ms": round(statistics.median(r[0] for r in runs), 1),
                    "found": runs[0][1].total,
                }
            report["search"] = {"cold_ms": round(cold, 1), "warm": searches}
            log("find: similar")
            ids = [
                services.photo_by_path(settings, f"/bench/photos/{i // 1000:03d}/IMG_{i:06d}.jpg")
                for i in range(0, count, max(1, count // 20))
            ]
            cold, _ = _timed(lambda: services.similar(settings, ids[0], limit=20))
            warm = [_timed(partial(services.similar, settings, i, limit=20))[0] for i in ids[1:]]
            report["similar"] = {
                "cold_ms": round(cold, 1),
                "warm_median_ms": round(statistics.median(warm), 1),
                "warm_max_ms": round(max(warm), 1),
                "queries": len(warm),
            }
            log("find: duplicates")
            ms, groups = _timed(lambda: services.duplicates(settings))
            report["duplicates"] = {
                "ms": round(ms, 1),
                "groups": len(groups),
                "planted_near_copies": built["near_copies"],
            }
        finally:
            services.close_finding(settings)
    return report
