"""Benchmarks: where the time goes on one corpus, and how close the pipeline gets to what the machine allows.

One :func:`run_bench` call measures, on the same files:

* ``decode_1t`` / ``decode_Nt`` — the loader's whole per-file work (read, sha256, DCT-scaled decode, orient,
  resize, normalise) on 1 thread and on one thread per core;
* ``infer_b{1,8,16,32}`` — ONNX Runtime on ready tensors, one intra-op thread per core;
* ``pipeline`` — the real :class:`~photosift.run.driver.Pipeline` into a temporary catalog, engine built as
  ``photosift classify`` builds it (engine start-up excluded);
* ``naive`` — full decode, resize, one ``session.run`` per photo: what a first script does;
* ``torch_b{1,16}`` — PyTorch eager on ready tensors, when torch and the weights package are installed;
* ``classify_cli`` (optional) — ``photosift classify`` as a subprocess on two corpus sizes; the difference gives
  the steady-state rate with start-up excluded.

Every stage reports photos/s, ms/photo, CPU utilisation (process CPU time / wall / cores) and peak RSS. The
*limit* is ``cores / (decode core-s + inference core-s per photo)``: the rate at which the cores would be busy
with nothing but necessary work. The ``scale`` suite measures memory over 10,000 photos, a no-change rescan of
100,000 files and the cold start of ``photosift classify one.jpg``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from photosift.core import imaging
from photosift.core.errors import PhotosiftError

CORES = os.cpu_count() or 1
BATCH_SIZES = (1, 8, 16, 32)


@dataclass
class Stage:
    name: str
    photos: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    note: str = ""
    other_cores: float = 0.0  # cores other processes kept busy during the stage
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def photos_per_s(self) -> float:
        return self.photos / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def ms_per_photo(self) -> float:
        return 1000 * self.wall_s / self.photos if self.photos else 0.0

    @property
    def core_ms_per_photo(self) -> float:
        return 1000 * self.cpu_s / self.photos if self.photos else 0.0

    @property
    def cpu_util(self) -> float:
        return self.cpu_s / self.wall_s / CORES if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            photos_per_s=round(self.photos_per_s, 2),
            ms_per_photo=round(self.ms_per_photo, 2),
            core_ms_per_photo=round(self.core_ms_per_photo, 2),
            cpu_util=round(self.cpu_util, 3),
            wall_s=round(self.wall_s, 4),
            cpu_s=round(self.cpu_s, 4),
            peak_rss_mb=round(self.peak_rss_mb, 1),
            other_cores=round(self.other_cores, 2),
        )
        return d


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: psutil (the bench extra) or nothing
        try:
            import psutil

            return float(psutil.Process().memory_info().rss) / 2**20
        except ImportError:
            return 0.0


def _system_busy_s() -> float:
    """CPU seconds all processes have used since boot (Linux /proc/stat), or 0 where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class _Meter:
    """Wall time, process CPU time (all threads), peak RSS (sampled every 5 ms) of a block, and how many
    cores *other* processes used meanwhile (a benchmark on a busy machine says so instead of lying)."""

    def __init__(self) -> None:
        self.wall = self.cpu = self.peak = self.other_cores = 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mb())

    @contextmanager
    def measure(self) -> Iterator[_Meter]:
        self.peak = _rss_mb()
        sampler = threading.Thread(target=self._sample, daemon=True)
        sampler.start()
        w0, c0, s0 = time.perf_counter(), time.process_time(), _system_busy_s()
        try:
            yield self
        finally:
            self.wall = time.perf_counter() - w0
            self.cpu = time.process_time() - c0
            if s0 and self.wall > 0:
                self.other_cores = max(0.0, (_system_busy_s() - s0 - self.cpu) / self.wall)
            self._stop.set()
            sampler.join()
            self.peak = max(self.peak, _rss_mb())


_SETTLE = {"max_wait_s": 0.0}


