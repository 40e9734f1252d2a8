"""What each model task turns its raw outputs into: one output handler per task.

* ``classify``: logits -> softmax probabilities over the card's labels (and the embedding when the model
  exposes one: categories are re-derived from it, finding photos uses it);
* ``embed``: an image embedding only (no labels, no categories; for similar photos and duplicates).

A new task (``detect``, say) is a new handler here plus what the catalog stores for it; the pipeline, the
executors and the sink do not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from photosift.models.card import ModelCard


@dataclass(slots=True)
class TaskOutputs:
    """A batch's outputs after the task's postprocessing; rows follow the batch."""

    probs: np.ndarray | None = None  # (N, C) softmax over the card's labels (classify)
    embeddings: np.ndarray | None = None  # (N, D) float32


class TaskHandler(Protocol):
    task: str

    def postprocess(self, raw: dict[str, np.ndarray]) -> TaskOutputs: ...


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in the dtype of ``logits`` (a new array)."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


class Classify:
    task = "classify"

    def postprocess(self, raw: dict[str, np.ndarray]) -> TaskOutputs:
        return TaskOutputs(
            probs=softmax(raw["logits"].astype(np.float32, copy=False)), embeddings=raw.get("embedding")
        )


class Embed:
    task = "embed"

    def postprocess(self, raw: dict[str, np.ndarray]) -> TaskOutputs:
        return TaskOutputs(embeddings=raw["embedding"])


_HANDLERS: dict[str, TaskHandler] = {"classify": Classify(), "embed": Embed()}


def handler_for(card: ModelCard) -> TaskHandler:
    return _HANDLERS[card.task]
