"""Which ImageNet classes a word denotes, by WordNet 3.0: "dog" is every dog breed, "fruit" every fruit.

The data is src/photosift/data/label_hierarchy.json (built by tools/build_label_hierarchy.py): each class's
synonyms (its synset's lemmas) and every hypernym path from it up to `entity`. A query term matches a class when,
after normalisation, it equals one of the class's own synonyms (depth 0) or a lemma of one of its ancestors
(depth d: 1 = the parent, 2 = the grandparent, ...; the shortest path counts when WordNet has several).

Normalisation: case-insensitive; `_`, `-` and runs of spaces are one space; plurals fold to the singular the way
WordNet's morphy does for nouns (its detachment rules and noun.exc's irregular forms; "dogs", "berries", "buses",
"geese"), on the last word of a multi-word term ("golden retrievers"). Only forms that are lemmas count.

Stop-list: the five synsets at the top of the tree (`STOP_SYNSETS`) never match as ancestors. Each covers almost
all classes (entity 1000, physical entity 997, object 958, whole/unit 949) or is the abstract branch that holds
only a street sign, a traffic light and a bubble (abstraction), so "object" or "unit" would return the whole
model. The next levels are kept: "artifact" (522 classes), "organism"/"living thing" (410) and "animal" (398)
split the classes into halves a person may well ask for.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np

DATA = Path(str(resources.files("photosift.data"))) / "label_hierarchy.json"

STOP_SYNSETS = {
    "n00001740": "entity",
    "n00001930": "physical entity",
    "n00002137": "abstraction, abstract entity",
    "n00002684": "object, physical object",
    "n00003553": "whole, unit",
}
# WordNet's morphy, nouns: suffix -> replacement, tried in turn (wnintro(7WN) "morphy", morph.c).
DETACH = (
    ("s", ""),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
)


class Match(NamedTuple):
    """How a class matched: depth 0 is one of its own synonyms, d > 0 an ancestor d steps up."""

    depth: int
    wnid: str  # the synset whose lemma matched: the class itself, or the ancestor
    lemma: str  # the lemma as WordNet spells it


def normalize(term: str) -> str:
    return re.sub(r"[\s_\-]+", " ", term).strip().lower()


@cache
def load() -> dict[str, Any]:
    """The parsed label_hierarchy.json (read once)."""
    with DATA.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


@cache
def _index() -> tuple[dict[str, list[tuple[str, str]]], dict[str, dict[int, int]]]:
    """lemma -> [(wnid, lemma as spelled)], and synset -> {class index: depth} (0 for a class's own synset)."""
    data = load()
    lemmas: dict[str, list[tuple[str, str]]] = {}
    below: dict[str, dict[int, int]] = {}
    for i, c in enumerate(data["classes"]):
        below.setdefault(c["wnid"], {})[i] = 0
        for lemma in c["synonyms"]:
            lemmas.setdefault(normalize(lemma), []).append((c["wnid"], lemma))
        for path in c["paths"]:
            for d, wnid in enumerate(path, 1):
                if wnid not in STOP_SYNSETS and below.setdefault(wnid, {}).get(i, d) >= d:
                    below[wnid][i] = d
    for wnid, s in data["synsets"].items():
        if wnid not in STOP_SYNSETS:
            for lemma in s["lemmas"]:
                lemmas.setdefault(normalize(lemma), []).append((wnid, lemma))
    return lemmas, below


def base_forms(term: str) -> list[str]:
    """The normalised term and the singulars morphy would try, the term first; unknown forms included."""
    term = normalize(term)
    head, _, last = term.rpartition(" ")
    prefix = head + " " if head else ""
    forms = [term]
    plurals = load()["plurals"]
    if term in plurals:
        forms.append(plurals[term])
    elif last in plurals:
        forms.append(prefix + plurals[last])
    forms += [
        prefix + last[: -len(suf)] + rep for suf, rep in DETACH if last.endswith(suf) and len(last) > len(suf)
    ]
    return list(dict.fromkeys(forms))


def classes_matching(query: str) -> dict[int, Match]:
    """Class index -> how the term matched it (the smallest depth wins). Empty for unknown or stop-listed terms."""
    lemmas, below = _index()
    out: dict[int, Match] = {}
    for form in base_forms(query):
        for wnid, lemma in lemmas.get(form, ()):
            for i, d in below.get(wnid, {}).items():
                if i not in out or d < out[i].depth:
                    out[i] = Match(d, wnid, lemma)
    return dict(sorted(out.items()))


def match_depths(query: str) -> np.ndarray:
    """int16 array over the 1000 classes: the match depth, -1 where the term does not denote the class."""
    import numpy as np

    depths = np.full(len(load()["classes"]), -1, dtype=np.int16)
    for i, m in classes_matching(query).items():
        depths[i] = m.depth
    return depths


def synonyms(index: int) -> list[str]:
    """The class's own WordNet lemmas, e.g. ["golden retriever"]."""
    return list(load()["classes"][index]["synonyms"])


def ancestors(index: int) -> list[tuple[int, str, list[str]]]:
    """(depth, wnid, lemmas) of every ancestor of the class, nearest first, the stop-listed ones left out."""
    data, seen = load(), {}  # type: dict[str, Any], dict[str, int]
    for path in data["classes"][index]["paths"]:
        for d, wnid in enumerate(path, 1):
            if wnid not in STOP_SYNSETS:
                seen[wnid] = min(d, seen.get(wnid, d))
    return sorted((d, w, list(data["synsets"][w]["lemmas"])) for w, d in seen.items())
