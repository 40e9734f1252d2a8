"""scanner -> loader pool -> batcher -> engine -> postprocess -> catalog.

The main thread only batches, runs the model and commits; a thread pool reads and decodes files meanwhile
(Pillow and OpenCV release the GIL), so decoding overlaps inference from the first batch. At most
``queue_depth`` files are in flight, so memory stays flat however large the library. Each batch is committed
in one transaction: Ctrl-C, a cancel from the web UI, or a SIGKILL loses at most the batch in flight.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from photosift.core import imaging, scanner
from photosift.core.catalog import Catalog, PhotoRecord, ResultRecord
from photosift.core.errors import UnreadableImage
from photosift.models.session import OrtEngine, softmax


class CategoryLike(Protocol):
    @property
    def category(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def fine(self) -> str | None: ...


class Categorizer(Protocol):
    """Album categories from the softmax, the face signals and the embeddings (album.AlbumClassifier)."""

    def categorize(
        self, probs: np.ndarray, people: Sequence[Any] | None = None, embeddings: np.ndarray | None = None
    ) -> Sequence[CategoryLike]: ...


class PeopleDetector(Protocol):
    def detect(self, image: Any) -> Any: ...


@dataclass
class ClassifyOptions:
    batch_size: int = 16
    workers: int = 2
    queue_depth: int | None = None  # files in flight; default: enough to keep workers busy during a batch
    retry_errors: bool = False
    include_hidden: bool = False
    commit_every: int = 256  # files without inference (errors, renames) are committed at least this often
    # JPEG decode on the GPU (nvJPEG via torchvision); falls back to the CPU decoder, with a logged reason.
    gpu_decode: bool = False


@dataclass
class Progress:
    phase: str  # "scan" | "classify" | "done"
    files_total: int = 0
    files_done: int = 0
    classified: int = 0
    reused: int = 0
    errors: int = 0
    elapsed: float = 0.0
    photos_per_s: float = 0.0

    @property
    def eta_s(self) -> float | None:
        if self.photos_per_s <= 0 or self.files_total <= self.files_done:
            return None
        return (self.files_total - self.files_done) / self.photos_per_s


@dataclass
class RunSummary:
    seen: int = 0
    classified: int = 0
    unchanged: int = 0
    reused: int = 0  # new path or changed mtime, but known content: result reused without inference
    errors: int = 0
    missing: int = 0
    elapsed: float = 0.0
    classify_elapsed: float = 0.0
    provider: str = ""
    model: str = ""
    cancelled: bool = False
    categories: Counter[str] = field(default_factory=Counter)
    error_files: list[tuple[str, str]] = field(default_factory=list)

    @property
    def photos_per_s(self) -> float:
        return self.classified / self.classify_elapsed if self.classify_elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "classified": self.classified,
            "unchanged": self.unchanged,
            "reused": self.reused,
            "errors": self.errors,
            "missing": self.missing,
            "elapsed_s": round(self.elapsed, 3),
            "photos_per_s": round(self.photos_per_s, 2),
            "provider": self.provider,
            "model": self.model,
            "cancelled": self.cancelled,
            "categories": dict(self.categories.most_common()),
            "error_files": [{"path": p, "error": e} for p, e in self.error_files],
        }


@dataclass(slots=True)
class _Loaded:
    entry: scanner.FileEntry
    content_hash: str | None = None
    tensor: np.ndarray | None = None
    people: Any = None
    error: str | None = None
    reuse: bool = False


def plan(
    entries: Iterable[scanner.FileEntry],
    catalog: Catalog,
    roots: Sequence[str],
    known: set[str],
    retry_errors: bool,
) -> tuple[list[scanner.FileEntry], int, int, list[str]]:
    """Split the scanned files into work and unchanged ones; returns (work, seen, unchanged, missing paths)."""
    snapshot = catalog.snapshot(roots)
    work: list[scanner.FileEntry] = []
    seen = unchanged = 0
    seen_paths: set[str] = set()
    for entry in entries:
        seen += 1
        seen_paths.add(entry.path)
        state = snapshot.get(entry.path)
        same_file = state is not None and state.size == entry.size and state.mtime_ns == entry.mtime_ns
        if same_file and state is not None:
            done = state.status == "ok" and state.content_hash in known
            known_bad = state.status == "error" and not retry_errors
            if done or known_bad:
                unchanged += 1
                continue
        work.append(entry)
    missing = [p for p, s in snapshot.items() if p not in seen_paths and s.status != "missing"]
    return work, seen, unchanged, missing


class Pipeline:
    """Classifies files into a catalog with one engine. Reusable across runs (the web UI keeps one)."""

    def __init__(
        self,
        engine: OrtEngine,
        catalog: Catalog,
        categorizer: Categorizer | None = None,
        people: Callable[[], PeopleDetector] | None = None,
        options: ClassifyOptions | None = None,
    ) -> None:
        self.engine = engine
        self.catalog = catalog
        self.categorizer = categorizer
        self.options = options or ClassifyOptions()
        self._people_factory = people
        self._people_local = threading.local()
        card = engine.card
        self.pre = card.preprocess
        self.labels = card.labels
        self.model_sha = engine.model.sha256
        catalog.register_model(self.model_sha, engine.model.name, card.labels, str(engine.model.path))
        self.gpu_decoder: imaging.GpuJpegDecoder | None = None
        self.gpu_decode_note = ""
        if self.options.gpu_decode:
            self.gpu_decoder, self.gpu_decode_note = imaging.GpuJpegDecoder.create()
            if self.gpu_decode_note:
                logging.getLogger("photosift").warning(self.gpu_decode_note)

    # -- loader side (runs in worker threads) ----------------------------------------------------------------
    def _detector(self) -> PeopleDetector | None:
        if self._people_factory is None:
            return None
        det = getattr(self._people_local, "detector", None)
        if det is None:
            det = self._people_factory()
            self._people_local.detector = det
        return det

    def _load(self, entry: scanner.FileEntry, known: set[str]) -> _Loaded:
        try:
            data = imaging.read_bytes(entry.path)
            digest = hashlib.sha256(data).hexdigest()
            if digest in known:
                return _Loaded(entry, digest, reuse=True)
            detector = self._detector()
            if self.gpu_decoder is not None and detector is None:
                return _Loaded(entry, digest, tensor=self.gpu_decoder.load_tensor(data, entry.path, self.pre))
            image = imaging.decode(data, entry.path, min_side=self.pre.resize_size)
            tensor = imaging.to_tensor(image, self.pre)
            people = detector.detect(image) if detector is not None else None
            return _Loaded(entry, digest, tensor=tensor, people=people)
        except UnreadableImage as exc:
            return _Loaded(entry, error=exc.reason)

    # -- main thread ---------------------------------------------------------------------------------------------
    def run(
        self,
        paths: Sequence[str],
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> RunSummary:
        opts = self.options
        cancel = cancel or threading.Event()
        started = time.perf_counter()
        summary = RunSummary(provider=self.engine.provider, model=self.engine.model.name)
        roots = [os.path.abspath(os.path.expanduser(p)) for p in paths]
        if on_progress:
            on_progress(Progress("scan"))
        known = self.catalog.hashes_with_results(self.model_sha)
        work, summary.seen, summary.unchanged, missing = plan(
            scanner.walk(roots, opts.include_hidden), self.catalog, roots, known, opts.retry_errors
        )
        if missing:
            summary.missing = self.catalog.mark_missing(missing)
        progress = Progress("classify", files_total=len(work))
        if on_progress:
            on_progress(progress)

        depth = opts.queue_depth or max(2 * opts.batch_size, 4 * opts.workers)
        batch: list[_Loaded] = []
        pending_photos: list[PhotoRecord] = []
        pending_results: list[ResultRecord] = []
        classify_start = time.perf_counter()

        def commit() -> None:
            if pending_photos or pending_results:
                self.catalog.write_batch(pending_photos, pending_results, self.model_sha, self.labels)
                for r in pending_results:
                    known.add(r.content_hash)
                pending_photos.clear()
                pending_results.clear()

        def run_batch() -> None:
            if not batch:
                return
            tensors = np.stack([item.tensor for item in batch])  # type: ignore[misc]
            logits, embedding = self.engine.run(tensors)
            probs = softmax(logits.astype(np.float32, copy=False))
            cats: Sequence[CategoryLike | None] = (
                self.categorizer.categorize(probs, [item.people for item in batch], embedding)
                if self.categorizer
                else [None] * len(batch)
            )
            for i, item in enumerate(batch):
                assert item.content_hash is not None
                cat = cats[i]
                pending_results.append(
                    ResultRecord(
                        content_hash=item.content_hash,
                        probs=probs[i],
                        embedding=embedding[i] if embedding is not None else None,
                        category=cat.category if cat else None,
                        category_score=float(cat.score) if cat else None,
                        fine_label=cat.fine if cat else None,
                        people=item.people.to_dict() if hasattr(item.people, "to_dict") else None,
                    )
                )
                pending_photos.append(
                    PhotoRecord(item.entry.path, item.entry.size, item.entry.mtime_ns, item.content_hash)
                )
                if cat:
                    summary.categories[cat.category] += 1
            summary.classified += len(batch)
            batch.clear()
            commit()

        def handle(item: _Loaded) -> None:
            progress.files_done += 1
            entry = item.entry
            if item.error is not None:
                summary.errors += 1
                summary.error_files.append((entry.path, item.error))
                pending_photos.append(PhotoRecord(entry.path, entry.size, entry.mtime_ns, None, item.error))
            elif item.reuse:
                summary.reused += 1
                pending_photos.append(PhotoRecord(entry.path, entry.size, entry.mtime_ns, item.content_hash))
            else:
                batch.append(item)
                if len(batch) >= opts.batch_size:
                    run_batch()
            if len(pending_photos) >= opts.commit_every:
                commit()

        def report() -> None:
            if on_progress:
                progress.classified, progress.reused, progress.errors = (
                    summary.classified,
                    summary.reused,
                    summary.errors,
                )
                progress.elapsed = time.perf_counter() - classify_start
                progress.photos_per_s = (
                    progress.files_done / progress.elapsed if progress.elapsed > 0 else 0.0
                )
                on_progress(progress)

        work_iter = iter(work)
        exhausted = False
        in_flight: set[Future[_Loaded]] = set()
        pool = ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="photosift-load")
        try:
            while True:
                while not cancel.is_set() and not exhausted and len(in_flight) < depth:
                    entry = next(work_iter, None)
                    if entry is None:
                        exhausted = True
                        break
                    in_flight.add(pool.submit(self._load, entry, known))
                if not in_flight:
                    break
                done, in_flight = wait(in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    handle(fut.result())
                if exhausted and batch and len(in_flight) <= opts.workers:
                    # The tail: only the last files are decoding, so cores are about to idle. Classify what
                    # is ready now, overlapped with those decodes, instead of one last full batch after them
                    # with the decoders idle (measured: several % of a 72-photo run).
                    run_batch()
                if done:
                    report()
                if cancel.is_set():
                    break
            # Also on a cancel: what is already decoded costs one short inference, cheaper than decoding again.
            run_batch()
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, drop the batch in flight
            cancel.set()
            batch.clear()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if cancel.is_set():
                summary.cancelled = True
                pending_photos[:] = [p for p in pending_photos if p.error or p.content_hash in known]
            commit()
        summary.classify_elapsed = time.perf_counter() - classify_start
        summary.elapsed = time.perf_counter() - started
        if on_progress:
            progress.phase = "done"
            report()
        return summary