def wait_quiet(max_wait_s: float, busy_cores: float = 0.25, window_s: float = 0.5) -> float:
    """On a shared machine: wait (up to ``max_wait_s``) until other processes use < ``busy_cores``.

    Returns the cores others used in the last window (0 where /proc/stat is unknown)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        s0, c0 = _system_busy_s(), time.process_time()
        time.sleep(window_s)
        others = max(0.0, (_system_busy_s() - s0 - (time.process_time() - c0)) / window_s)
        if others < busy_cores or time.monotonic() >= deadline:
            return others


def _stage(name: str, photos: int, fn: Callable[[], Any], note: str = "") -> Stage:
    if _SETTLE["max_wait_s"] > 0:
        wait_quiet(_SETTLE["max_wait_s"])
    meter = _Meter()
    with meter.measure():
        fn()
    return Stage(name, photos, meter.wall, meter.cpu, meter.peak, note, other_cores=meter.other_cores)


# -- corpus ---------------------------------------------------------------------------------------------------
def corpus_files(folder: Path) -> list[Path]:
    from photosift.core import scanner

    return sorted(Path(e.path) for e in scanner.walk([folder]))


def default_corpus(root: Path, count: int = 72) -> Path:
    from photosift.bench.corpus import make_phone_corpus

    folder = root / "phone"
    make_phone_corpus(folder, count)
    return folder


# -- the work each stage does -----------------------------------------------------------------------------------
def _load_one(path: Path, pre: imaging.Preprocess) -> np.ndarray:
    """The loader's per-file work, as Stages.load does it (minus the catalog)."""
    data = imaging.read_bytes(path)
    hashlib.sha256(data).hexdigest()
    return imaging.to_tensor(imaging.decode(data, path, min_side=pre.resize_size), pre)


def _naive_tensor(path: Path, pre: imaging.Preprocess) -> np.ndarray:
    """What a first script does: full-size decode, resize the whole image, crop, normalise."""
    from PIL import Image, ImageOps

    with Image.open(path) as src:
        im = ImageOps.exif_transpose(src).convert("RGB")
    w, h = im.size
    scale = pre.resize_size / min(w, h)
    im = im.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
    left, top = (im.width - pre.input_size) // 2, (im.height - pre.input_size) // 2
    im = im.crop((left, top, left + pre.input_size, top + pre.input_size))
    arr = (np.asarray(im, dtype=np.float32) - np.asarray(pre.mean, np.float32)) / np.asarray(
        pre.std, np.float32
    )
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _engine(model: Any, intra: int | None = None) -> Any:
    from photosift.models.session import OrtEngine

    return OrtEngine(model, provider="cpu", intra_op_threads=intra)


def _decode_stage(files: Sequence[Path], pre: imaging.Preprocess, threads: int) -> Stage:
    from concurrent.futures import ThreadPoolExecutor

    if threads == 1:
        stage = _stage("decode_1t", len(files), lambda: [_load_one(p, pre) for p in files])
    else:
        with ThreadPoolExecutor(threads) as pool:
            stage = _stage(
                f"decode_{threads}t", len(files), lambda: list(pool.map(lambda p: _load_one(p, pre), files))
            )
    stage.note = "read + sha256 + DCT-scaled decode + orient + resize + normalise"
    return stage


def _infer_stages(engine: Any, tensors: np.ndarray, photos: int) -> list[Stage]:
    stages = []
    for bs in BATCH_SIZES:
        batches = [
            np.ascontiguousarray(tensors[np.arange(i, i + bs) % len(tensors)]) for i in range(0, photos, bs)
        ]
        engine.run(batches[0])  # shape warm-up

        def go(batches: list[np.ndarray] = batches) -> None:
            for b in batches:
                engine.run(b)

        stage = _stage(f"infer_b{bs}", len(batches) * bs, go)
        stage.note = f"ORT {engine.provider}, intra-op {engine.info.intra_op_threads}, ready tensors"
        stages.append(stage)
    return stages


