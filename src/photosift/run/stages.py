"""The stages every executor runs on work items: load -> infer -> postprocess.

Each stage is a function of its inputs and of what it was built with (the model card's preprocessing, the
engine, the task handler, the album classifier), so an executor may run it wherever it likes: decode threads
today, Ray actors on a cluster. Nothing here touches the catalog; the sink is the only writer.

* :meth:`Stages.load` reads a file, hashes it, and — unless the content is already known — decodes and
  preprocesses it as the card says (and, when album categories want faces, keeps the decoded image shrunk to
  the face detector's work size). Unreadable files become error items, never exceptions. The size and mtime
  stored with the content are those of the open file that was hashed, not the scan's earlier stat of the path.
  Reading and decoding hold a reservation in the process's decode :class:`~photosift.core.imaging.MemoryBudget`.
* :meth:`Stages.infer` runs the engine on a batch of loaded items, at most :data:`ENGINE_BATCH` at a time (ONNX
  Runtime holds ~8.5 MB of activations per photo in a run of EfficientNet-Lite0), and applies the task's output
  handler.
* :meth:`Stages.postprocess` turns a batch and its outputs into the records the sink commits; it runs the face
  detector on the photos whose classifier result leaves faces worth looking for and whose embedding passes the
  face gate (``PeopleDetector.to_search`` over ``Categorizer.might_show_faces``, album/facegate.py), so a photo
  the classifier is sure shows an animal or a plant, or one the gate finds no face evidence in, does not pay
  for face detection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from photosift.core import imaging, photometa, scanner
from photosift.core.catalog import Catalog, PersonalDecision, PhotoRecord, ResultRecord
from photosift.core.errors import UnreadableImage
from photosift.models.card import ModelCard
from photosift.models.tasks import TaskHandler, TaskOutputs, handler_for

ENGINE_BATCH = 16  # photos per engine run: more is no faster on a CPU, and its memory grows with the run


class Engine(Protocol):
    """Runs a carded model on (N, 3, S, S) float32 batches; returns its outputs by role (logits, embedding)."""

    card: ModelCard

    @property
    def provider(self) -> str: ...

    def run(self, batch: Any) -> dict[str, np.ndarray]: ...


class CategoryLike(Protocol):
    """The rules' category (``category``, ``score``, ``fine``), the personal head's decision, what is shown."""

    @property
    def category(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def fine(self) -> str | None: ...
    @property
    def personal(self) -> PersonalDecision | None: ...
    @property
    def shown(self) -> str: ...


class Categorizer(Protocol):
    """Album categories from the softmax, the face signals and the embeddings (album.AlbumClassifier).

    ``fingerprint`` is stored with each result (a result decided under another one is stale); the driver calls
    ``before_run`` and ``after_run`` with its catalog and model (the classifier takes in corrections made
    meanwhile)."""

    @property
    def fingerprint(self) -> str: ...

    def categorize(
        self,
        probs: np.ndarray,
        people: Sequence[Any] | None = None,
        embeddings: np.ndarray | None = None,
        hashes: Sequence[str] | None = None,
    ) -> Sequence[CategoryLike]: ...

    def might_show_faces(self, embeddings: np.ndarray | None) -> np.ndarray | None: ...

    def before_run(self, catalog: Catalog, model_sha256: str) -> None: ...

    def after_run(self, catalog: Catalog, model_sha256: str) -> None: ...


class PeopleDetector(Protocol):
    def held_image(self, image: Any) -> Any: ...
    def to_search(self, decided: Sequence[Any], possible: np.ndarray | None) -> list[bool]: ...
    def detect(self, image: Any) -> Any: ...


@dataclass(slots=True)
class Loaded:
    """A work item after :meth:`Stages.load`: an error, known content (``reuse``), or a tensor to infer.
    ``entry`` carries the size and mtime of the file that was read (its fstat); ``face_image``: the decoded photo
    as the face detector holds it (``PeopleDetector.held_image``), kept for :meth:`Stages.postprocess`; ``people``: its face signal once looked
    for (None: not looked)."""

    entry: scanner.FileEntry
    content_hash: str | None = None
    tensor: np.ndarray | None = None
    people: Any = None
    error: str | None = None
    reuse: bool = False
    face_image: Any = None
    meta: photometa.PhotoMeta | None = None


@dataclass(slots=True)
class Processed:
    """What the sink stores for one file: its photo row, and the model's result when it was inferred."""

    photo: PhotoRecord
    result: ResultRecord | None = None
    category: str | None = None


