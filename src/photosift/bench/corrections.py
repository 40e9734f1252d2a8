"""What a correction and a re-derivation cost in a big library (``photosift bench --scale``; the standalone tool
with the pre-redesign comparison is tools/correction_bench.py; docs/BENCHMARKS.md, "Corrections and
re-derivation at 100,000 photos").

A synthetic catalog of ``count`` results is written directly, as a scan stores them: real-looking embeddings —
the packaged model's embeddings of the sample photos (and tests/data in a checkout), mixed two at a time with
random weights and multiplicative per-dimension jitter, so neighbourhoods are small and uneven as in a real
library — with the top-100 probabilities, categories and fingerprints that classify would store for them (the
full softmax from the model's own classifier weights), and photos rows with paths.

Then it times (each after waiting up to ``settle`` seconds for the other processes on a shared machine to use
under a quarter of a core; ``other_cores_busy_max`` says how busy it still was):

* ``catalog_open_s`` — opening the catalog as its last writer left it, best of 3; ``catalog_full_check_s`` — the
  full check (``PRAGMA quick_check``) an open pays when another program changed the file;
* ``correct_cold_s`` — ``services.correct`` in-process, the first one: opening the catalog, no embedding index
  cached yet;
* ``correct_s`` / ``undo_s`` — a correction and its undo through an open catalog, as the gallery makes them
  (and the CLI after its start-up), the index as a new process finds it (the in-process index dropped, the cache
  on disk): the median (and min, max) of ``repeats`` corrections of random photos;
* ``cli_correct_beyond_startup_s`` — ``photosift correct PATH --category … --db …`` as a subprocess (best of 5)
  minus ``cli_startup_s``, the same command for a path not in the catalog (best of 3: interpreter, imports,
  settings, opening the catalog);
* ``correct_after_scan_s`` — the first correction after 1 % more photos were added (a new index segment);
* ``recategorize_all_s`` — ``services.recategorize(only_stale=False)``: every category re-derived.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from photosift.bench.corpus import REPOSITORY
from photosift.bench.meter import photosift_command, wait_quiet

_PACKAGE = Path(__file__).resolve().parents[1]
SOURCES = [REPOSITORY / "tests" / "data", _PACKAGE / "samples"]


def base_embeddings(model: Any) -> np.ndarray:
    """The packaged model's embeddings of the sample photos (and tests/data in a checkout)."""
    from photosift.core import imaging
    from photosift.models.session import open_session

    found = {p.name: p for d in SOURCES if d.is_dir() for p in d.iterdir() if p.suffix in (".jpg", ".png")}
    files = sorted(found.values())
    tensors = [
        imaging.to_tensor(imaging.decode(imaging.read_bytes(p), p, min_side=256), model.card.preprocess)
        for p in files
    ]
    session = open_session(model.path)
    return np.asarray(session.run(["embedding"], {"input": np.stack(tensors)})[0], dtype=np.float32)


