"""The learned category head: album categories learned from real photos, over what the catalog stores.

The rules (rules.py) map ImageNet's 1000 classes to ten categories by hand, and a hand-made map cannot know
that ImageNet has no class for a tree, a leaf, a rose bush or a person in uniform: a lone tree comes out as
"spider monkey" (animals), a rose as food, a texture as whatever it resembles. This head learns the categories
from hand-labelled real photos (docs/data/category-photos.tsv) on top of the outputs the catalog already keeps
for every photo, so it needs no extra inference and ``recategorize`` can apply it to an existing catalog:

* the model's 1280-d embedding, rounded to float16 (what the catalog stores) and L2-normalised;
* the raw softmax mass of each category under the rules in force (what the classes say), as log-mass;
* the face signal (people.py): whether faces were found, how much of the photo they cover, how many;
* the abstract-art detector's probability (abstract.py), when it fits the model.

It is a multinomial logistic regression (one weight row per category), built by
tools/build_category_head.py with cross-validation grouped by source package, and shipped as a small npz per
packaged model architecture (``data/category_head.npz``, like the abstract head). Applying it is one
matrix-vector product per photo (microseconds). Every number is computed row by row in float64 from
float16-rounded inputs, so classify and recategorize give the same answer for a photo in any batch.

Authority: a user's correction > their personal head > this head > the rules. The head only decides where
the rules in force ask for it (``learned_head: on``, as the shipped rules do) and have the categories it was
trained for; a user's own rules file leaves it off unless it says ``learned_head: on`` (decisions.py).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from photosift.album.abstract import packaged_arch
from photosift.album.rules import OTHER, PEOPLE, Categorizer, CategoryResult, TopK

BUILTIN_HEAD = Path(str(resources.files("photosift.data"))) / "category_head.npz"
SIDE_FEATURES = ("faces_found", "log_face_area", "log_largest_face", "face_count", "abstract")
_MASS_FLOOR = 1e-3  # log-mass below this carries no information (stray probability on unrelated classes)
_AREA_FLOOR = 1e-4


def _faces(signal: Any | None) -> tuple[float, float, float, float]:
    """(found, log face area, log largest face, count capped at 5) from a PeopleSignal-like object or None."""
    if signal is None:
        return 0.0, float(np.log(_AREA_FLOOR)), float(np.log(_AREA_FLOOR)), 0.0
    faces = int(getattr(signal, "faces", 0) or 0)
    area = float(getattr(signal, "face_area", 0.0) or 0.0)
    largest = float(getattr(signal, "largest_face", 0.0) or 0.0)
    return (
        float(faces > 0),
        float(np.log(area + _AREA_FLOOR)),
        float(np.log(largest + _AREA_FLOOR)),
        float(min(faces, 5)),
    )


def raw_features(
    embeddings: np.ndarray,
    mass: np.ndarray,
    people: Sequence[Any | None] | None,
    abstract: np.ndarray | None,
) -> np.ndarray:
    """(N, D + K + 5) float64 features before standardisation: the normalised float16 embedding, the log-mass
    of each category (columns in the order of ``mass``), the face features and the abstract-art probability.
    The build tool and the runtime both call this, so they cannot drift apart."""
    e = stored_float16(embeddings)
    n, d = e.shape
    m = np.log(np.clip(np.asarray(mass, dtype=np.float64), 0.0, None) + _MASS_FLOOR)
    if m.shape[0] != n:
        raise ValueError(f"{m.shape[0]} category masses for {n} embeddings")
    signals = list(people) if people is not None else [None] * n
    if len(signals) != n:
        raise ValueError(f"{len(signals)} people signals for {n} embeddings")
    # Written into one array (recategorize builds 4096 x 1300 of these per chunk; a concatenate copies it all).
    out = np.empty((n, d + m.shape[1] + len(SIDE_FEATURES)), dtype=np.float64)
    x = out[:, :d]
    x[...] = e
    # einsum sums each row on its own (8x faster than linalg.norm on this strided view), as abstract.py does.
    x /= np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), 1e-12)[:, None]
    out[:, d : d + m.shape[1]] = m
    out[:, d + m.shape[1] : -1] = np.array([_faces(s) for s in signals], dtype=np.float64).reshape(n, 4)
    out[:, -1] = 0.0 if abstract is None else np.asarray(abstract, dtype=np.float64).reshape(n)
    return out


def stored_float16(embeddings: np.ndarray) -> np.ndarray:
    """(N, D) embeddings rounded to float16 as the catalog stores them (no copy when they are stored ones)."""
    e = np.asarray(embeddings)
    if e.ndim == 1:
        e = e[None]
    return e if e.dtype == np.float16 else e.astype(np.float16)


@dataclass(frozen=True, eq=False)
class CategoryHead:
    """Softmax regression over :func:`raw_features` (the build's scaling and standardisation are folded into
    the weights): ``p = softmax(weight @ features + bias)``, columns in the order of ``categories``."""

    categories: tuple[str, ...]
    weight: np.ndarray  # (K, D + K + 5) float64
    bias: np.ndarray  # (K,)
    meta: dict[str, Any]

    @property
    def dim(self) -> int:
        """Length of the embedding the head reads."""
        return int(self.weight.shape[1] - len(self.categories) - len(SIDE_FEATURES))

    def fits(self, categories: Sequence[str]) -> bool:
        """Whether the head can decide among ``categories`` (it must know every one of its own by name)."""
        return set(self.categories) <= set(categories)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, K) category probabilities (columns: ``categories``) from :func:`raw_features` rows."""
        x = np.asarray(features, dtype=np.float64)
        # Row by row: the same number for a photo whatever batch it arrives in (classify vs recategorize).
        z = np.array([self.weight @ row for row in x]).reshape(len(x), len(self.bias)) + self.bias
        z -= z.max(axis=1, keepdims=True)
        p: np.ndarray = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return p

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            categories=np.array(self.categories),
            weight=self.weight.astype(np.float32),
            bias=self.bias.astype(np.float32),
            meta=np.array(json.dumps(self.meta, sort_keys=True)),
        )