class Stages:
    """load, infer and postprocess for one model; safe to call ``load`` from many threads at once."""

    def __init__(
        self,
        engine: Engine,
        categorizer: Categorizer | None = None,
        people: Callable[[], PeopleDetector] | None = None,
        gpu_decoder: imaging.GpuJpegDecoder | None = None,
        budget: imaging.MemoryBudget | None = None,
        max_file_bytes: int = imaging.DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        """``budget``: the decode memory shared by every load (default: a budget of its own)."""
        self.engine = engine
        self.budget = budget or imaging.MemoryBudget(imaging.DEFAULT_DECODE_MEMORY)
        self.max_file_bytes = max_file_bytes
        self.card: ModelCard = engine.card
        self.pre = self.card.preprocess
        self.handler: TaskHandler = handler_for(self.card)
        self.categorizer = categorizer
        self.gpu_decoder = gpu_decoder
        self._people_factory = people
        self._people_local = threading.local()

    def _detector(self) -> PeopleDetector | None:
        if self._people_factory is None:
            return None
        det = getattr(self._people_local, "detector", None)
        if det is None:
            det = self._people_factory()
            self._people_local.detector = det
        return det

    def load(self, entry: scanner.FileEntry, known: Container[str]) -> Loaded:
        """Read, hash and (for content not in ``known``) decode and preprocess one file.

        Every readable file also gets its header metadata (date, camera, GPS, size: no pixels decoded) and a
        perceptual hash of the image decoded for the model; known content is decoded only at 1/8 scale for
        the hash (a moved file, or a catalog from before dates were stored)."""
        try:
            with imaging.read_for_decode(
                entry.path, self.budget, self.pre.resize_size, self.max_file_bytes
            ) as f:
                # What is stored is what was read: the fstat of the file hashed, not the scan's stat.
                entry = dataclasses.replace(entry, size=f.size, mtime_ns=f.mtime_ns)
                data = f.data
                digest = hashlib.sha256(data).hexdigest()
                meta = photometa.read_header(data, entry.mtime_ns)
                if digest in known:
                    return Loaded(entry, digest, reuse=True, meta=_with_small_phash(meta, data, entry.path))
                detector = self._detector()
                if self.gpu_decoder is not None and detector is None:
                    tensor = self.gpu_decoder.load_tensor(data, entry.path, self.pre)
                    return Loaded(
                        entry, digest, tensor=tensor, meta=_with_small_phash(meta, data, entry.path)
                    )
                image = imaging.decode(data, entry.path, min_side=self.pre.resize_size)
                tensor = imaging.to_tensor(image, self.pre)
                face_image = detector.held_image(image) if detector is not None else None
                return Loaded(
                    entry, digest, tensor=tensor, face_image=face_image, meta=meta.with_phash(image)
                )
        except UnreadableImage as exc:
            return Loaded(entry, error=exc.reason)

    def infer(self, batch: Sequence[Loaded]) -> TaskOutputs:
        runs = [
            self.engine.run(np.stack([item.tensor for item in batch[i : i + ENGINE_BATCH]]))  # type: ignore[misc]
            for i in range(0, len(batch), ENGINE_BATCH)
        ]
        raw = runs[0] if len(runs) == 1 else {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}
        return self.handler.postprocess(raw)

    def postprocess(self, batch: Sequence[Loaded], outputs: TaskOutputs) -> list[Processed]:
        """Records for an inferred batch: album categories (classifiers) and the result rows."""
        cats: Sequence[CategoryLike | None] = [None] * len(batch)
        decided_by = None
        if self.categorizer is not None and outputs.probs is not None:
            hashes = [i.content_hash or "" for i in batch]
            people = [i.people for i in batch]
            cats = self.categorizer.categorize(outputs.probs, people, outputs.embeddings, hashes)
            if self._look_for_faces(batch, cats, outputs.embeddings):
                people = [i.people for i in batch]
                cats = self.categorizer.categorize(outputs.probs, people, outputs.embeddings, hashes)
            decided_by = self.categorizer.fingerprint
        out = []
        for i, item in enumerate(batch):
            assert item.content_hash is not None
            cat = cats[i]
            result = ResultRecord(
                content_hash=item.content_hash,
                probs=outputs.probs[i] if outputs.probs is not None else None,
                embedding=outputs.embeddings[i] if outputs.embeddings is not None else None,
                category=cat.category if cat else None,
                category_score=float(cat.score) if cat else None,
                fine_label=cat.fine if cat else None,
                people=item.people.to_dict() if hasattr(item.people, "to_dict") else None,
                decided_by=decided_by,
                personal=cat.personal if cat else None,
            )
            e = item.entry
            photo = PhotoRecord(e.path, e.size, e.mtime_ns, item.content_hash, meta=item.meta)
            out.append(Processed(photo, result, cat.shown if cat else None))
        return out

    def _look_for_faces(
        self, batch: Sequence[Loaded], cats: Sequence[CategoryLike], embeddings: np.ndarray | None
    ) -> bool:
        """Detect faces where the classifier's first decision and the face gate on the ``embeddings`` leave them
        worth it; True if any was looked at.

        The held image is dropped either way: the batch is about to be stored."""
        detector = self._detector()
        held = [item.face_image for item in batch]
        for item in batch:
            item.face_image = None
        if detector is None or self.categorizer is None or all(h is None for h in held):
            return False
        looked = False
        search = detector.to_search(cats, self.categorizer.might_show_faces(embeddings))
        for item, image, wanted in zip(batch, held, search, strict=True):
            if wanted and image is not None:
                item.people = detector.detect(image)
                looked = True
        return looked

    def run_batch(self, batch: Sequence[Loaded]) -> list[Processed]:
        """infer + postprocess: what an executor does with a full batch."""
        return self.postprocess(batch, self.infer(batch))


def unbatched(item: Loaded) -> Processed:
    """The record of an item that needs no inference: an unreadable file, or content the catalog knows."""
    e = item.entry
    if item.error is not None:
        return Processed(PhotoRecord(e.path, e.size, e.mtime_ns, None, item.error))
    return Processed(PhotoRecord(e.path, e.size, e.mtime_ns, item.content_hash, meta=item.meta))


def _with_small_phash(meta: photometa.PhotoMeta, data: bytes, path: str) -> photometa.PhotoMeta:
    """The perceptual hash from a cheap decode (JPEGs DCT-scaled to 1/8): for content the model does not see."""
    try:
        return meta.with_phash(imaging.decode(data, path, min_side=photometa.HASH_SIDE))
    except UnreadableImage:
        return meta
