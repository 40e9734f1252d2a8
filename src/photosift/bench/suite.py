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
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from photosift.bench.meter import (
    CORES,
    SETTLE,
    Stage,
    measure_stage,
    photosift_command,
    run_child_rusage,
    system_busy_s,
    wait_quiet,
)
from photosift.bench.report import machine_info
from photosift.bench.scale import cold_start, memory_at_scale, overview_at_scale, rescan_at_scale
from photosift.core import imaging
from photosift.core.errors import PhotosiftError

BATCH_SIZES = (1, 8, 16, 32)


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
        stage = measure_stage("decode_1t", len(files), lambda: [_load_one(p, pre) for p in files])
    else:
        with ThreadPoolExecutor(threads) as pool:
            stage = measure_stage(
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

        stage = measure_stage(f"infer_b{bs}", len(batches) * bs, go)
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

            stage = measure_stage(
                f"torch_b{bs}", n, go, note=f"PyTorch {torch.__version__} eager, {CORES} threads"
            )
            stages.append(stage)
    return stages


def _naive_stage(engine: Any, files: Sequence[Path], pre: imaging.Preprocess) -> Stage:
    card = engine.card

    def go() -> None:
        for p in files:
            x = _naive_tensor(p, pre)[None]
            engine.session.run([card.logits_name], {card.input_name: x})

    return measure_stage("naive", len(files), go, note="full decode + resize + one session.run per photo")


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
        stage = measure_stage(name, files, lambda: holder.setdefault("s", pipeline.run([str(folder)])))
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


def _classify_cli_stages(files: Sequence[Path], model: str, repeats: int = 4) -> list[Stage]:
    """Steady-state rate of ``photosift classify`` with faces and without (``classify_cli``,
    ``classify_cli_no_people``): two corpus sizes, start-up cancels in the difference.

    The runs are interleaved — each repeat runs both sizes with and without faces, alternating — so a machine
    that slows down or speeds up during the bench moves both sides alike (run as two blocks, the second block
    measured a slower machine). Each (size, faces) keeps its fastest run: on a shared machine the slow ones are
    the ones another process got in the way of."""
    if len(files) < 6:
        return []
    small, large = len(files) // 3, len(files)
    best: dict[tuple[int, bool], tuple[float, float, float, float]] = {}  # -> (wall, cpu, rss, other cores)
    with tempfile.TemporaryDirectory(prefix="photosift-bench-cli-") as tmp:
        for n in (small, large):
            folder = Path(tmp) / f"c{n}"
            folder.mkdir()
            for p in files[:n]:
                os.symlink(p.resolve(), folder / p.name)
        for i in range(repeats):
            for n in (small, large):
                for people in (True, False) if i % 2 == 0 else (False, True):
                    db = f"{tmp}/c{n}-{i}-{int(people)}.db"
                    cmd = [*photosift_command(), "classify", f"{tmp}/c{n}", "--db", db]
                    cmd += ["--model", model, "--json"]
                    wait_quiet(SETTLE["max_wait_s"])
                    s0 = system_busy_s()
                    env = {"PHOTOSIFT_PEOPLE": "true" if people else "false"}
                    wall, cpu, rss, _ = run_child_rusage(cmd, env)
                    others = max(0.0, (system_busy_s() - s0 - cpu) / wall) if s0 else 0.0
                    if (n, people) not in best or wall < best[(n, people)][0]:
                        best[(n, people)] = (wall, cpu, rss, others)
    stages = []
    for people in (True, False):
        (w1, c1, r1, o1), (w2, c2, r2, o2) = best[(small, people)], best[(large, people)]
        stages.append(
            Stage(
                "classify_cli" if people else "classify_cli_no_people",
                large - small,
                w2 - w1,
                c2 - c1,
                max(r1, r2),
                note=f"`photosift classify` subprocess, {large} minus {small} photos (start-up cancels), "
                f"best of {repeats}, interleaved with and without faces",
                other_cores=max(o1, o2),
                extra={
                    "wall_small_s": round(w1, 3),
                    "wall_large_s": round(w2, 3),
                    "small": small,
                    "large": large,
                },
            )
        )
    return stages


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
    correction_counts: tuple[int, ...] = (10_000, 100_000)  # catalog sizes for corrections and re-derivation
    correction_repeats: int = 9
    pipeline_settings: dict[str, Any] = field(default_factory=dict)
    engine: str = "local"  # "ray": also the local and ray engines interleaved, and the driver's write rate
    engine_rounds: int = 3
    write_rows: int = 4000


def run_bench(opts: BenchOptions, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    from photosift.models.registry import resolve_model

    SETTLE["max_wait_s"] = opts.settle_s
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
        log("photosift classify (subprocess, two sizes, with and without faces interleaved)")
        stages.extend(_classify_cli_stages(files, str(resolved.path)))

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
        from photosift.bench.corrections import corrections_at_scale

        report["corrections"] = []
        for count in opts.correction_counts:
            log(f"scale: corrections and re-derivation on a {count}-photo catalog")
            report["corrections"].append(corrections_at_scale(count, opts.correction_repeats, opts.settle_s))
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
    stage = measure_stage("people_1t", len(images), lambda: [detector.detect(im) for im in images])
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

    stage = measure_stage(f"infer_b{bs}_intra1", len(batches) * bs, go)
    stage.note = "ORT intra-op 1: the inference core-ms of the limit"
    return [stage]
