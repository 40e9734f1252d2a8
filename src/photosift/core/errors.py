"""The typed errors photosift raises.

Library code raises these; only the CLI and the web app turn them into exit codes or HTTP statuses.
Every message is one line that names the thing at fault and the reason.
"""

from __future__ import annotations

from pathlib import Path


class PhotosiftError(Exception):
    """Base class of every error photosift raises on purpose."""


class UnreadableImage(PhotosiftError):
    """A file could not be decoded as an image (truncated, not an image, too large, …)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelError(PhotosiftError):
    """A model is missing, corrupt, or does not match its model card."""


class ProviderError(PhotosiftError):
    """No requested execution provider could run the model."""


class CatalogError(PhotosiftError):
    """The catalog cannot be opened, migrated or written."""


class CatalogReadOnly(CatalogError):
    """The catalog (or its folder) cannot be written; it can still be read."""


class NothingToUndo(CatalogError):
    """A photo has no correction left to undo (or the one named was undone already)."""


class CatalogBusy(CatalogError):
    """Another process holds the catalog's write lock for longer than the busy timeout."""


class RulesError(PhotosiftError):
    """A category rules file is malformed."""


class UnknownCategory(PhotosiftError):
    """A category name that is neither built in nor created by the user."""


class ToolchainError(PhotosiftError):
    """Export, optimization, quantization or evaluation failed (parity, bad input, missing extra)."""


class ClusterError(PhotosiftError):
    """The cluster engine cannot run: Ray missing (the cluster extra), the cluster unreachable, a job failed."""
