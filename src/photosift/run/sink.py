"""The sink: the only writer. It commits processed records to the catalog in atomic batches.

Every inference batch is committed in one transaction together with the rows of unreadable and known files
that came before it; those alone are committed at least every ``commit_every`` files. A kill therefore loses at
most the batch in flight, and a rerun finishes the job with no duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence

from photosift.core.catalog import Catalog, PhotoRecord, ResultRecord
from photosift.run.stages import Processed


class CatalogSink:
    def __init__(
        self,
        catalog: Catalog,
        model_sha256: str,
        labels: Sequence[str],
        known: set[str],
        commit_every: int = 256,
    ) -> None:
        """``known``: the content hashes with results from this model; committed results are added to it, so
        a copy of a photo met later in the same run reuses the result instead of running the model again."""
        self.catalog = catalog
        self.model_sha256 = model_sha256
        self.labels = labels
        self.known = known
        self.commit_every = commit_every
        self._photos: list[PhotoRecord] = []
        self._results: list[ResultRecord] = []

    def add(self, items: Sequence[Processed]) -> None:
        for item in items:
            self._photos.append(item.photo)
            if item.result is not None:
                self._results.append(item.result)
        if self._results or len(self._photos) >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        if self._photos or self._results:
            self.catalog.write_batch(self._photos, self._results, self.model_sha256, self.labels)
            self.known.update(r.content_hash for r in self._results)
            self._photos.clear()
            self._results.clear()

    def close(self, cancelled: bool = False) -> None:
        """Commit what is pending. After a cancel, a photo row whose result was never stored is dropped: the
        next run picks the file up again."""
        if cancelled:
            self._photos[:] = [p for p in self._photos if p.error or p.content_hash in self.known]
        self.commit()
