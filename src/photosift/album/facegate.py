"""Is a face worth looking for? A logistic probe on the model's embedding, trained on what the detector finds.

Face detection (people.py) costs about a tenth of classifying a photo, and most photos of a library have no
face. The pipeline already gates the detector on the classifier's category (``PeopleDetector.wanted``: not where
the classifier is sure of animals or plants); this gate adds the embedding's own evidence. The probe was trained
by tools/build_face_gate.py to predict "the detector finds a face" from the float16-rounded, L2-normalised
embedding, and its threshold is the lowest score any photo with a face got from a probe that had never seen its
source package (grouped cross-validation). Photos below it are not searched; their stored face signal says
"not looked" (``people`` NULL), as for the category gate. What it keeps and costs on photos from unseen
packages, and the categories with and without it, are in docs/CATEGORIES.md ("Faces").

It fits only the embedding space it was trained in (the packaged efficientnet-lite0, fp32 or int8, like the
abstract-art head): :func:`gate_for_model` returns None for any other model, which is then searched as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from photosift.album.abstract import AbstractHead, load_head, packaged_arch

BUILTIN_GATE = Path(str(resources.files("photosift.data"))) / "face_gate.npz"


@dataclass(frozen=True, eq=False)
class FaceGate:
    probe: AbstractHead  # a logistic regression over the embedding, as the abstract-art head is
    threshold: float  # probability below which a photo is not searched

    def wanted(self, embeddings: np.ndarray) -> np.ndarray | None:
        """(N,) bool: which photos to search for faces; None when the embeddings do not fit the probe."""
        scores = self.probe.scores(embeddings)
        return None if scores is None else scores >= self.threshold


def load_gate(path: Path = BUILTIN_GATE) -> FaceGate | None:
    probe = load_head(path)
    if probe is None or "threshold" not in probe.meta:
        return None
    return FaceGate(probe, float(probe.meta["threshold"]))


def gate_for_model(model_sha256: str | None, path: Path = BUILTIN_GATE) -> FaceGate | None:
    """The shipped gate when ``model_sha256`` is a packaged model of the architecture it was trained on."""
    gate = load_gate(path)
    arch = packaged_arch(model_sha256)
    return gate if gate is not None and arch and arch == gate.probe.meta.get("arch") else None
