"""What a correction and a re-derivation cost in a big library (docs/BENCHMARKS.md, "Corrections at scale").

    PYTHONPATH=src .venv/bin/python tools/correction_bench.py [--photos 100000] [--keep DIR] [--json]

Builds a synthetic catalog of ``--photos`` results written directly (as ``photosift bench --scale``'s rescan
stage pre-fills one): real-looking embeddings — the packaged model's embeddings of the test and sample photos,
mixed two at a time with random weights and multiplicative per-dimension jitter, so neighbourhoods are small
and uneven as in a real library — with the top-100 probabilities, categories and fingerprints that classify
would store for them (the full softmax from the model's own classifier weights), and photos rows with paths.

Then it times (each after waiting up to ``--settle`` seconds for the other processes on this shared machine to
use under a quarter of a core; ``other_cores_busy_max`` says how busy it still was):

* ``correct_cold`` — ``services.correct`` in-process, the first one: no embedding index cached yet;
* ``correct`` / ``undo`` — the same in a "new process" (the in-process index dropped, the cache on disk), the
  median (and min) of ``--repeats`` corrections of random photos and their undos;
* ``correct_after_scan_of_1000`` — the first correction after 1,000 photos were added (a new index segment);
* ``cli_correct`` — ``photosift correct PATH --category … --db …`` as a subprocess (best of 5), against
  ``cli_startup`` (best of 3),
  the same command for a path not in the catalog (interpreter, imports, settings, opening the catalog; the
  difference is the correction beyond start-up);
* ``recategorize_all`` — ``services.recategorize(only_stale=False)``: every category re-derived.

``--before`` times the code on ``PYTHONPATH`` with the API of photosift before this redesign (``services.correct``
retrains and re-derives everything) on a ``--photos`` catalog, for the "before" column.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from photosift.album.abstract import head_for_model
from photosift.album.decisions import AlbumClassifier
from photosift.album.rules import load_rules
from photosift.bench.suite import machine_info, wait_quiet
from photosift.core.catalog import Catalog, PhotoRecord, ResultRecord
from photosift.core.config import Settings
from photosift.models.registry import resolve_model
from photosift.models.tasks import softmax

REPO = Path(__file__).resolve().parents[1]
SOURCES = [REPO / "tests" / "data", REPO / "src" / "photosift" / "samples"]


def base_embeddings(model: Any) -> np.ndarray:
    """The packaged model's embeddings of the test and sample photos."""
    import onnxruntime as ort

    from photosift.core import imaging

    files = sorted({p.name: p for d in SOURCES for p in d.iterdir() if p.suffix in (".jpg", ".png")}.values())
    tensors = [
        imaging.to_tensor(imaging.decode(imaging.read_bytes(p), p, min_side=256), model.card.preprocess)
        for p in files
    ]
    sess = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(["embedding"], {"input": np.stack(tensors)})[0], dtype=np.float32)