def _torch_stages(tensors: np.ndarray, photos: int, arch: str) -> list[Stage]:
    try:
        import torch

        from photosift.toolchain import archs
        from photosift.toolchain.builtins import BUILDABLE

        module, _ = archs.build(arch, BUILDABLE[arch].weights())
    except Exception as exc:  # torch, the export extra or the weights package missing
        return [Stage("torch", 0, 0.0, 0.0, 0.0, note=f"skipped: {str(exc).splitlines()[0][:120]}")]
    torch.set_num_threads(CORES)
    stages = []
    with torch.inference_mode():
        for bs in (1, 16):
            n = max(bs, (photos // bs) * bs)
            xs = [torch.from_numpy(tensors[np.arange(i, i + bs) % len(tensors)]) for i in range(0, n, bs)]
            module(xs[0])

            def go(xs: list[Any] = xs) -> None:
                for x in xs:
                    module(x)

            stage = _stage(f"torch_b{bs}", n, go, note=f"PyTorch {torch.__version__} eager, {CORES} threads")
            stages.append(stage)
    return stages


def _naive_stage(engine: Any, files: Sequence[Path], pre: imaging.Preprocess) -> Stage:
    card = engine.card

    def go() -> None:
        for p in files:
            x = _naive_tensor(p, pre)[None]
            engine.session.run([card.logits_name], {card.input_name: x})

    return _stage("naive", len(files), go, note="full decode + resize + one session.run per photo")


def _pipeline_stage(
    resolved: Any, folder: Path, files: int, settings_over: dict[str, Any], name: str = "pipeline"
) -> Stage:
    from photosift.core.catalog import Catalog
    from photosift.core.config import Settings
    from photosift.models.session import OrtEngine
    from photosift.services import build_pipeline

    with tempfile.TemporaryDirectory(prefix="photosift-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), db=Path(tmp) / "catalog.db", model=str(resolved.path))
        for k, v in settings_over.items():
            setattr(settings, k, v)
        catalog = Catalog(settings.db_path)
        pipeline = build_pipeline(settings, catalog)
        holder: dict[str, Any] = {}
        stage = _stage(name, files, lambda: holder.setdefault("s", pipeline.run([str(folder)])))
        summary = holder["s"]
        catalog.close()
    o = pipeline.options
    people = "with" if pipeline.stages._people_factory is not None else "without"
    stage.note = f"real Pipeline {people} face detection: {o.workers} loaders, batch {o.batch_size}, ORT intra-op {cast(OrtEngine, pipeline.engine).info.intra_op_threads}"
    stage.extra = {
        "classified": summary.classified,
        "errors": summary.errors,
        "workers": o.workers,
        "batch_size": o.batch_size,
    }
    stage.photos = summary.classified + summary.errors
    return stage


# -- subprocess measurements ----------------------------------------------------------------------------------
def photosift_command() -> list[str]:
    exe = Path(sys.executable).with_name("photosift")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "photosift"]


def _vm_hwm_mb(pid: int) -> float:
    """Peak RSS of a live process from /proc (VmHWM is per address space, so it starts afresh at exec)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def run_child_rusage(
    args: Sequence[str], env: dict[str, str] | None = None
) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MB, stdout) of one child process (POSIX: os.wait4 for its CPU time).

    Peak RSS is polled from /proc/PID/status (VmHWM) every 10 ms, not taken from ru_maxrss: Linux carries the
    parent's high-water mark into a forked child's ru_maxrss across exec, so a 1.5 GB benchmark process would
    report 1.5 GB for every child."""
    full_env = {**os.environ, **(env or {})}
    if not hasattr(os, "wait4"):
        t0 = time.perf_counter()
        done = subprocess.run(list(args), capture_output=True, check=False, env=full_env)
        if done.returncode != 0:
            raise PhotosiftError(
                f"{' '.join(args)} failed ({done.returncode}): {done.stderr.decode()[-400:]}"
            )
        return time.perf_counter() - t0, 0.0, 0.0, done.stdout.decode()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(args), stdout=out, stderr=err, env=full_env)
        peak = 0.0
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _vm_hwm_mb(proc.pid))
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise PhotosiftError(f"{' '.join(args)} failed ({proc.returncode}): {err.read().decode()[-400:]}")
        return wall, ru.ru_utime + ru.ru_stime, peak, out.read().decode()


