"""Search by meaning: which photos a query's words describe, ranked by how sure the model was.

For each term of the query (see :mod:`photosift.find.query`) a photo collects, independently:

* **labels** — the probability mass the classifier put on the classes the term denotes: the classes WordNet
  puts under it ("dog": all 118 breeds; :mod:`photosift.find.hierarchy`), plus classes whose display name in
  the model's labels *is* the term ("rooster", "kayak": names WordNet spells otherwise). A photo counts only
  when at least ``MIN_MASS`` of the stored top-100 probability falls on those classes, so the dog photo whose
  hundredth guess was a tabby is not a cat. For ranking, each class's probability is weighted by how far up
  the hierarchy the term sits: ``1 - 0.1 * depth``, never below 0.5 — the photo the word names exactly comes
  before an equally sure photo of a far-down kind of it ("cat": a tabby at depth 2 counts 0.8).
* **category** — the photo's album category is the term (singular or plural): +0.5; +1.0 when the user put it
  there by a correction. This also fills WordNet's gaps: a bus is no "vehicle" in WordNet but is in the
  *vehicles* category.
* **name** — the term is a word of the file's path (its name or a folder): +0.4.

A photo must match every term; its relevance is the mean over terms of these sums, and ``why`` says what
matched. A date in the query (a year, a month, a day) keeps only photos taken then. Everything is one
vectorised pass over arrays the :class:`~photosift.find.library.Finder` keeps (tens of ms at 100,000 photos).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from photosift.find import hierarchy
from photosift.find.library import Photos, TopK
from photosift.find.query import DateFilter, Query, parse

MIN_MASS = 0.15
CATEGORY_SCORE = 0.5
CORRECTED_SCORE = 1.0
NAME_SCORE = 0.4
DEPTH_STEP = 0.1
DEPTH_FLOOR = 0.5


@dataclass
class Hits:
    """Found photos, best first: indices into :class:`Photos` and their relevance."""

    photos: np.ndarray
    relevance: np.ndarray

    def __len__(self) -> int:
        return len(self.photos)


def depth_weight(depth: int) -> float:
    return max(DEPTH_FLOOR, 1.0 - DEPTH_STEP * depth)


def _plain(name: str) -> str:
    """A display name as a term: lower case, separators folded, "(bird of prey)" style notes dropped."""
    return hierarchy.normalize(re.sub(r"\s*\([^)]*\)", "", name))


@cache
def _is_imagenet(labels: tuple[str, ...]) -> bool:
    from photosift.models.card import imagenet_labels

    return labels == tuple(imagenet_labels())


@cache
def _display_index(labels: tuple[str, ...]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, name in enumerate(labels):
        out.setdefault(_plain(name), []).append(i)
    return out


@lru_cache(maxsize=256)
def class_weights(term: str, labels: tuple[str, ...]) -> dict[int, tuple[float, str]]:
    """Class index -> (ranking weight, how it matched) for one term and a classifier's labels."""
    out: dict[int, tuple[float, str]] = {}
    if _is_imagenet(labels):
        for i, m in hierarchy.classes_matching(term).items():
            how = labels[i] if m.depth == 0 else f"{labels[i]} (a kind of {m.lemma.replace('_', ' ')})"
            out[i] = (depth_weight(m.depth), how)
    names = _display_index(labels)
    for form in hierarchy.base_forms(term):
        for i in names.get(form, ()):
            out[i] = (1.0, labels[i])
    return out


def _category_forms(name: str) -> set[str]:
    return set(hierarchy.base_forms(name))


def _word_pattern(term: str) -> re.Pattern[str]:
    """The term as whole words (a plural s allowed), any separator between them, in a lower-cased path. The
    pattern starts with a literal so the regex engine can skip ahead; :func:`_is_word` checks what precedes."""
    words = [re.escape(w) for w in hierarchy.normalize(term).split()]
    return re.compile(r"[\s_\-.]+".join(words) + r"s?(?![^\W_])")


def _is_word(text: str, start: int) -> bool:
    return start == 0 or not text[start - 1].isalnum()


