"""Benchmarks of the ray engine: its overhead against the local engine, and how far one driver scales.

:func:`compare_engines` runs the real pipeline with the local engine and with the ray engine on a local Ray
instance, interleaved (local, ray, ray, local, local, ray, …) so that the load of a shared machine falls on both
alike, and measures every process photosift runs — the driver and Ray's workers — by sampling the process tree's
CPU time. Each engine runs on a third of the corpus and on all of it: the difference is its *steady state*
(photos/s and core-ms a photo), from which what a run pays once (Ray's worker processes and actors starting,
ONNX Runtime sessions, the first batch's ramp) cancels; that fixed cost is reported apart, and so is the
instance's own start-up.

:func:`driver_write_rate` measures what the driver does per photo on the ray engine — unpickle the record a
worker sent, commit it through the sink into SQLite — as rows per second: the most photos per second one driver
can take from any cluster. :func:`driver_setup` measures the per-run work the driver does before the first task
(the known-hash array, the dataset of work items), which grows with the library.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from photosift.core.errors import PhotosiftError

_KINDS = {"gcs_server": "ray daemons", "raylet": "ray daemons"}


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:
        raise PhotosiftError("bench --engine ray needs psutil: pip install 'photosift[bench]'") from None
    return psutil


class TreeMeter:
    """CPU seconds and peak RSS of this process and all its descendants (Ray's workers are), sampled every
    ``interval`` s; a worker that exits between samples loses at most one interval of CPU time."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.cpu_s = self.wall_s = self.peak_rss_mb = self.other_cores = 0.0
        self._seen: dict[int, float] = {}
        self._base: dict[int, float] = {}
        self._kind: dict[int, str] = {}

    def _sample(self, psutil: Any) -> float:
        me = psutil.Process()
        rss = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    rss += proc.memory_info().rss
                    name = proc.name()
            except psutil.Error:
                continue
            self._seen[proc.pid] = t.user + t.system
            self._kind[proc.pid] = "driver" if proc.pid == me.pid else _KINDS.get(name, "workers")
        return rss / 2**20

    def cpu_by_kind(self) -> dict[str, float]:
        """CPU seconds since :meth:`measure` began: the driver, Ray's daemons, Ray's worker processes."""
        out = {"driver": 0.0, "ray daemons": 0.0, "workers": 0.0}
        for pid, t in self._seen.items():
            out[self._kind[pid]] += t - self._base.get(pid, 0.0)
        return out

    def cpu_now(self) -> float:
        """CPU seconds the tree has used since :meth:`measure` began, sampled now."""
        self._sample(_psutil())
        return sum(t - self._base.get(pid, 0.0) for pid, t in self._seen.items())

    @contextmanager
    def measure(self) -> Iterator[TreeMeter]:
        from photosift.bench.meter import system_busy_s

        psutil = _psutil()
        self._sample(psutil)
        self._base = dict(self._seen)
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.interval):
                self.peak_rss_mb = max(self.peak_rss_mb, self._sample(psutil))

        sampler = threading.Thread(target=loop, daemon=True)
        sampler.start()
        s0, w0 = system_busy_s(), time.perf_counter()
        try:
            yield self
        finally:
            stop.set()
            sampler.join()
            self.wall_s = time.perf_counter() - w0
            self.cpu_s = self.cpu_now()
            if s0 and self.wall_s > 0:
                self.other_cores = max(0.0, (system_busy_s() - s0 - self.cpu_s) / self.wall_s)


