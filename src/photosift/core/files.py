"""Writing a file so that no reader ever sees half of it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_replacing(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary name unique to this process and thread beside
    it, then rename it over ``path``: a concurrent reader (another process, another thread) sees the old file or
    the new one, never a part. On an error the temporary file is removed and the OSError raised."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
