"""What the catalog stores and returns, as plain values: a file's state, a photo with its metadata, one model
result, a model, one row of results as the CLI and gallery show it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from photosift.core.corrections import PersonalDecision
from photosift.core.photometa import PhotoMeta
from photosift.core.scanner import path_text


@dataclass(frozen=True, slots=True)
class PhotoState:
    size: int
    mtime_ns: int
    content_hash: str | None
    status: str
    has_meta: bool = True  # date, size and hash read (False: the next run reads the header, no inference)


@dataclass(slots=True)
class PhotoRecord:
    """One file's outcome in a batch."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    error: str | None = None
    meta: PhotoMeta | None = None


@dataclass(slots=True)
class ResultRecord:
    """A model's output for one photo: ``probs`` for a classifier, ``embedding`` when the model gives one."""

    content_hash: str
    probs: np.ndarray | None  # (C,) softmax (classify)
    embedding: np.ndarray | None
    category: str | None
    category_score: float | None
    fine_label: str | None = None
    people: dict[str, Any] | None = None  # PeopleSignal.to_dict(): recategorize needs it
    decided_by: str | None = None  # fingerprint of the rules and heads that decided ``category``
    personal: PersonalDecision | None = None  # the personal head's decision, when it did not abstain


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model that has results in this catalog."""

    sha256: str
    name: str
    path: str | None
    task: str
    labels: tuple[str, ...]


@dataclass
class ResultRow:
    """One photo as ``photosift results`` shows it."""

    id: int
    path: str
    status: str
    error: str | None
    label: str | None
    score: float | None
    category: str | None
    category_score: float | None
    top5: list[dict[str, Any]]
    model: str | None
    corrected_category: str | None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    taken_at: str | None = None  # ISO local time: EXIF DateTimeOriginal, or the file's mtime (taken_source)
    taken_source: str | None = None  # "exif" | "mtime"
    camera: str | None = None
    has_gps: bool | None = None
    hidden: bool = False
    content_hash: str | None = None
    rules_category: str | None = None  # what the rules said (``category`` is the head's when it spoke)
    personal_source: str | None = None  # content hash of the corrected photo the personal head followed

    @property
    def effective_category(self) -> str | None:
        return self.corrected_category or self.category

    def to_dict(self) -> dict[str, Any]:
        """For JSON and CSV: ``path`` is valid text; ``path_b64`` (None for any UTF-8 name) the exact bytes."""
        shown, exact = path_text(self.path)
        return {
            "path": shown,
            "path_b64": exact,
            "status": self.status,
            "error": self.error,
            "label": self.label,
            "score": self.score,
            "category": self.category,
            "category_score": self.category_score,
            "top5": self.top5,
            "model": self.model,
            "corrected_category": self.corrected_category,
            "taken_at": self.taken_at,
            "taken_source": self.taken_source,
            "camera": self.camera,
            "has_gps": self.has_gps,
        }
