"""The driver: scan and plan, then run the stages on an executor and commit through the sink.

```
paths ─► scan + plan ─► executor (load ─► infer ─► postprocess) ─► sink ─► catalog
```

The plan diffs the scanned files against the catalog, so a rerun only looks at new or changed files. The executor
(:mod:`photosift.run.executors`; threads by default) decides where the stages (:mod:`photosift.run.stages`) run;
the sink (:mod:`photosift.run.sink`) is the only writer and commits each batch atomically: Ctrl-C, a cancel from
the web gallery, or a SIGKILL loses at most the batch in flight.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from photosift.core import imaging, scanner
from photosift.core.catalog import Catalog
from photosift.run.executors import Executor, ThreadExecutor
from photosift.run.sink import CatalogSink
from photosift.run.stages import Categorizer, Engine, PeopleDetector, Processed, Stages


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
    max_file_bytes: int = imaging.DEFAULT_MAX_FILE_BYTES  # larger files are refused unread
    decode_memory: int = imaging.DEFAULT_DECODE_MEMORY  # file bytes + decode peaks in flight, all workers


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

    def update(self, summary: RunSummary, files: int, elapsed: float) -> None:
        self.files_done += files
        self.classified, self.reused, self.errors = summary.classified, summary.reused, summary.errors
        self.elapsed = elapsed
        self.photos_per_s = self.files_done / elapsed if elapsed > 0 else 0.0


@dataclass
class RunSummary:
    seen: int = 0  # image files found under the paths
    planned: int = 0  # of those, new or changed: the files the run set out to read
    done: int = 0  # of the planned files, those whose outcome is stored (all of them unless stopped)
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
    notes: list[str] = field(default_factory=list)
    refreshed: set[str] = field(default_factory=set)  # unchanged files revisited to read their metadata

    @property
    def photos_per_s(self) -> float:
        return self.classified / self.classify_elapsed if self.classify_elapsed > 0 else 0.0

    def outcome(self) -> str:
        """One honest line about the planned work: all of it, or how far a stopped run got."""
        what = f"{self.classified} classified, {self.reused} reused, {self.errors} unreadable"
        if self.cancelled:
            return f"stopped after {self.done} of {self.planned} files ({what}); committed work is kept"
        return f"{self.seen} files seen, {self.unchanged} unchanged, {what}"

    def count(self, items: Iterable[Processed]) -> None:
        for item in items:
            self.done += 1
            if item.photo.error is not None:
                self.errors += 1
                self.error_files.append((item.photo.path, item.photo.error))
            elif item.result is None and item.photo.path in self.refreshed:
                self.unchanged += 1  # same file, metadata read for the first time
            elif item.result is None:
                self.reused += 1
            else:
                self.classified += 1
                if item.category is not None:
                    self.categories[item.category] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "planned": self.planned,
            "done": self.done,
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
            "error_files": [_error_file(p, e) for p, e in self.error_files],
            "notes": self.notes,
        }


def _error_file(path: str, error: str) -> dict[str, Any]:
    shown, exact = scanner.path_text(path)
    return {"path": shown, "path_b64": exact, "error": error}


def plan(
    entries: Iterable[scanner.FileEntry],
    catalog: Catalog,
    roots: Sequence[str],
    known: set[str],
    retry_errors: bool,
    refresh: set[str] | None = None,
) -> tuple[list[scanner.FileEntry], int, int, list[str]]:
    """Split the scanned files into work and unchanged ones; returns (work, seen, unchanged, missing paths).

    ``refresh`` collects the unchanged files that go to work only to have their metadata read."""
    refresh = refresh if refresh is not None else set()
    snapshot = catalog.snapshot(roots)
    work: list[scanner.FileEntry] = []
    seen = unchanged = 0
    for entry in entries:
        seen += 1
        # Popped, not looked up: what is left afterwards was not seen (no second set of a million paths).
        state = snapshot.pop(entry.path, None)
        same_file = state is not None and state.size == entry.size and state.mtime_ns == entry.mtime_ns
        if same_file and state is not None:
            done = state.status == "ok" and state.content_hash in known
            known_bad = state.status == "error" and not retry_errors
            if (done and state.has_meta) or known_bad:
                unchanged += 1
                continue
            if done:  # classified before dates and hashes were stored: read its header, no inference
                refresh.add(entry.path)
        work.append(entry)
    missing = [p for p, s in snapshot.items() if s.status != "missing"]
    return work, seen, unchanged, missing


class Pipeline:
    """Classifies files into a catalog with one engine. Reusable across runs (the web gallery keeps one)."""

    def __init__(
        self,
        engine: Engine,
        catalog: Catalog,
        categorizer: Categorizer | None = None,
        people: Callable[[], PeopleDetector] | None = None,
        options: ClassifyOptions | None = None,
        executor: Executor | None = None,
        model_sha256: str = "",
        model_name: str = "",
        model_path: str | None = None,
    ) -> None:
        """``model_*`` identify the model in the catalog; an :class:`~photosift.models.session.OrtEngine`
        carries them (``engine.model``), so only other engines need to pass them."""
        self.engine = engine
        self.catalog = catalog
        self.options = options or ClassifyOptions()
        self.executor: Executor = executor or ThreadExecutor(
            self.options.workers, self.options.batch_size, self.options.queue_depth
        )
        model: Any = getattr(engine, "model", None)
        self.model_sha = model_sha256 or model.sha256
        self.model_name = model_name or model.name
        card = engine.card
        self.labels = card.labels
        catalog.register_model(
            self.model_sha,
            self.model_name,
            card.labels,
            model_path or (str(model.path) if model is not None else None),
            task=card.task,
            card=card.to_json(),
        )
        gpu_decoder: imaging.GpuJpegDecoder | None = None
        self.gpu_decode_note = ""
        if self.options.gpu_decode:
            gpu_decoder, self.gpu_decode_note = imaging.GpuJpegDecoder.create()
            if self.gpu_decode_note:
                logging.getLogger("photosift").warning(self.gpu_decode_note)
        budget = imaging.MemoryBudget(self.options.decode_memory)
        self.stages = Stages(engine, categorizer, people, gpu_decoder, budget, self.options.max_file_bytes)
        self.notes: list[str] = []  # what the run should tell the user (a detector that could not start, ...)

    def run(
        self,
        paths: Sequence[str],
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> RunSummary:
        opts = self.options
        cancel = cancel or threading.Event()
        started = time.perf_counter()
        summary = RunSummary(provider=self.engine.provider, model=self.model_name, notes=list(self.notes))
        roots = [os.path.abspath(os.path.expanduser(p)) for p in paths]
        if on_progress:
            on_progress(Progress("scan"))
        categorizer = self.stages.categorizer
        if categorizer is not None:
            categorizer.before_run(self.catalog, self.model_sha)
        known = self.catalog.hashes_with_results(self.model_sha)
        work, summary.seen, summary.unchanged, missing = plan(
            scanner.walk(roots, opts.include_hidden),
            self.catalog,
            roots,
            known,
            opts.retry_errors,
            summary.refreshed,
        )
        summary.planned = len(work)
        if missing:
            summary.missing = self.catalog.mark_missing(missing)
        progress = Progress("classify", files_total=len(work))
        if on_progress:
            on_progress(progress)

        sink = CatalogSink(self.catalog, self.model_sha, self.labels, known, opts.commit_every)
        classify_start = time.perf_counter()
        chunks = self.executor.run(work, self.stages, known, cancel)
        try:
            for chunk in chunks:
                sink.add(chunk)
                summary.count(chunk)
                progress.update(summary, len(chunk), time.perf_counter() - classify_start)
                if on_progress:
                    on_progress(progress)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, drop the batch in flight
            cancel.set()
        finally:
            chunks.close()  # type: ignore[attr-defined]
            summary.cancelled = cancel.is_set()
            sink.close(cancelled=summary.cancelled)
        if categorizer is not None:
            categorizer.after_run(self.catalog, self.model_sha)
        summary.classify_elapsed = time.perf_counter() - classify_start
        summary.elapsed = time.perf_counter() - started
        if on_progress:
            progress.phase = "done"
            progress.update(summary, 0, summary.classify_elapsed)
            on_progress(progress)
        return summary