def synthetic(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` embeddings: two base photos mixed with random weights, jittered per dimension (lognormal σ 1)."""
    i, j = rng.integers(0, len(base), n), rng.integers(0, len(base), n)
    w = rng.random((n, 1)).astype(np.float32)
    mixed = w * base[i] + (1 - w) * base[j]
    return (mixed * rng.lognormal(0.0, 1.0, mixed.shape).astype(np.float32)).astype(np.float16)


def add_photos(db: Path, start: int, n: int, seed: int = 0) -> None:
    """Write ``n`` synthetic photos (numbered from ``start``) and their results as a scan would store them."""
    from photosift.album.personal import base_head

    model = resolve_model("efficientnet-lite0")
    labels = model.card.labels
    weight, bias = base_head(model.path)
    # What classify decides with: the rules and the abstract-art detector (and, since the redesign, the
    # fingerprint of both that each result stores).
    album = AlbumClassifier(load_rules(), abstract=head_for_model(model.sha256))
    decided_by = getattr(album, "fingerprint", None)
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
                ResultRecord(h, p, e, r.category, r.score, r.fine)
                for h, p, e, r in zip(hashes, probs, emb, results, strict=True)
            ]
            photos = [PhotoRecord(f"/bench/photos/p{int(h, 16):07d}.jpg", 1000, 0, h) for h in hashes]
            cat.write_batch(photos, records, model.sha256, labels)
        if decided_by is not None:
            cat.db.execute("UPDATE results SET decided_by = ? WHERE decided_by IS NULL", (decided_by,))


def build(db: Path, n: int) -> dict[str, Any]:
    started = time.perf_counter()
    add_photos(db, 0, n)
    return {"photos": n, "build_s": round(time.perf_counter() - started, 1)}


SETTLE = {"s": 30.0, "others": 0.0}  # wait up to this long for a quiet machine before each timing


def _quiet() -> None:
    """This machine is shared: wait for the others to calm down, and remember the busiest moment we timed in."""
    SETTLE["others"] = max(SETTLE["others"], wait_quiet(SETTLE["s"]))


def _time(fn: Any) -> tuple[float, Any]:
    _quiet()
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _cli(args: list[str], env: dict[str, str], check: bool = True) -> float:
    _quiet()
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "photosift", *args], env=env, check=check, capture_output=True)
    return time.perf_counter() - t


def measure(db: Path, data_dir: Path, repeats: int) -> dict[str, Any]:
    from photosift import services
    from photosift.album.neighbours import EmbeddingIndex

    settings = Settings(db=db, data_dir=data_dir)
    rng = np.random.default_rng(1)
    with Catalog(db, readonly=True) as cat:
        n = cat.count_results()
    picks = [f"/bench/photos/p{int(i):07d}.jpg" for i in rng.choice(n, repeats + 1, replace=False)]
    out: dict[str, Any] = {}
    cold, report = _time(lambda: services.correct(settings, picks[0], "food"))
    out["correct_cold_s"] = round(cold, 3)
    services.undo(settings, picks[0])
    corrects, undos, moved = [], [], []
    for path in picks[1:]:
        EmbeddingIndex._opened.clear()  # as a new process: the cache on disk, nothing in memory
        t, report = _time(lambda path=path: services.correct(settings, path, "documents"))
        corrects.append(t)
        moved.append(len(report.moved))
        EmbeddingIndex._opened.clear()
        undos.append(_time(lambda path=path: services.undo(settings, path))[0])
    out["correct_s"] = round(statistics.median(corrects), 3)
    out["correct_min_s"] = round(min(corrects), 3)
    out["correct_max_s"] = round(max(corrects), 3)
    out["undo_s"] = round(statistics.median(undos), 3)
    out["undo_min_s"] = round(min(undos), 3)
    out["moved_per_correction"] = round(float(np.mean(moved)), 1)
    env = {**os.environ, "PHOTOSIFT_DATA_DIR": str(data_dir)}
    # Start-up: the same command up to the point where it finds the photo is not in the catalog (interpreter,
    # imports, settings, opening the catalog); exits 2.
    missing = ["correct", "/bench/not-in-the-catalog.jpg", "--category", "plants", "--db", str(db)]
    startup = min(_cli(missing, env, check=False) for _ in range(3))
    cli = []
    for path in picks[1:6]:
        cli.append(_cli(["correct", path, "--category", "plants", "--db", str(db)], env))
        _cli(["correct", path, "--undo", "--db", str(db)], env)
    out["cli_startup_s"] = round(startup, 3)
    out["cli_correct_s"] = round(min(cli), 3)
    out["cli_correct_beyond_startup_s"] = round(min(cli) - startup, 3)
    # After a scan added 1,000 photos: the first correction builds a segment for them, not the whole index.
    add_photos(db, n, 1000, seed=2)
    EmbeddingIndex._opened.clear()
    after_scan, _ = _time(lambda: services.correct(settings, picks[1], "documents"))
    services.undo(settings, picks[1])
    out["correct_after_scan_of_1000_s"] = round(after_scan, 3)
    t, rep = _time(lambda: services.recategorize(settings, only_stale=False))
    out["recategorize_all_s"] = round(t, 2)
    out["recategorize_changed"] = rep.changed
    return out


def measure_before(db: Path, data_dir: Path) -> dict[str, Any]:
    """photosift before the redesign: a correction retrains the head and re-derives every category."""
    from photosift import services

    settings = Settings(db=db, data_dir=data_dir)
    paths = [f"/bench/photos/p{i:07d}.jpg" for i in (1, 2, 3, 4)]
    for path in paths[:2]:
        services.correct(settings, path, "food")  # the head trains from 3 corrections on
    t_correct, _ = _time(lambda: services.correct(settings, paths[2], "food"))
    t_rederive, _ = _time(lambda: services.recategorize(settings))
    return {"correct_s": round(t_correct, 2), "recategorize_all_s": round(t_rederive, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--keep", type=Path, default=None, help="build (or reuse) the catalog in this folder")
    ap.add_argument("--before", action="store_true", help="time the pre-redesign API instead")
    ap.add_argument(
        "--settle", type=float, default=30.0, help="seconds to wait for a quiet machine per timing"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    SETTLE["s"] = args.settle

    tmp = None if args.keep else tempfile.mkdtemp(prefix="photosift-correction-bench-")
    root = args.keep or Path(str(tmp))
    root.mkdir(parents=True, exist_ok=True)
    db = root / "catalog.db"
    try:
        report: dict[str, Any] = {"photos": args.photos}
        if not db.is_file():
            report.update(build(db, args.photos))
        data_dir = root / "data"
        shutil.rmtree(data_dir, ignore_errors=True)
        report.update(measure_before(db, data_dir) if args.before else measure(db, data_dir, args.repeats))
        report["other_cores_busy_max"] = round(SETTLE["others"], 2)
        report["machine"] = machine_info()
        report["date"] = time.strftime("%Y-%m-%d")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:32} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
