"""When a catalog needs its full damage check at open, and the record that spares it.

``PRAGMA quick_check`` reads every page of the file: 0.43–0.58 s for a 100,000-photo catalog with embeddings
(612 MB), ~4 s at a million, in every command. So a photosift writer that checked the file (or found it
checked) and closes it cleanly records the file's state beside it, in ``<catalog>-checked``: device, inode, size
and mtime of the file and of a non-empty WAL, and when it was last checked in full. The next open checks again
only when the file is not in that state — another program wrote it, a process was killed mid-write, it was
copied or restored — or when the full check is older than :data:`CHECK_EVERY_S`.

Damage that changes no file metadata (a failing disk) is met by SQLite's own checks when a damaged page is read
(a one-line "catalog error … photosift doctor" at the edges, never a write into it) and by the next weekly
check; ``photosift doctor`` always checks everything.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import suppress
from pathlib import Path

from photosift.core.files import write_replacing

CHECK_EVERY_S = 7 * 24 * 3600.0  # a catalog is checked in full at least this often, even when unchanged


def record_path(catalog: Path) -> Path:
    """Where the state of ``catalog`` at its last check is recorded."""
    return catalog.with_name(catalog.name + "-checked")


def file_state(catalog: Path) -> list[int] | None:
    """What identifies the catalog's bytes without reading them (None: cannot tell)."""
    try:
        st = os.stat(catalog)
    except OSError:
        return None
    state = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
    try:
        wal = os.stat(f"{catalog}-wal")
    except FileNotFoundError:
        return [*state, 0, 0]
    except OSError:
        return None
    # An empty WAL is no WAL (opening a connection creates one); what a writer left in it counts.
    return [*state, *([wal.st_size, wal.st_mtime_ns] if wal.st_size else [0, 0])]


def checked_at(catalog: Path) -> float | None:
    """When the catalog, in the state it is in now, was last checked in full; None: check it now."""
    try:
        stamp = json.loads(record_path(catalog).read_text())
        at = float(stamp["at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    current = file_state(catalog)
    if current is None or stamp.get("state") != current or not 0 <= time.time() - at < CHECK_EVERY_S:
        return None
    return at


def record(catalog: Path, at: float) -> None:
    """Record the catalog's state now as checked in full at ``at`` (a folder we cannot write: no record, the
    next open checks in full)."""
    state = file_state(catalog)
    if state is None:
        return
    with suppress(OSError):
        write_replacing(
            record_path(catalog), lambda f: f.write(json.dumps({"state": state, "at": at}).encode())
        )
