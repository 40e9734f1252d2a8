"""The "abstract art vs photo" detector: a logistic head over the model's embedding.

ImageNet classifiers are confidently wrong on abstract art (a gradient wallpaper is "balloon" 0.6, a fractal
"honeycomb"), so no threshold on the softmax separates it from photos (docs/CATEGORIES.md). This head was
trained by tools/build_abstract_head.py on procedurally generated abstract images versus real photos and
cut-outs; the rules' ``abstract_threshold`` decides when its probability makes a photo ``other``.

It reads the embedding rounded to float16, which is what the catalog stores, so ``recategorize`` gives exactly
the classify-time answer. It only fits the embedding space it was trained in (efficientnet-lite0, fp32 or int8):
:func:`head_for_model` returns None for any other model, and then categories are decided as without it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

BUILTIN_HEAD = Path(str(resources.files("photosift.data"))) / "abstract_head.npz"


@dataclass(frozen=True, eq=False)
class AbstractHead:
    weight: np.ndarray  # (D,) float32
    bias: float
    meta: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    def scores(self, embeddings: np.ndarray) -> np.ndarray | None:
        """(N,) probability that each photo is abstract art; None when the embeddings do not fit the head."""
        e = np.asarray(embeddings)
        if e.ndim == 1:
            e = e[None]
        if e.ndim != 2 or e.shape[1] != self.dim:
            return None
        x = (e if e.dtype == np.float16 else e.astype(np.float16)).astype(np.float64)
        # einsum computes each row on its own (no BLAS blocking across rows): the same number for a photo
        # whatever batch it arrives in (classify vs recategorize), 7x faster than a Python loop over np.dot.
        norm = np.sqrt(np.einsum("ij,ij->i", x, x))
        z = np.einsum("ij,j->i", x, self.weight.astype(np.float64)) / np.maximum(norm, 1e-12) + self.bias
        out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
        return out


@functools.lru_cache(maxsize=2)
def load_head(path: Path = BUILTIN_HEAD) -> AbstractHead | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return AbstractHead(
                np.asarray(z["weight"], dtype=np.float32), float(z["bias"]), json.loads(str(z["meta"]))
            )
    except (OSError, KeyError, ValueError):
        return None


@functools.lru_cache(maxsize=1)
def _arch_of_builtin_models() -> dict[str, str]:
    """model sha256 -> arch, for the packaged models."""
    from photosift.models.registry import registry

    return {e.sha256: str(e.summary.get("arch", "")) for e in registry().values()}


def packaged_arch(model_sha256: str | None) -> str | None:
    """The architecture of a packaged model (by its sha256), None for any other model: the shipped heads
    (this one, learned.py's) fit only the embedding space they were trained in."""
    return _arch_of_builtin_models().get(model_sha256) or None if model_sha256 else None


def head_for_model(model_sha256: str | None) -> AbstractHead | None:
    """The shipped head when ``model_sha256`` is a packaged model of the architecture it was trained on."""
    head = load_head()
    arch = packaged_arch(model_sha256)
    return head if head is not None and arch and arch == head.meta.get("arch") else None