def _classify_cli_stage(
    files: Sequence[Path], model: str, repeats: int = 2, people: bool | None = None
) -> Stage | None:
    """Steady-state rate of ``photosift classify``: two corpus sizes, start-up cancels in the difference.

    Each size runs ``repeats`` times into a fresh catalog; the fastest run of each size is kept (on a shared
    machine the slow ones are the ones another process got in the way of)."""
    if len(files) < 6:
        return None
    small, large = len(files) // 3, len(files)
    best: dict[int, tuple[float, float, float, float]] = {}  # n -> (wall, cpu, rss, other cores)
    with tempfile.TemporaryDirectory(prefix="photosift-bench-cli-") as tmp:
        for n in (small, large):
            folder = Path(tmp) / f"c{n}"
            folder.mkdir()
            for p in files[:n]:
                os.symlink(p.resolve(), folder / p.name)
        for i in range(repeats):
            for n in (small, large):
                cmd = [*photosift_command(), "classify", f"{tmp}/c{n}", "--db", f"{tmp}/c{n}-{i}.db"]
                cmd += ["--model", model, "--json"]
                wait_quiet(_SETTLE["max_wait_s"])
                s0 = _system_busy_s()
                env = {} if people is None else {"PHOTOSIFT_PEOPLE": "true" if people else "false"}
                wall, cpu, rss, _ = run_child_rusage(cmd, env)
                others = max(0.0, (_system_busy_s() - s0 - cpu) / wall) if s0 else 0.0
                if n not in best or wall < best[n][0]:
                    best[n] = (wall, cpu, rss, others)
    (w1, c1, r1, o1), (w2, c2, r2, o2) = best[small], best[large]
    return Stage(
        "classify_cli" if people is None else "classify_cli_no_people",
        large - small,
        w2 - w1,
        c2 - c1,
        max(r1, r2),
        note=f"`photosift classify` subprocess, {large} minus {small} photos (start-up cancels), best of {repeats}",
        other_cores=max(o1, o2),
        extra={"wall_small_s": round(w1, 3), "wall_large_s": round(w2, 3), "small": small, "large": large},
    )