def _pipeline_run(resolved: Any, folder: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """One real Pipeline.run into a new catalog (pipeline built first, as the suite's pipeline stage does)."""
    from photosift.core.config import Settings
    from photosift.services import build_pipeline

    with tempfile.TemporaryDirectory(prefix="photosift-bench-engine-") as tmp:
        settings = Settings(data_dir=Path(tmp), db=Path(tmp) / "catalog.db", model=str(resolved.path))
        for key, value in overrides.items():
            setattr(settings, key, value)
        pipeline = build_pipeline(settings)
        meter = TreeMeter()
        with meter.measure():
            summary = pipeline.run([str(folder)])
        pipeline.catalog.close()
    return {
        "photos": summary.classified + summary.errors,
        "wall_s": meter.wall_s,
        "cpu_s": meter.cpu_s,
        "cpu_by_kind": meter.cpu_by_kind(),
        "peak_rss_mb": meter.peak_rss_mb,
        "other_cores": meter.other_cores,
    }


def _steady(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """A run pair on n and N photos: their difference is the steady state (what every run pays once — Ray's
    worker processes and actors starting, an ONNX Runtime session, the first batch's ramp — cancels)."""
    extra = large["photos"] - small["photos"]
    dwall, dcpu = large["wall_s"] - small["wall_s"], large["cpu_s"] - small["cpu_s"]
    rate = extra / dwall if dwall > 0 else 0.0
    kinds = large["cpu_by_kind"]
    return {
        "photos": [small["photos"], large["photos"]],
        "wall_s": [round(small["wall_s"], 3), round(large["wall_s"], 3)],
        "steady_photos_per_s": round(rate, 2),
        "steady_core_ms_per_photo": round(1000 * dcpu / extra, 1),
        "core_ms_per_photo_by_kind": {
            k: round(1000 * (v - small["cpu_by_kind"][k]) / extra, 1) for k, v in kinds.items()
        },
        "fixed_s": round(small["wall_s"] - small["photos"] / rate, 2) if rate > 0 else None,
        "peak_rss_mb": round(max(small["peak_rss_mb"], large["peak_rss_mb"]), 1),
        "other_cores": round(max(small["other_cores"], large["other_cores"]), 2),
    }


def compare_engines(
    resolved: Any,
    folder: Path,
    rounds: int = 3,
    settings: dict[str, Any] | None = None,
    settle_s: float = 0.0,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Each round runs each engine on a third of ``folder`` and on all of it, the engines' order alternating;
    the overhead of ray compares the medians of the steady states."""
    from photosift.bench.meter import wait_quiet
    from photosift.bench.suite import corpus_files
    from photosift.run.ray_executor import connect

    base = dict(settings or {})
    cores = os.cpu_count() or 1
    t0 = time.perf_counter()
    # The instance the executor would start for its default pool (one actor here): cores + the actor's CPU.
    ray = connect(None, cpus=cores + 1)
    start_s = time.perf_counter() - t0
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="photosift-bench-third-") as tmp:
        third = Path(tmp)
        files = corpus_files(folder)
        for p in files[: max(1, len(files) // 3)]:
            os.symlink(p.resolve(), third / p.name)
        try:
            log("driver: known hashes and the work dataset")
            setup = driver_setup(ray)
            # The first job on a new instance also starts Ray's pool of worker processes: a cost of the
            # instance, not of a run (measured here, kept out of the rounds).
            log("ray engine, first job on the instance")
            first = _pipeline_run(resolved, third, {**base, "engine": "ray"})
            order = ["local", "ray"]
            for i in range(rounds):
                for engine in order if i % 2 == 0 else order[::-1]:
                    pair = []
                    for where in (third, folder):
                        wait_quiet(settle_s)
                        log(f"{engine} engine on {where.name}, round {i + 1}/{rounds}")
                        pair.append(_pipeline_run(resolved, where, {**base, "engine": engine}))
                    runs[engine].append(_steady(*pair))
        finally:
            ray.shutdown()

    def median(engine: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[engine] if r[key] is not None))

    keys = ("steady_photos_per_s", "steady_core_ms_per_photo", "fixed_s", "other_cores")
    med = {e: {k: median(e, k) for k in keys} for e in runs}
    rate_l, rate_r = med["local"]["steady_photos_per_s"], med["ray"]["steady_photos_per_s"]
    cpu_l, cpu_r = med["local"]["steady_core_ms_per_photo"], med["ray"]["steady_core_ms_per_photo"]
    return {
        "ray_start_s": round(start_s, 2),
        "ray_first_job_s": round(first["wall_s"], 2),
        "driver_setup": setup,
        "ray_cpus": cores + 1,
        "settings": {**base, "batch_size": base.get("batch_size", 16)},
        "runs": runs,
        "median": med,
        "overhead_steady": round(rate_l / rate_r - 1, 3) if rate_r else None,
        "overhead_core_ms": round(cpu_r / cpu_l - 1, 3) if cpu_l else None,
        "goal": 0.15,
    }


# -- the driver ------------------------------------------------------------------------------------------------------
def _sample_records(resolved: Any, folder: Path, count: int) -> list[Any]:
    """Real records (the model's outputs on real photos, with faces and categories), copied under ``count``
    distinct paths and content hashes, as workers send them."""
    from photosift.core import scanner
    from photosift.core.catalog import Catalog
    from photosift.core.config import Settings
    from photosift.services import build_pipeline

    with tempfile.TemporaryDirectory(prefix="photosift-bench-rows-") as tmp:
        settings = Settings(data_dir=Path(tmp), db=Path(tmp) / "c.db", model=str(resolved.path))
        catalog = Catalog(settings.db_path)
        stages = build_pipeline(settings, catalog).stages
        entries = list(scanner.walk([folder]))[:16]
        loaded = [stages.load(e, set()) for e in entries]
        real = stages.run_batch([item for item in loaded if item.tensor is not None])
        catalog.close()
    out = []
    for i in range(count):
        rec = real[i % len(real)]
        assert rec.result is not None  # run_batch infers every item it gets
        digest = f"{i:064x}"
        photo = dataclasses.replace(rec.photo, path=f"/library/{i:08d}.jpg", content_hash=digest)
        result = dataclasses.replace(rec.result, content_hash=digest)
        out.append(dataclasses.replace(rec, photo=photo, result=result))
    return out


def driver_write_rate(resolved: Any, folder: Path, rows: int = 4000, batch: int = 16) -> dict[str, Any]:
    """Rows per second the driver takes in on the ray engine: unpickle each record, commit each batch through
    :class:`~photosift.run.sink.CatalogSink` into a new SQLite catalog (WAL, one transaction per batch)."""
    from photosift.core.catalog import Catalog
    from photosift.run.sink import CatalogSink

    records = _sample_records(resolved, folder, rows)
    pickled = [[pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in records[i : i + batch]]
               for i in range(0, len(records), batch)]  # fmt: skip
    labels = resolved.card.labels
    with tempfile.TemporaryDirectory(prefix="photosift-bench-sink-") as tmp:
        catalog = Catalog(Path(tmp) / "c.db")
        catalog.register_model(resolved.sha256, resolved.name, labels, str(resolved.path))
        sink = CatalogSink(catalog, resolved.sha256, labels, set())
        unpickle_s = 0.0
        t0 = time.perf_counter()
        for chunk in pickled:
            u0 = time.perf_counter()
            items = [pickle.loads(b) for b in chunk]
            unpickle_s += time.perf_counter() - u0
            sink.add(items)
        sink.close()
        wall = time.perf_counter() - t0
        db_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
        catalog.close()
    return {
        "rows": rows,
        "batch": batch,
        "wall_s": round(wall, 3),
        "rows_per_s": round(rows / wall, 1),
        "unpickle_share": round(unpickle_s / wall, 3),
        "record_kb": round(sum(len(b) for c in pickled for b in c) / rows / 1024, 1),
        "catalog_kb_per_row": round(db_mb * 1024 / rows, 1),
    }


def driver_setup(ray: Any, entries: int = 200_000, batch: int = 16) -> dict[str, Any]:
    """Per-run driver work before the first task: the known-hash array (a rerun's catalog) and the work dataset
    (``ray.data.from_items`` puts every block in the object store). The dataset is timed twice, with the
    executor's block count and with 1,000-file blocks, which splits its cost into per-file and per-block parts;
    from them, the setup of a 10M-file run."""
    from photosift.core.scanner import FileEntry
    from photosift.run.ray_executor import MAX_INPUT_BLOCKS, KnownHashes, input_blocks

    hashes = [f"{i:064x}" for i in range(entries)]
    t0 = time.perf_counter()
    known = KnownHashes.of(hashes)
    known_s = time.perf_counter() - t0
    work = [FileEntry(f"/library/{i // 1000:05d}/IMG_{i:08d}.jpg", 3_300_000, i) for i in range(entries)]
    timed: list[tuple[int, float]] = []
    for blocks in (input_blocks(entries, batch), max(1, entries // 1000)):
        t0 = time.perf_counter()
        rows = [{"path": e.path, "size": e.size, "mtime_ns": e.mtime_ns} for e in work]
        ds = ray.data.from_items(rows, override_num_blocks=blocks)
        timed.append((blocks, time.perf_counter() - t0))
        del ds, rows
    (b1, t1), (b2, t2) = timed
    per_block = max(0.0, (t1 - t2) / (b1 - b2)) if b1 != b2 else 0.0
    per_file = max(0.0, (t2 - per_block * b2) / entries)
    ten_m = 10_000_000
    return {
        "entries": entries,
        "known_hashes_s_per_million": round(known_s * 1e6 / entries, 2),
        "known_hashes_mb_per_million": round(known.digests.nbytes * 1e6 / entries / 2**20, 1),
        "work_dataset_s": round(t1, 2),
        "work_dataset_blocks": b1,
        "per_file_us": round(1e6 * per_file, 2),
        "per_block_ms": round(1e3 * per_block, 3),
        "setup_10m_s": round(
            known_s * ten_m / entries + per_file * ten_m + per_block * input_blocks(ten_m, batch), 1
        ),
        "max_blocks": MAX_INPUT_BLOCKS,
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1%}"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The engine comparison and the driver's limits in sentences (for the bench's text report)."""
    lines = []
    eng = report.get("engines")
    if eng:
        med = eng["median"]
        ray, local = med["ray"], med["local"]
        lines.append(
            f"ray engine vs local ({len(eng['runs']['ray'])} interleaved rounds, medians of the steady state): "
            f"{ray['steady_photos_per_s']:.1f} vs {local['steady_photos_per_s']:.1f} photos/s "
            f"({_pct(eng['overhead_steady'])} time a photo), {ray['steady_core_ms_per_photo']:.0f} vs "
            f"{local['steady_core_ms_per_photo']:.0f} core-ms a photo ({_pct(eng['overhead_core_ms'])}); goal ≤ "
            f"{eng['goal']:.0%}. Paid once a run: {ray['fixed_s']:.1f} vs {local['fixed_s']:.1f} s; the local Ray "
            f"instance started in {eng['ray_start_s']} s, its first job took {eng['ray_first_job_s']} s. "
            f"Other procs: up to {local['other_cores']:.2f} / {ray['other_cores']:.2f} cores."
        )
    drv = report.get("driver")
    if drv:
        w, st = drv["write"], drv.get("setup", {})
        lines.append(
            f"driver: {w['rows_per_s']:.0f} rows/s into the catalog (unpickle {w['unpickle_share']:.0%} of it, "
            f"{w['record_kb']} KB a record, {w['catalog_kb_per_row']} KB a catalog row); before the first "
            f"task, {st.get('per_file_us')} µs a file + {st.get('per_block_ms')} ms a block for the work "
            f"dataset, {st.get('known_hashes_s_per_million')} s a million known hashes: "
            f"{st.get('setup_10m_s')} s for 10M files."
        )
    return lines