@functools.lru_cache(maxsize=4)
def load_head(path: Path = BUILTIN_HEAD) -> CategoryHead | None:
    """The head stored at ``path``, or None when there is none (or it cannot be read)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return CategoryHead(
                tuple(str(c) for c in z["categories"]),
                np.asarray(z["weight"], dtype=np.float64),
                np.asarray(z["bias"], dtype=np.float64),
                json.loads(str(z["meta"])),
            )
    except (OSError, KeyError, ValueError):
        return None


def head_for_model(model_sha256: str | None, path: Path = BUILTIN_HEAD) -> CategoryHead | None:
    """The shipped head when ``model_sha256`` is a packaged model of the architecture it was trained on
    (like the abstract head: fp32 and int8 share one embedding space closely enough; docs/CATEGORIES.md)."""
    head = load_head(path)
    arch = packaged_arch(model_sha256)
    return head if head is not None and arch and arch == head.meta.get("arch") else None


def decide(
    head: CategoryHead,
    categorizer: Categorizer,
    probs: np.ndarray | TopK,
    people: Sequence[Any | None] | None,
    embeddings: np.ndarray,
    abstract: np.ndarray | None,
) -> tuple[list[CategoryResult], np.ndarray]:
    """The head's category for each photo, and its distribution over ``categorizer.rules.categories`` (zero
    for categories the head does not know, e.g. user categories) for the personal head to start from.

    The category is the most probable one, its probability the score; the finer label is the rules' for that
    category (dog, fruit, car ...), or ``group`` for people with three faces or more, as the rules give it."""
    rules = categorizer.rules
    if np.asarray(embeddings).shape[-1] != head.dim:
        raise ValueError(
            f"the category head reads {head.dim}-d embeddings, not {np.asarray(embeddings).shape[-1]}-d"
        )
    dense = categorizer.dense(probs)
    cols = [rules.categories.index(c) for c in head.categories]
    mass = categorizer.mass(dense)[:, cols]
    p = head.probabilities(raw_features(embeddings, mass, people, abstract))
    posterior = np.zeros((len(p), len(rules.categories)))
    posterior[:, cols] = p
    best = p.argmax(axis=1)
    names = [head.categories[b] for b in best.tolist()]
    fines = categorizer.fine_labels(names, dense)
    results = []
    for n, (name, fine) in enumerate(zip(names, fines, strict=True)):
        faces = int(getattr(people[n], "faces", 0) or 0) if people is not None and people[n] else 0
        if name == PEOPLE and faces >= 3:
            fine = "group"
        elif name == OTHER:
            fine = None
        results.append(CategoryResult(name, float(p[n, best[n]]), fine))
    return results, posterior