# -- scale suite ------------------------------------------------------------------------------------------------
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
    wait_quiet(_SETTLE["max_wait_s"])
    s0 = _system_busy_s()
    wall, cpu, rss, out = run_child_rusage(cmd)
    summary = json.loads(out)
    return {
        "files": summary["seen"],
        "unchanged": summary["unchanged"],
        "classified": summary["classified"],
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "peak_rss_mb": round(rss, 1),
        "other_cores": round(max(0.0, (_system_busy_s() - s0 - cpu) / wall), 2) if s0 else 0.0,
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
    wait_quiet(_SETTLE["max_wait_s"])
    s0, c0, w0 = _system_busy_s(), time.process_time(), time.perf_counter()
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
        round(max(0.0, (_system_busy_s() - s0 - (time.process_time() - c0)) / wall), 2) if s0 else 0.0
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


# -- the report -----------------------------------------------------------------------------------------------
@dataclass
class BenchOptions:
    images: Path | None = None
    model: str = "efficientnet-lite0"
    workroot: Path = field(default_factory=lambda: Path(".bench"))
    corpus_count: int = 72
    infer_photos: int = 128
    naive_limit: int = 24
    torch: bool = True
    cli: bool = True
    scale: bool = False
    settle_s: float = 0.0  # per stage, wait up to this long for other processes to go quiet
    memory_count: int = 10_000
    rescan_count: int = 100_000  # also the library size of the peak-RSS and overview rows
    rescan_big: int = 1_000_000  # 0: skip the big rescan
    pipeline_settings: dict[str, Any] = field(default_factory=dict)
    engine: str = "local"  # "ray": also the local and ray engines interleaved, and the driver's write rate
    engine_rounds: int = 3
    write_rows: int = 4000


def run_bench(opts: BenchOptions, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    from photosift.models.registry import resolve_model

    _SETTLE["max_wait_s"] = opts.settle_s
    resolved = resolve_model(opts.model)
    card = resolved.card
    pre = card.preprocess
    folder = opts.images or default_corpus(opts.workroot, opts.corpus_count)
    files = corpus_files(folder)
    if not files:
        raise PhotosiftError(f"{folder}: no images to benchmark")
    sizes = [p.stat().st_size for p in files]
    # Warm the page cache so every stage reads from memory, as on a second run over a library.
    for p in files:
        p.read_bytes()
    stages: list[Stage] = []

    log("decode, 1 thread")
    # The limit's two terms are the cheapest of two runs: on a shared machine, the dearer run is the one
    # another process polluted the caches of.
    stages.append(min((_decode_stage(files, pre, 1) for _ in range(2)), key=lambda s: s.cpu_s))
    log(f"decode, {CORES} threads")
    stages.append(_decode_stage(files, pre, CORES))
    tensors = np.stack([_load_one(p, pre) for p in files[: min(len(files), 32)]])
    engine = _engine(resolved)
    log("inference on ready tensors")
    stages.extend(_infer_stages(engine, tensors, opts.infer_photos))
    engine1 = _engine(resolved, intra=1)
    bs_pipe = int(opts.pipeline_settings.get("batch_size", 16))
    single = min(
        (_infer_stages_one(engine1, tensors, opts.infer_photos, bs_pipe)[0] for _ in range(2)),
        key=lambda s: s.cpu_s,
    )
    stages.append(single)
    people_stage = _people_stage(files, pre)
    if people_stage is not None:
        stages.append(people_stage)
    log("pipeline (as photosift classify builds it)")
    stages.append(_pipeline_stage(resolved, folder, len(files), opts.pipeline_settings))
    log("pipeline without face detection")
    stages.append(
        _pipeline_stage(
            resolved, folder, len(files), {**opts.pipeline_settings, "people": False}, "pipeline_no_people"
        )
    )
    log("naive loop")
    stages.append(_naive_stage(engine, files[: opts.naive_limit], pre))
    if opts.torch and card.arch in ("efficientnet-lite0", "efficientnet-lite2"):
        log("PyTorch eager")
        stages.extend(_torch_stages(tensors, min(opts.infer_photos, 64), card.arch))
    if opts.cli:
        log("photosift classify (subprocess, two sizes)")
        for people in (None, False):
            cli_stage = _classify_cli_stage(files, str(resolved.path), people=people)
            if cli_stage:
                stages.append(cli_stage)

    by_name = {s.name: s for s in stages}
    decode_core = by_name["decode_1t"].cpu_s / by_name["decode_1t"].photos
    infer_core = single.cpu_s / single.photos
    people_core = people_stage.cpu_s / people_stage.photos if people_stage is not None else 0.0
    limit = CORES / (decode_core + infer_core)
    limit_people = CORES / (decode_core + people_core + infer_core)
    pipe_full = by_name["pipeline"]
    pipe = by_name["pipeline_no_people"]
    naive = by_name["naive"]
    report: dict[str, Any] = {
        "machine": machine_info(),
        "model": {"name": resolved.name, "path": str(resolved.path), "precision": card.precision},
        "corpus": {
            "folder": str(folder),
            "files": len(files),
            "mean_mb": round(sum(sizes) / len(sizes) / 1e6, 2),
        },
        "stages": [s.to_dict() for s in stages],
        "limit": {
            "decode_core_ms": round(1000 * decode_core, 2),
            "infer_core_ms": round(1000 * infer_core, 2),
            "cores": CORES,
            "photos_per_s": round(limit, 2),
            "pipeline_fraction": round(pipe.photos_per_s / limit, 3),
            "formula": "cores / (decode core-ms at 1 thread + inference core-ms at intra-op 1, pipeline batch)",
            "people_core_ms": round(1000 * people_core, 2),
            "photos_per_s_with_people": round(limit_people, 2),
            "pipeline_with_people_fraction": round(pipe_full.photos_per_s / limit_people, 3),
        },
        # Same work as the naive loop (decode + classify): the pipeline without face detection.
        "speedup_vs_naive": round(pipe.photos_per_s / naive.photos_per_s, 2) if naive.photos_per_s else None,
        "speedup_with_people_vs_naive": round(pipe_full.photos_per_s / naive.photos_per_s, 2)
        if naive.photos_per_s
        else None,
    }
    for key, lim in (("classify_cli", limit_people), ("classify_cli_no_people", limit)):
        if key in by_name:
            cli = by_name[key]
            report[key] = {
                "steady_photos_per_s": round(cli.photos_per_s, 2),
                "speedup_vs_naive": round(cli.photos_per_s / naive.photos_per_s, 2),
                "fraction_of_limit": round(cli.photos_per_s / lim, 3),
            }
    if "classify_cli" in by_name and "classify_cli_no_people" in by_name:
        with_faces, without = by_name["classify_cli"], by_name["classify_cli_no_people"]
        report["faces"] = {
            "steady_ratio": round(with_faces.photos_per_s / without.photos_per_s, 3),
            "core_ms_per_photo": round(with_faces.core_ms_per_photo - without.core_ms_per_photo, 2),
            "detector_core_ms_every_photo": round(1000 * people_core, 2),
            "target_ratio": 0.95,
        }
    if opts.engine == "ray":
        from photosift.bench import cluster

        report["engines"] = cluster.compare_engines(
            resolved, folder, opts.engine_rounds, opts.pipeline_settings, opts.settle_s, log
        )
        log("driver: catalog write rate")
        report["driver"] = {
            "write": cluster.driver_write_rate(resolved, folder, opts.write_rows),
            "setup": report["engines"].pop("driver_setup"),
        }
    if opts.scale:
        log(f"scale: memory over {opts.memory_count} photos")
        report["memory"] = memory_at_scale(opts.workroot, opts.memory_count, str(resolved.path))
        log(f"scale: rescan of {opts.rescan_count} files")
        report["rescan"] = rescan_at_scale(opts.workroot, opts.rescan_count, resolved)
        if opts.rescan_big:
            log(f"scale: rescan of {opts.rescan_big} files (made once under {opts.workroot})")
            report["rescan_big"] = rescan_at_scale(opts.workroot, opts.rescan_big, resolved, target_s=15.0)
        log(f"scale: gallery overview on a {opts.rescan_count}-photo catalog")
        report["overview"] = overview_at_scale(opts.workroot, opts.rescan_count)
        log("scale: cold start")
        report["cold_start"] = cold_start(files[0], opts.model)
        from photosift.bench.findscale import find_at_scale

        report["find"] = find_at_scale(opts.rescan_count, log=log)
    return report


def _people_stage(files: Sequence[Path], pre: imaging.Preprocess) -> Stage | None:
    """Face detection (photosift.album.people) on already-decoded images, 1 thread: its core-ms joins the limit."""
    try:
        from photosift.album.people import PeopleDetector

        detector = PeopleDetector()
    except Exception:  # the people module or its runtime is missing: the pipeline will not run it either
        return None
    images = [imaging.decode(p.read_bytes(), p, min_side=pre.resize_size) for p in files]
    detector.detect(images[0])  # sessions are created on first use
    stage = _stage("people_1t", len(images), lambda: [detector.detect(im) for im in images])
    stage.note = "face detection on the decoded (DCT-scaled) image, 1 thread"
    return stage


def _infer_stages_one(engine: Any, tensors: np.ndarray, photos: int, bs: int) -> list[Stage]:
    batches = [
        np.ascontiguousarray(tensors[np.arange(i, i + bs) % len(tensors)]) for i in range(0, photos, bs)
    ]
    engine.run(batches[0])

    def go() -> None:
        for b in batches:
            engine.run(b)

    stage = _stage(f"infer_b{bs}_intra1", len(batches) * bs, go)
    stage.note = "ORT intra-op 1: the inference core-ms of the limit"
    return [stage]


def machine_info() -> dict[str, Any]:
    import platform

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import onnxruntime as ort
    from PIL import __version__ as pil_version

    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0
    return {
        "cpu": cpu,
        "cores": CORES,
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "pillow": pil_version,
        "platform": platform.platform(),
    }


def plot(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in report["stages"] if s["photos"]]
    names = [s["name"] for s in stages]
    rates = [s["photos_per_s"] for s in stages]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(names) + 1.5))
    colors = [
        "#d62728" if n == "naive" else "#2ca02c" if n in ("pipeline", "classify_cli") else "#1f77b4"
        for n in names
    ]
    ax.barh(names, rates, color=colors)
    ax.set_xscale("log")
    limit = report["limit"]["photos_per_s"]
    ax.axvline(limit, color="k", linestyle="--", label=f"limit {limit:.1f} photos/s")
    for y, r in enumerate(rates):
        ax.text(r, y, f" {r:.1f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("photos/s (log scale)")
    m = report["machine"]
    ax.set_title(
        f"photosift bench — {report['model']['name']} ({report['model']['precision']}), {m['cores']} cores, {m['cpu']}",
        fontsize=9,
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def render(report: dict[str, Any]) -> Any:
    """A rich renderable: the stage table and the headline numbers."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    t = Table(
        title=f"photosift bench — {report['corpus']['files']} files, mean {report['corpus']['mean_mb']} MB, model {report['model']['name']}"
    )
    for col in (
        "stage",
        "photos",
        "photos/s",
        "ms/photo",
        "core-ms/photo",
        "CPU util",
        "peak RSS MB",
        "others",
        "what",
    ):
        t.add_column(col, justify="left" if col in ("stage", "what") else "right")
    for s in report["stages"]:
        t.add_row(
            s["name"],
            str(s["photos"]),
            f"{s['photos_per_s']:.1f}",
            f"{s['ms_per_photo']:.1f}",
            f"{s['core_ms_per_photo']:.1f}",
            f"{s['cpu_util']:.0%}",
            f"{s['peak_rss_mb']:.0f}",
            f"{s['other_cores']:.2f}",
            s["note"],
        )
    from photosift.bench import cluster

    lines = summary_lines(report) + cluster.summary_lines(report)
    for key in ("faces", "memory", "rescan", "rescan_big", "overview", "cold_start", "find"):
        if key in report:
            lines.append(f"{key}: {json.dumps(report[key])}")
    return Group(t, *(Text(line) for line in lines))


def summary_lines(
    report: dict[str, Any],
    strong: Callable[[str], str] = str,
    code: Callable[[str], str] = str,
) -> list[str]:
    """The limit and the speed-ups in sentences; ``strong``/``code`` add Markdown where it is wanted."""
    lim = report["limit"]
    fraction = f"{lim['pipeline_fraction']:.1%}"
    lines = [
        f"Limit: {lim['cores']} cores / ({lim['decode_core_ms']} + {lim['infer_core_ms']}) core-ms = "
        f"{strong(str(lim['photos_per_s']) + ' photos/s')}; pipeline at {strong(fraction)} "
        f"of it, {strong(str(report['speedup_vs_naive']) + '×')} the naive loop.",
        f"With face detection (+{lim['people_core_ms']} core-ms/photo) the limit is "
        f"{lim['photos_per_s_with_people']} photos/s; the pipeline reaches {lim['pipeline_with_people_fraction']:.1%} of it.",
    ]
    for key in ("classify_cli", "classify_cli_no_people"):
        if key in report:
            c = report[key]
            lines.append(
                f"{code(key)} steady state: {strong(str(c['steady_photos_per_s']) + ' photos/s')} = "
                f"{strong(str(c['speedup_vs_naive']) + '×')} naive, {c['fraction_of_limit']:.1%} of its limit."
            )
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (docs/BENCHMARKS.md is made from these)."""
    lines = [
        "| stage | photos | photos/s | ms/photo | core-ms/photo | CPU util | peak RSS MB | other procs (cores) | what |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in report["stages"]:
        lines.append(
            f"| {s['name']} | {s['photos']} | {s['photos_per_s']:.1f} | {s['ms_per_photo']:.1f} | "
            f"{s['core_ms_per_photo']:.1f} | {s['cpu_util']:.0%} | {s['peak_rss_mb']:.0f} | {s['other_cores']:.2f} | {s['note']} |"
        )
    lines += ["", *summary_lines(report, strong=lambda text: f"**{text}**", code=lambda text: f"`{text}`")]
    return "\n".join(lines)