class Searcher:
    """Search over one snapshot of the library: photos, and the classifier's stored top-k (or None)."""

    def __init__(self, photos: Photos, topk: TopK | None) -> None:
        self.photos = photos
        self.topk = topk
        self.rows = topk.rows_of(photos.hashes) if topk is not None else np.full(len(photos), -1)
        self.categories = sorted({c for c in photos.category if c})
        code = {c: k for k, c in enumerate(self.categories)}
        self.category_code = np.fromiter(
            (code.get(c, -1) if c else -1 for c in photos.category), dtype=np.int64, count=len(photos)
        )
        self._lower_paths = "\n".join(p.casefold() for p in photos.paths)
        self._line_starts = np.cumsum([0] + [len(p) + 1 for p in photos.paths[:-1]])

    def knows(self, term: str) -> bool:
        """A run of words the labels, the hierarchy or a category name know as one term."""
        if self.topk is not None and class_weights(term, self.topk.labels):
            return True
        return bool(self._categories_of(term))

    def _categories_of(self, term: str) -> list[int]:
        forms = _category_forms(term)
        return [k for k, c in enumerate(self.categories) if forms & _category_forms(c)]

    def parse(self, text: str) -> Query:
        return parse(text, self.knows)

    def search(self, text: str) -> tuple[Query, Hits]:
        """The photos the query describes, most relevant first (then by path), as arrays; ``explain`` says why
        for the photos actually shown."""
        query = self.parse(text)
        n = len(self.photos)
        if query.empty or n == 0:
            return query, Hits(np.zeros(0, np.int64), np.zeros(0))
        keep = self._date_mask(query.date) if query.date else np.ones(n, dtype=bool)
        total = np.zeros(n, dtype=np.float64)
        for term in query.terms:
            score = self._term(term)
            keep &= score > 0
            total += score
        found = np.flatnonzero(keep)
        if query.terms:
            relevance = total[found] / len(query.terms)
            order = np.lexsort((found, -relevance))
        else:  # a date alone: the photos of that time, in time order
            relevance = np.ones(len(found))
            order = np.lexsort((found, self.photos.taken_at[found]))
        return query, Hits(found[order], relevance[order])

    def _term(self, term: str) -> np.ndarray:
        score = np.zeros(len(self.photos), dtype=np.float64)
        hits, ranked, _ = self._label_mass(term)
        score[hits] += ranked[hits]
        cats = self._categories_of(term)
        if cats:
            in_cat = np.isin(self.category_code, cats)
            score += np.where(in_cat, np.where(self.photos.corrected, CORRECTED_SCORE, CATEGORY_SCORE), 0.0)
        score[self._name_hits(term)] += NAME_SCORE
        return score

    def _name_hits(self, term: str) -> np.ndarray:
        text = self._lower_paths
        starts = [m.start() for m in _word_pattern(term).finditer(text) if _is_word(text, m.start())]
        rows = np.searchsorted(self._line_starts, np.array(starts, dtype=np.int64), side="right") - 1
        return np.unique(rows)

    def _label_mass(self, term: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(photos that count, depth-weighted mass per photo, plain mass per photo) for one term."""
        n = len(self.photos)
        none = (np.zeros(0, np.int64), np.zeros(n), np.zeros(n))
        if self.topk is None:
            return none
        classes = class_weights(term, self.topk.labels)
        if not classes:
            return none
        has = self.rows >= 0
        rows = np.maximum(self.rows, 0)
        mass, ranked = self.topk.mass({i: w for i, (w, _) in classes.items()})
        if len(mass) == 0:
            return none
        photo_mass = np.where(has, mass[rows], 0.0)
        photo_rank = np.where(has, ranked[rows], 0.0)
        return np.flatnonzero(photo_mass >= MIN_MASS), photo_rank, photo_mass

    def explain(self, query: Query, photo: int) -> list[str]:
        """Why a photo matched: per term, the classes, category or path; and the date."""
        why: list[str] = []
        for term in query.terms:
            why += self._explain_term(term, photo)
        if query.date is not None:
            when = self.photos.taken_at[photo][:10]
            guess = " (file date)" if self.photos.taken_source[photo] == "mtime" else ""
            why.append(f"taken {when}{guess}: {query.date.describe()}")
        return why

    def _explain_term(self, term: str, i: int) -> list[str]:
        out = []
        row = int(self.rows[i])
        if self.topk is not None and row >= 0:
            classes = class_weights(term, self.topk.labels)
            matched = [
                (float(p), int(c))
                for c, p in zip(self.topk.index[row].tolist(), self.topk.prob[row].tolist(), strict=True)
                if c in classes
            ]
            mass = sum(p for p, _ in matched)
            if matched and mass >= MIN_MASS:
                p, c = max(matched)
                out.append(f"{mass:.0%} “{term}”: {classes[c][1]} {p:.0%}")
        code = int(self.category_code[i])
        if code >= 0 and code in self._categories_of(term):
            cat = self.categories[code]
            out.append(f"category {cat}" + (" (your correction)" if self.photos.corrected[i] else ""))
        path = self.photos.paths[i].casefold()
        if any(_is_word(path, m.start()) for m in _word_pattern(term).finditer(path)):
            out.append(f"“{term}” in its path")
        return out

    def _date_mask(self, date: DateFilter) -> np.ndarray:
        taken = self.photos.taken_at
        prefix = date.prefix()
        if prefix is not None:
            return np.asarray(np.char.startswith(taken, prefix), dtype=bool)
        return np.asarray(np.char.find(taken, f"-{date.month:02d}-") == 4, dtype=bool)
