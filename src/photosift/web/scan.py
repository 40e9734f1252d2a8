"""One background scan at a time for the web gallery, off the event loop.

A scan runs in its own thread with its own :class:`Catalog` connection (SQLite connections belong to one
thread at a time) and reports through :class:`ScanManager.snapshot`, which the server-sent-events endpoint
polls. The pipeline, and with it the ONNX Runtime engine, is built on the first scan and kept: building an
engine costs a second or more and a few hundred MB, which nobody should pay just for browsing.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from photosift.core.catalog import Catalog
from photosift.core.config import Settings
from photosift.core.errors import PhotosiftError
from photosift.run.driver import Pipeline, Progress

PipelineFactory = Callable[[Settings, Catalog], Pipeline]


def default_pipeline_factory(settings: Settings, catalog: Catalog) -> Pipeline:
    from photosift.services import build_pipeline  # imports onnxruntime: only when the first scan starts

    return build_pipeline(settings, catalog=catalog)


class ScanError(PhotosiftError):
    """A scan cannot start: one is running already, or the folder is not usable."""


@dataclass
class ScanState:
    """What the scan page shows. ``state``: idle | starting | running | stopping | done | stopped | failed."""

    state: str = "idle"
    folder: str = ""
    phase: str = ""
    files_total: int = 0
    files_done: int = 0
    classified: int = 0
    reused: int = 0
    errors: int = 0
    photos_per_s: float = 0.0
    eta_s: float | None = None
    elapsed_s: float = 0.0
    message: str = ""
    version: int = 0  # bumped on every change, so pollers send only news

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running", "stopping")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["active"] = self.active
        return d


class ScanManager:
    """Starts, reports on and stops the one scan the web app may run at a time."""

    def __init__(self, settings: Settings, pipeline_factory: PipelineFactory | None = None) -> None:
        self.settings = settings
        self._factory = pipeline_factory or default_pipeline_factory
        self._lock = threading.Lock()
        self._state = ScanState()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._pipeline: Pipeline | None = None
        self._started = 0.0
        self._errors: dict[str, str] = {}  # code -> a message this server made (for /scan?error=CODE)

    # -- called from request handlers ---------------------------------------------------------------------
    def snapshot(self) -> ScanState:
        with self._lock:
            return ScanState(**asdict(self._state))

    def start(self, folder: str) -> ScanState:
        path = _usable_folder(folder)
        with self._lock:
            if self._state.active:
                raise ScanError(f"a scan of {self._state.folder} is already running; stop it first")
            self._cancel = threading.Event()
            self._started = time.monotonic()
            self._state = ScanState(
                state="starting",
                folder=path,
                phase="scan",
                message="loading the model" if self._pipeline is None else "",
                version=self._state.version + 1,
            )
            self._thread = threading.Thread(
                target=self._run, args=(path, self._cancel), name="photosift-web-scan", daemon=True
            )
            self._thread.start()
            return ScanState(**asdict(self._state))

    def remember_error(self, message: str) -> str:
        """A code for ``message``, so a redirect can name it without carrying text a link could forge."""
        code = secrets.token_urlsafe(8)
        with self._lock:
            self._errors[code] = message
            while len(self._errors) > 32:
                del self._errors[next(iter(self._errors))]
        return code

    def error_message(self, code: str) -> str:
        with self._lock:
            return self._errors.get(code, "")

    def stop(self) -> bool:
        """Ask the running scan to stop after the batch in flight; False when none runs."""
        with self._lock:
            if not self._state.active:
                return False
            self._cancel.set()
            self._update(state="stopping", message="stopping after the batch in flight")
            return True

    def shutdown(self, timeout: float = 15.0) -> None:
        self._cancel.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        if self._pipeline is not None:
            self._pipeline.catalog.close()

    # -- the scan thread ------------------------------------------------------------------------------------
    def _update(self, **changes: Any) -> None:
        # Caller holds self._lock.
        for key, value in changes.items():
            setattr(self._state, key, value)
        self._state.elapsed_s = round(time.monotonic() - self._started, 2)
        self._state.version += 1

    def _on_progress(self, p: Progress) -> None:
        with self._lock:
            stopping = self._cancel.is_set()
            self._update(
                state="stopping" if stopping else "running",
                phase=p.phase,
                files_total=p.files_total,
                files_done=p.files_done,
                classified=p.classified,
                reused=p.reused,
                errors=p.errors,
                photos_per_s=round(p.photos_per_s, 2),
                eta_s=None if p.eta_s is None else round(p.eta_s, 1),
                message=self._state.message if stopping else "",
            )

    def _run(self, folder: str, cancel: threading.Event) -> None:
        try:
            if self._pipeline is None:
                # Its own connection, used only by the scan threads, one after the other.
                catalog = Catalog(self.settings.db_path)
                try:
                    self._pipeline = self._factory(self.settings, catalog)
                except BaseException:
                    catalog.close()
                    raise
            summary = self._pipeline.run([folder], on_progress=self._on_progress, cancel=cancel)
        except PhotosiftError as exc:
            with self._lock:
                self._update(state="failed", message=str(exc), eta_s=None)
            return
        except Exception as exc:  # the thread must always report; the page shows the reason
            with self._lock:
                self._update(state="failed", message=f"{type(exc).__name__}: {exc}", eta_s=None)
            return
        with self._lock:
            self._update(
                state="stopped" if summary.cancelled else "done",
                phase="done",
                eta_s=None,
                message=summary.outcome(),
            )


def _usable_folder(folder: str) -> str:
    folder = folder.strip()
    if not folder:
        raise ScanError("enter the path of a folder on this machine")
    if "\x00" in folder:
        raise ScanError("that is not a valid path")
    path = os.path.abspath(os.path.expanduser(folder))
    if not Path(path).exists():
        raise ScanError(f"{path}: no such file or directory")
    if not os.access(path, os.R_OK):
        raise ScanError(f"{path}: permission denied")
    return path