def synthetic(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` embeddings: two base photos mixed with random weights, jittered per dimension (lognormal σ 1)."""
    i, j = rng.integers(0, len(base), n), rng.integers(0, len(base), n)
    w = rng.random((n, 1)).astype(np.float32)
    mixed = w * base[i] + (1 - w) * base[j]
    return (mixed * rng.lognormal(0.0, 1.0, mixed.shape).astype(np.float32)).astype(np.float16)


def add_photos(db: Path, start: int, n: int, seed: int = 0) -> None:
    """Write ``n`` synthetic photos (numbered from ``start``) and their results as a scan would store them."""
    from photosift.album import learned
    from photosift.album.abstract import head_for_model
    from photosift.album.decisions import AlbumClassifier
    from photosift.album.personal import base_head
    from photosift.album.rules import load_rules
    from photosift.core.catalog import Catalog, PhotoRecord, ResultRecord
    from photosift.models.registry import resolve_model
    from photosift.models.tasks import softmax

    model = resolve_model("efficientnet-lite0")
    labels = model.card.labels
    weight, bias = base_head(model.path)
    # What classify decides with (the rules, the abstract-art head, the learned head), and its fingerprint.
    album = AlbumClassifier(
        load_rules(),
        abstract=head_for_model(model.sha256),
        category_head=learned.head_for_model(model.sha256),
    )
    rng = np.random.default_rng(seed)
    base = base_embeddings(model)
    with Catalog(db) as cat:
        cat.register_model(model.sha256, model.name, labels, str(model.path), task="classify")
        for first in range(start, start + n, 5000):
            emb = synthetic(base, min(5000, start + n - first), rng)
            probs = softmax(emb.astype(np.float32) @ weight.T + bias)
            results = album.categorize(probs, None, emb)
            hashes = [f"{i:064x}" for i in range(first, first + len(emb))]
            records = [
                ResultRecord(h, p, e, r.category, r.score, r.fine, decided_by=album.fingerprint)
                for h, p, e, r in zip(hashes, probs, emb, results, strict=True)
            ]
            photos = [PhotoRecord(photo_path(int(h, 16)), 1000, 0, h) for h in hashes]
            cat.write_batch(photos, records, model.sha256, labels)


def photo_path(i: int) -> str:
    return f"/bench/photos/p{i:07d}.jpg"


class _Timer:
    """Times calls after waiting for a quiet machine; remembers the busiest moment it timed in."""

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self.others = 0.0

    def __call__(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        if self.settle_s > 0:
            self.others = max(self.others, wait_quiet(self.settle_s))
        t = time.perf_counter()
        out = fn()
        return time.perf_counter() - t, out

    def cli(self, args: list[str], env: dict[str, str], check: bool = True) -> float:
        return self(
            lambda: subprocess.run([*photosift_command(), *args], env=env, check=check, capture_output=True)
        )[0]


def measure(db: Path, data_dir: Path, repeats: int = 9, settle_s: float = 30.0) -> dict[str, Any]:
    """The timings of the module docstring on the catalog at ``db`` (it gains 1 % more photos)."""
    from photosift import services
    from photosift.album.neighbours import EmbeddingIndex
    from photosift.core.catalog import Catalog
    from photosift.core.config import Settings

    timer = _Timer(settle_s)
    settings = Settings(db=db, data_dir=data_dir)
    rng = np.random.default_rng(1)
    with Catalog(db, readonly=True) as cat:
        n = cat.count_results()
    picks = [photo_path(int(i)) for i in rng.choice(n, repeats + 1, replace=False)]
    out: dict[str, Any] = {"photos": n}
    # Opening the catalog: as its last writer left it (no check), and its full check (PRAGMA quick_check, linear
    # in the file's size), which an open pays after another program changed the file (core/checkrecord.py).
    out["catalog_open_s"] = round(min(timer(lambda: Catalog(db).close())[0] for _ in range(3)), 3)
    with Catalog(db) as cat:
        out["catalog_full_check_s"] = round(timer(cat._check_damage)[0], 3)
    cold, _ = timer(lambda: services.correct(settings, picks[0], "food"))
    out["correct_cold_s"] = round(cold, 3)
    services.undo(settings, picks[0])
    corrects: list[float] = []
    undos: list[float] = []
    moved: list[int] = []
    with Catalog(db) as cat:  # as the gallery (and the CLI after its start-up) corrects: the catalog open
        for path in picks[1:]:
            content_hash = cat.content_hash_of(path)
            assert content_hash is not None
            EmbeddingIndex._opened.clear()  # as a new process: the cache on disk, nothing in memory
            t, report = timer(partial(services.correct_hash, settings, cat, content_hash, "documents"))
            corrects.append(t)
            moved.append(len(report.moved))
            EmbeddingIndex._opened.clear()
            undos.append(timer(partial(services.undo_hash, settings, cat, content_hash))[0])
    out["correct_s"] = round(statistics.median(corrects), 3)
    out["correct_min_s"] = round(min(corrects), 3)
    out["correct_max_s"] = round(max(corrects), 3)
    out["undo_s"] = round(statistics.median(undos), 3)
    out["moved_per_correction"] = round(float(np.mean(moved)), 1)
    env = {**os.environ, "PHOTOSIFT_DATA_DIR": str(data_dir)}
    # Start-up: the same command up to the point where it finds the photo is not in the catalog; exits 2.
    missing = ["correct", "/bench/not-in-the-catalog.jpg", "--category", "plants", "--db", str(db)]
    startup = min(timer.cli(missing, env, check=False) for _ in range(3))
    cli = []
    for path in picks[1:6]:
        cli.append(timer.cli(["correct", path, "--category", "plants", "--db", str(db)], env))
        timer.cli(["correct", path, "--undo", "--db", str(db)], env)
    out["cli_startup_s"] = round(startup, 3)
    out["cli_correct_s"] = round(min(cli), 3)
    out["cli_correct_beyond_startup_s"] = round(min(cli) - startup, 3)
    # After a scan added 1 %: the first correction builds a segment for those, not the whole index.
    add_photos(db, n, max(1, n // 100), seed=2)
    EmbeddingIndex._opened.clear()
    after_scan, _ = timer(lambda: services.correct(settings, picks[1], "documents"))
    services.undo(settings, picks[1])
    out["correct_after_scan_s"] = round(after_scan, 3)
    t, rep = timer(lambda: services.recategorize(settings, only_stale=False))
    out["recategorize_all_s"] = round(t, 2)
    out["recategorize_changed"] = rep.changed
    out["other_cores_busy_max"] = round(timer.others, 2)
    return out


def corrections_at_scale(count: int, repeats: int = 9, settle_s: float = 30.0) -> dict[str, Any]:
    """Build a ``count``-photo catalog in a temporary folder and :func:`measure` it."""
    with tempfile.TemporaryDirectory(prefix="photosift-bench-corrections-") as tmp:
        db = Path(tmp) / "catalog.db"
        started = time.perf_counter()
        add_photos(db, 0, count)
        build_s = time.perf_counter() - started
        return {**measure(db, Path(tmp) / "data", repeats, settle_s), "build_s": round(build_s, 1)}
