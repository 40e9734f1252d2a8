"""Re-deriving stale categories in the background, for the gallery.

Every stored category carries the fingerprint of the rules and heads that decided it. When the gallery starts
with other rules than the catalog's categories were decided by (an edited rules file, a new photosift), the
stale ones are re-derived here — in a thread with its own catalog connection, in chunks, each one transaction —
while the pages keep serving (stale photos show their old category until their chunk is done). Every page shows
the progress; ``GET /api/recategorize`` reports it as JSON.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any

from photosift import services
from photosift.core.config import Settings
from photosift.core.errors import PhotosiftError

log = logging.getLogger("photosift")


@dataclass
class RederiveState:
    """``state``: idle | running | done | failed."""

    state: str = "idle"
    done: int = 0
    total: int = 0
    changed: int = 0
    message: str = ""

    @property
    def active(self) -> bool:
        return self.state == "running"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active}


class RederiveJob:
    """One background re-derivation at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._state = RederiveState()
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> RederiveState:
        with self._lock:
            return RederiveState(**asdict(self._state))

    def start(self) -> bool:
        """Re-derive whatever is stale, in the background; False when a run is going on already."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._cancel.clear()
            self._thread = threading.Thread(target=self._run, name="photosift-recategorize", daemon=True)
            self._thread.start()
            return True

    def shutdown(self) -> None:
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _update(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._state, key, value)

    def _run(self) -> None:
        if not self.settings.db_path.is_file():
            return
        try:
            with services.open_catalog(self.settings, create=False) as catalog:
                stale = services.stale_results(self.settings, catalog, exact_only=True)
                if stale == 0:
                    return
                self._update(state="running", done=0, total=stale, changed=0, message="")
                report = services.recategorize(
                    self.settings,
                    only_stale=True,
                    exact_only=True,
                    on_progress=lambda done, total: self._update(done=done, total=total),
                    cancel=self._cancel,
                    catalog=catalog,
                )
            self._update(state="done", changed=report.changed, message=f"{report.changed} photos changed")
        except PhotosiftError as exc:
            log.warning("recategorize in the background failed: %s", exc)
            self._update(state="failed", message=str(exc))
