"""Album categories from the model's softmax: rules (YAML), aggregation, thresholds, and the people signal.

A photo's category is decided by the probability *mass* each category collects over the whole softmax, not by the
top-1 class: a photo of a fish that the model calls "whistle" 0.56 still has most of the rest of its probability
on fish, and an abstract painting spreads its probability thinly over unrelated categories. Raw mass favours the
categories with the most ImageNet classes (objects has 370, plants 18), so each category's mass is divided by a
power of its class count (``prior_correction``) before the scores are normalised. The winner must reach
``min_confidence`` or the photo is ``other``. A :class:`~photosift.album.people.PeopleSignal` (faces) can then make it
``people``, because ImageNet has no person class. docs/CATEGORIES.md gives the maths and the measured accuracy.

The same function works on a full softmax ``(N, C)`` or on stored top-k pairs ``(indices, probs)``, so the catalog
can re-derive categories after the rules change without running the model again.

Rules files are checked with line numbers: every problem is a :class:`~photosift.core.errors.RulesError` whose message
names the file and the line, so a user editing their copy sees exactly what to fix.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from photosift.core.errors import RulesError, UnknownCategory
from photosift.models.card import imagenet_labels, is_imagenet

BUILTIN_RULES = Path(str(resources.files("photosift.data"))) / "categories.yaml"
OTHER = "other"
PEOPLE = "people"

TopK = tuple[np.ndarray, np.ndarray]
"""Stored top-k outputs: ``(indices (N, k) int, probabilities (N, k) float)``, best first or in any order."""

_SETTINGS = {
    "version",
    "min_confidence",
    "prior_correction",
    "prior_floor",
    "temperature",
    "abstract_threshold",
    "learned_head",
    "weights",
    "people",
    "user_categories",
    "unmapped",
    "categories",
}
_PEOPLE_SETTINGS = {"min_face_area", "portrait_face_area", "override_confidence"}
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_INDEX_NAME = re.compile(r"^(\d+)\s+(.+)$")


@dataclass(frozen=True)
class PeopleRules:
    """When faces make a photo "people" (fractions of the photo's area covered by face boxes)."""

    min_face_area: float = 0.003
    portrait_face_area: float = 0.01
    override_confidence: float = 0.8


@dataclass(frozen=True, eq=False)
class Rules:
    """A parsed, validated rules file. ``categories`` lists every category a photo can get, in file order, then
    ``other`` (always present), then the user categories that only a personal head predicts."""

    source: str
    categories: tuple[str, ...]
    user_categories: tuple[str, ...]
    class_category: np.ndarray  # (num_classes,) index into categories
    class_fine: np.ndarray  # (num_classes,) index into fine_labels, -1 when the class has no finer label
    fine_labels: tuple[str, ...]  # one entry per (category, finer label) group, so names may repeat
    labels: tuple[str, ...]
    min_confidence: float = 0.35
    prior_correction: float = 0.75
    prior_floor: float = 25.0
    temperature: float = 1.0
    abstract_threshold: float = 1.0  # 1.0 (`off`): the abstract-art detector never decides
    learned_head: bool = False  # the learned category head (learned.py) decides where it fits the model
    weights: dict[str, float] = field(default_factory=dict)
    people: PeopleRules = field(default_factory=PeopleRules)

    @property
    def num_classes(self) -> int:
        return int(self.class_category.shape[0])

    def classes_of(self, category: str) -> list[int]:
        j = self.categories.index(category)
        return [int(i) for i in np.nonzero(self.class_category == j)[0]]

    def check_category(self, name: str, extra: Sequence[str] = ()) -> str:
        """``name`` if it is a category of these rules (or in ``extra``, e.g. the catalog's user categories)."""
        return check_category(name, [*self.categories, *(c for c in extra if c not in self.categories)])

    @property
    def fingerprint(self) -> str:
        """Changes whenever anything that affects a decision changes; lets the catalog know results are stale."""
        payload = {
            "categories": self.categories,
            "class_category": self.class_category.tolist(),
            "class_fine": self.class_fine.tolist(),
            "fine": self.fine_labels,
            "settings": [self.min_confidence, self.prior_correction, self.prior_floor, self.temperature],
            "abstract_threshold": self.abstract_threshold,
            "learned_head": self.learned_head,
            "weights": sorted(self.weights.items()),
            "people": [
                self.people.min_face_area,
                self.people.portrait_face_area,
                self.people.override_confidence,
            ],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def check_category(name: str, known: Sequence[str]) -> str:
    """``name`` if it is in ``known``; else an UnknownCategory that lists them and suggests the closest."""
    if name in known:
        return name
    close = difflib.get_close_matches(name, list(known), n=2)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownCategory(f"unknown category {name!r} (known: {', '.join(known)}){hint}")


MAX_CATEGORY_NAME = 64


def check_category_name(name: str) -> str:
    """``name`` if it can be a new user category: one line of 1-64 printable characters, not blank (it is shown
    in tables, menus and CSV, and typed back as --category); else an UnknownCategory saying why."""
    if not name.strip() or len(name) > MAX_CATEGORY_NAME or not name.isprintable():
        raise UnknownCategory(
            f"invalid category name {name!r}: a category name is one line of 1-{MAX_CATEGORY_NAME} printable "
            "characters"
        )
    return name


@dataclass(frozen=True)
class CategoryResult:
    """``score``: the category's share of the weighted probability mass (0-1). For a photo that is "other" because
    no category was confident enough, 1 minus the best category's share. ``fine``: a finer label (dog, fruit,
    car, group ...) when one group holds most of the category's mass, else None."""

    category: str
    score: float
    fine: str | None = None


# -- loading ----------------------------------------------------------------------------------------------------


def load_rules(path: Path | None = None, labels: Sequence[str] | None = None) -> Rules:
    """Parse and check a rules file; None loads the shipped rules. ``labels``: the model's class names (default:
    ImageNet's 1000), used to check class names and that every class is mapped."""
    source = BUILTIN_RULES if path is None else Path(path)
    where = "<built-in rules>" if path is None else str(source)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(f"{where}: rules file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{where}: cannot read rules file ({exc})") from None
    return parse_rules(text, where, labels)


def label_rules(labels: Sequence[str]) -> Rules:
    """Rules that make a classifier's own labels its categories (a model trained on "receipts", "pets", "cars"
    files photos under those): the category is the most probable label, with its probability as the score."""
    categories = list(dict.fromkeys(labels))
    if OTHER not in categories:
        categories.append(OTHER)
    return Rules(
        source="<the model's labels>",
        categories=tuple(categories),
        user_categories=(),
        class_category=np.array([categories.index(label) for label in labels], dtype=np.int32),
        class_fine=np.full(len(labels), -1, dtype=np.int32),
        fine_labels=(),
        labels=tuple(labels),
        min_confidence=0.0,
        prior_correction=0.0,
        prior_floor=1.0,
    )


def rules_for_model(
    labels: Sequence[str], chosen: Path | None = None, user_default: Path | None = None
) -> Rules:
    """The rules that decide a classifier's album categories.

    ``chosen``: a rules file the user named (``--rules``, ``PHOTOSIFT_RULES``): it must fit the model's labels,
    whatever they are. ``user_default``: the config dir's ``categories.yaml``, the user's edit of the built-in
    ImageNet rules. An ImageNet-1k model gets ``chosen``, else ``user_default``, else the built-in rules; any other
    classifier gets ``chosen``, else its own labels as categories (:func:`label_rules`).
    """
    if chosen is not None:
        return load_rules(chosen, labels)
    if is_imagenet(labels):
        return load_rules(user_default, labels)
    return label_rules(labels)


def parse_rules(text: str, where: str = "<rules>", labels: Sequence[str] | None = None) -> Rules:
    """Parse rules from YAML text; ``where`` names the source in error messages."""
    return _parse_cached(text, where, tuple(labels) if labels is not None else None)


@functools.lru_cache(maxsize=8)
def _parse_cached(text: str, where: str, labels: tuple[str, ...] | None) -> Rules:
    # Parsing and checking 1000 entries takes ~60 ms; the web gallery needs the rules on every correction and
    # page that lists categories. Keyed by the file's text, so an edited file is parsed again.
    return _Parser(text, where, list(labels) if labels is not None else imagenet_labels()).parse()


class _Parser:
    def __init__(self, text: str, where: str, labels: list[str]) -> None:
        self.text, self.where, self.labels = text, where, labels
        self.by_name: dict[str, list[int]] = {}
        for i, name in enumerate(labels):
            self.by_name.setdefault(name.casefold(), []).append(i)
        self._constructor = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node | None, message: str) -> RulesError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return RulesError(f"{self.where}{line}: {message}")

    def value(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping (`key: value` lines)")
        seen: dict[str, int] = {}
        pairs = []
        for key, val in node.value:
            if not isinstance(key, yaml.ScalarNode) or not str(key.value).strip():
                raise self.fail(key, f"{what}: keys must be plain names")
            name = str(key.value).strip()
            if name.casefold() in seen:
                raise self.fail(
                    key, f"{what}: {name!r} appears twice (first on line {seen[name.casefold()]})"
                )
            seen[name.casefold()] = key.start_mark.line + 1
            pairs.append((key, val))
        return pairs

    def number(self, node: yaml.Node, name: str, lo: float, hi: float) -> float:
        v = self.value(node)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= float(v) <= hi:
            raise self.fail(node, f"{name} must be a number from {lo:g} to {hi:g}, not {v!r}")
        return float(v)

    def parse(self) -> Rules:
        try:
            # libyaml when present: 10x faster, same nodes and line marks (cold start of `classify`).
            root = yaml.compose(self.text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f":{mark.line + 1}" if mark is not None else ""
            raise RulesError(f"{self.where}{line}: not valid YAML ({exc.problem or exc.context})") from None
        except yaml.YAMLError as exc:
            raise RulesError(f"{self.where}: not valid YAML ({exc})") from None
        if root is None:
            raise RulesError(f"{self.where}: the rules file is empty")
        settings: dict[str, tuple[yaml.ScalarNode, yaml.Node]] = {}
        for key, val in self.mapping(root, "the rules file"):
            name = str(key.value).strip()
            if name not in _SETTINGS:
                close = difflib.get_close_matches(name, sorted(_SETTINGS), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self.fail(key, f"unknown setting {name!r}{hint}")
            settings[name] = (key, val)
        if "version" in settings and self.value(settings["version"][1]) != 1:
            raise self.fail(
                settings["version"][1], "unsupported rules version (this photosift reads version 1)"
            )
        if "categories" not in settings:
            raise RulesError(f"{self.where}: no `categories:` section")

        cat_key, cat_node = settings["categories"]
        categories: list[str] = []
        class_cat = np.full(len(self.labels), -1, dtype=np.int32)
        class_fine = np.full(len(self.labels), -1, dtype=np.int32)
        where_listed: dict[int, int] = {}
        fine_labels: list[str] = []
        for key, val in self.mapping(cat_node, "categories"):
            cname = self.category_name(key)
            categories.append(cname)
            j = len(categories) - 1
            if isinstance(val, yaml.MappingNode):
                for fkey, fval in self.mapping(val, f"category {cname!r}"):
                    # One index per (category, finer label): "flower" under two categories are two groups.
                    fine_labels.append(str(fkey.value).strip())
                    self.entries(fval, j, len(fine_labels) - 1, class_cat, class_fine, where_listed)
            elif isinstance(val, yaml.SequenceNode) or (isinstance(val, yaml.ScalarNode) and val.value == ""):
                self.entries(val, j, -1, class_cat, class_fine, where_listed)
            else:
                raise self.fail(val, f"category {cname!r}: expected a list of classes or finer labels")
        if OTHER not in categories:
            categories.append(OTHER)

        user: list[str] = []
        if "user_categories" in settings:
            node = settings["user_categories"][1]
            if isinstance(node, yaml.ScalarNode) and node.value == "":
                node = yaml.SequenceNode("tag:yaml.org,2002:seq", [])
            if not isinstance(node, yaml.SequenceNode):
                raise self.fail(node, "user_categories must be a list of names")
            for item in node.value:
                name = self.category_name(item)
                if name in categories or name in user:
                    raise self.fail(item, f"user category {name!r} is already a category")
                user.append(name)

        missing = np.nonzero(class_cat < 0)[0]
        if len(missing):
            if "unmapped" in settings:
                node = settings["unmapped"][1]
                target = str(self.value(node)).strip()
                if target not in categories:
                    raise self.fail(
                        node, f"unmapped: unknown category {target!r} (known: {', '.join(categories)})"
                    )
                class_cat[missing] = categories.index(target)
            else:
                shown = ", ".join(f"{i} {self.labels[i]!r}" for i in missing[:5])
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                raise self.fail(
                    cat_key,
                    f"{len(missing)} of the model's {len(self.labels)} classes are in no category ({shown}{more}); "
                    "list them, or add `unmapped: other`",
                )

        weights: dict[str, float] = {}
        if "weights" in settings:
            for key, val in self.mapping(settings["weights"][1], "weights"):
                name = str(key.value).strip()
                if name not in categories:
                    raise self.fail(
                        key, f"weights: unknown category {name!r} (known: {', '.join(categories)})"
                    )
                weights[name] = self.number(val, f"weight of {name}", 1e-6, 1e6)

        people = PeopleRules()
        if "people" in settings:
            values: dict[str, float] = {}
            for key, val in self.mapping(settings["people"][1], "people"):
                name = str(key.value).strip()
                if name not in _PEOPLE_SETTINGS:
                    raise self.fail(
                        key,
                        f"people: unknown setting {name!r} (known: {', '.join(sorted(_PEOPLE_SETTINGS))})",
                    )
                values[name] = self.number(val, f"people.{name}", 0.0, 1.0)
            people = PeopleRules(**values)

        def setting(name: str, default: float, lo: float, hi: float) -> float:
            return self.number(settings[name][1], name, lo, hi) if name in settings else default

        abstract_threshold = 1.0
        if "abstract_threshold" in settings:
            node = settings["abstract_threshold"][1]
            raw = self.value(node)
            # `off` and `no` are YAML 1.1 booleans (False); "off" as a quoted string means the same.
            if raw is False or (isinstance(raw, str) and raw.strip().casefold() == "off"):
                abstract_threshold = 1.0
            else:
                v = raw
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.5 <= float(v) <= 1.0:
                    raise self.fail(
                        node,
                        f"abstract_threshold must be a number from 0.5 to 1 (1 or `off`: disabled), not {v!r}",
                    )
                abstract_threshold = float(v)

        learned_head = False
        if "learned_head" in settings:
            node = settings["learned_head"][1]
            raw = self.value(node)
            # `on`/`off` are YAML 1.1 booleans; quoted they are strings that mean the same.
            flag = raw.strip().casefold() if isinstance(raw, str) else raw
            if flag not in (True, False, "on", "off"):
                raise self.fail(node, f"learned_head must be `on` or `off`, not {raw!r}")
            learned_head = flag in (True, "on")

        return Rules(
            source=self.where,
            categories=tuple(categories + user),
            user_categories=tuple(user),
            class_category=class_cat,
            class_fine=class_fine,
            fine_labels=tuple(fine_labels),
            labels=tuple(self.labels),
            min_confidence=setting("min_confidence", 0.35, 0.0, 1.0),
            prior_correction=setting("prior_correction", 0.75, 0.0, 2.0),
            prior_floor=setting("prior_floor", 25.0, 1.0, 1e6),
            temperature=setting("temperature", 1.0, 0.05, 20.0),
            abstract_threshold=abstract_threshold,
            learned_head=learned_head,
            weights=weights,
            people=people,
        )

    def category_name(self, node: yaml.Node) -> str:
        v = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(v, str) or not v.strip() or len(v.strip()) > 60 or any(ord(ch) < 32 for ch in v):
            raise self.fail(node, f"a category name must be a short piece of text, not {v!r}")
        return v.strip()

    def entries(
        self,
        node: yaml.Node,
        cat: int,
        fine: int,
        class_cat: np.ndarray,
        class_fine: np.ndarray,
        where_listed: dict[int, int],
    ) -> None:
        if isinstance(node, yaml.ScalarNode) and node.value == "":
            return  # an empty category or group
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(
                node, "expected a list of classes (`- 151 Chihuahua`, `- 151-268` or `- Chihuahua`)"
            )
        for item in node.value:
            if not isinstance(item, yaml.ScalarNode):
                raise self.fail(
                    item, "a class entry is one line: `- 151 Chihuahua`, `- 151-268` or `- Chihuahua`"
                )
            line = item.start_mark.line + 1
            for i in self.classes(item):
                if i in where_listed:
                    raise self.fail(
                        item, f"class {i} {self.labels[i]!r} is already listed on line {where_listed[i]}"
                    )
                where_listed[i] = line
                class_cat[i] = cat
                class_fine[i] = fine

    def classes(self, item: yaml.ScalarNode) -> list[int]:
        raw = self.value(item)
        n = len(self.labels)
        if isinstance(raw, bool):
            raise self.fail(item, f"not a class: {raw!r}")
        if isinstance(raw, int):
            if not 0 <= raw < n:
                raise self.fail(item, f"class index {raw} is out of range (the model has classes 0-{n - 1})")
            return [raw]
        text = str(raw).strip()
        if m := _RANGE.match(text):
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi or hi >= n:
                raise self.fail(item, f"class range {text!r} is not within 0-{n - 1}")
            return list(range(lo, hi + 1))
        if m := _INDEX_NAME.match(text):
            i, name = int(m.group(1)), m.group(2).strip()
            if not 0 <= i < n:
                raise self.fail(item, f"class index {i} is out of range (the model has classes 0-{n - 1})")
            if name.casefold() != self.labels[i].casefold():
                raise self.fail(item, f"class {i} is {self.labels[i]!r}, not {name!r}")
            return [i]
        found = self.by_name.get(text.casefold())
        if not found:
            close = difflib.get_close_matches(text, self.labels, n=2)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise self.fail(item, f"no class named {text!r}{hint}")
        return list(found)


# -- deciding ---------------------------------------------------------------------------------------------------


class Categorizer:
    """Turns model outputs (and optional people signals) into album categories under a set of rules."""

    def __init__(self, rules: Rules | None = None) -> None:
        self.rules = rules if rules is not None else load_rules()
        r = self.rules
        k = len(r.categories)
        self._onehot = np.zeros((r.num_classes, k), dtype=np.float64)
        self._onehot[np.arange(r.num_classes), r.class_category] = 1.0
        counts = self._onehot.sum(axis=0)
        # Why divide by the class count: under ImageNet's balanced prior a category's mass grows with its number
        # of classes; a photo album has no reason to prefer animals 398:18 over plants.
        weights = np.array([r.weights.get(c, 1.0) for c in r.categories])
        self._factor = weights * np.maximum(counts, r.prior_floor) ** -r.prior_correction
        self._factor[counts == 0] = 0.0  # user categories and an empty "other" collect nothing here
        self._other = r.categories.index(OTHER)
        self._people = r.categories.index(PEOPLE) if PEOPLE in r.categories else None
        self._fine_onehot = np.zeros((r.num_classes, max(1, len(r.fine_labels))), dtype=np.float64)
        has_fine = r.class_fine >= 0
        self._fine_onehot[np.nonzero(has_fine)[0], r.class_fine[has_fine]] = 1.0
        # The finer labels of each category, found once (per photo it cost more than the rest of the decision).
        self._fine_groups = [
            np.unique(r.class_fine[(r.class_category == c) & has_fine]) for c in range(len(r.categories))
        ]

    # -- inputs ---------------------------------------------------------------------------------------------------

    def dense(self, probs: np.ndarray | TopK) -> np.ndarray:
        """(N, C) float64 probabilities from a full softmax or top-k pairs (classes not stored count as 0)."""
        if isinstance(probs, tuple):
            idx, val = (np.asarray(a) for a in probs)
            if idx.ndim == 1:
                idx, val = idx[None], val[None]
            if idx.shape != val.shape:
                raise ValueError(f"top-k indices {idx.shape} and probabilities {val.shape} differ in shape")
            if idx.size and (idx.min() < 0 or idx.max() >= self.rules.num_classes):
                raise ValueError("top-k class index out of range for these rules")
            out = np.zeros((idx.shape[0], self.rules.num_classes), dtype=np.float64)
            np.put_along_axis(out, idx.astype(np.int64), val.astype(np.float64), axis=1)
            return out
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim == 1:
            p = p[None]
        if p.ndim != 2 or p.shape[1] != self.rules.num_classes:
            raise RulesError(
                f"{self.rules.source}: rules cover {self.rules.num_classes} classes but the model gives {p.shape[-1]}"
            )
        return p

    # -- aggregation ----------------------------------------------------------------------------------------------

    def mass(self, probs: np.ndarray | TopK) -> np.ndarray:
        """(N, K) raw probability mass per category (columns: ``rules.categories``), after the temperature."""
        p = self.dense(probs)
        if self.rules.temperature != 1.0:
            # p ** (1/T) is softmax(logits / T) up to a per-row constant, which the normalisation removes.
            p = np.power(np.clip(p, 0.0, None), 1.0 / self.rules.temperature)
            total = p.sum(axis=1, keepdims=True)
            p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
        return p @ self._onehot

    def scores(self, probs: np.ndarray | TopK) -> np.ndarray:
        """(N, K) weighted, prior-corrected mass, each row summing to 1 (0 for an all-zero row)."""
        s = self.mass(probs) * self._factor
        total = s.sum(axis=1, keepdims=True)
        return np.divide(s, total, out=np.zeros_like(s), where=total > 0)

    def categorize(
        self,
        probs: np.ndarray | TopK,
        people: Sequence[Any | None] | None = None,
        abstract: np.ndarray | None = None,
    ) -> list[CategoryResult]:
        """One :class:`CategoryResult` per row. ``people``: a PeopleSignal (or None) per row, or None for none.
        ``abstract``: the abstract-art detector's probability per row (photosift.album.abstract), or None for none."""
        dense = self.dense(probs)
        scores = self.scores(dense)
        fine_mass = dense @ self._fine_onehot
        category_mass = dense @ self._onehot  # before the temperature, as the finer label compares it
        if people is not None and len(people) != len(scores):
            raise ValueError(f"{len(people)} people signals for {len(scores)} photos")
        if abstract is not None and len(abstract) != len(scores):
            raise ValueError(f"{len(abstract)} abstract scores for {len(scores)} photos")
        # Everything that is a matrix operation is done for the whole batch; only the branching stays per photo
        # (recategorize decides 100,000 photos in chunks of 4096).
        n = len(scores)
        if scores.shape[1]:
            best = scores.argmax(axis=1)
            best_score = scores[np.arange(n), best]
        else:
            best, best_score = np.full(n, self._other), np.zeros(n)
        fine = self._fine_labels(best, category_mass, fine_mass)
        people_score = scores[:, self._people].tolist() if self._people is not None else [0.0] * n
        out = []
        for i, (b, score) in enumerate(zip(best.tolist(), best_score.tolist(), strict=True)):
            out.append(
                self._decide(
                    b,
                    score,
                    fine[i],
                    people_score[i],
                    people[i] if people is not None else None,
                    float(abstract[i]) if abstract is not None else None,
                )
            )
        return out

    def _decide(
        self,
        best: int,
        best_score: float,
        fine: str | None,
        people_score: float,
        signal: Any | None,
        abstract: float | None = None,
    ) -> CategoryResult:
        """One photo: ``best`` category index and its score, its finer label, its people score."""
        r = self.rules
        if best_score >= r.min_confidence and best != self._other:
            result = CategoryResult(r.categories[best], best_score, fine)
        elif best == self._other:
            result = CategoryResult(OTHER, best_score)
        else:
            result = CategoryResult(OTHER, 1.0 - best_score)
        if (
            abstract is not None
            and r.abstract_threshold < 1.0
            and abstract >= r.abstract_threshold
            and result.category != PEOPLE
        ):
            # Abstract art: the softmax is confidently wrong on it, so the detector overrides the classes.
            # Faces (below) still win.
            result = CategoryResult(OTHER, abstract)
        if signal is None or self._people is None:
            return result
        face_area = float(getattr(signal, "face_area", 0.0) or 0.0)
        faces = int(getattr(signal, "faces", 0) or 0)
        if faces == 0:
            return result
        confident_elsewhere = (
            result.category not in (OTHER, PEOPLE) and result.score >= r.people.override_confidence
        )
        if face_area >= r.people.portrait_face_area or (
            face_area >= r.people.min_face_area and not confident_elsewhere
        ):
            score = max(people_score, float(getattr(signal, "person_score", 0.0) or 0.0))
            return CategoryResult(PEOPLE, score, "group" if faces >= 3 else None)
        return result

    def fine_labels(self, categories: Sequence[str], probs: np.ndarray) -> list[str | None]:
        """The finer label of ``categories[i]`` for each photo's full softmax ``probs[i]`` (as :meth:`categorize`
        gives it when that category wins), or None: the whole batch in two matrix products."""
        p = np.asarray(probs, dtype=np.float64).reshape(len(categories), -1)
        index = {c: i for i, c in enumerate(self.rules.categories)}
        best = np.array([index[c] for c in categories], dtype=np.int64)
        return self._fine_labels(best, p @ self._onehot, p @ self._fine_onehot)

    def _fine_labels(
        self, best: np.ndarray, category_mass: np.ndarray, fine_mass: np.ndarray
    ) -> list[str | None]:
        """Per photo, the finer label of its best category that holds at least half of that category's mass, if
        any: one pass per category over the photos whose best it is."""
        out: list[str | None] = [None] * len(best)
        for cat, groups in enumerate(self._fine_groups):
            rows = np.nonzero(best == cat)[0]
            if groups.size == 0 or rows.size == 0:
                continue
            top = groups[fine_mass[rows][:, groups].argmax(axis=1)]
            total = category_mass[rows, cat]
            held = (total > 0) & (fine_mass[rows, top] >= 0.5 * total)
            for row, g in zip(rows[held].tolist(), top[held].tolist(), strict=True):
                out[row] = self.rules.fine_labels[g]
        return out


def page_rules(rules: Rules) -> dict[str, Any]:
    """What a web page needs to decide categories as :class:`Categorizer` does from a softmax alone (the same few
    lines of maths live in web/static/classify.js); faces and the abstract-art head cannot run there."""
    return {
        "source": rules.source,
        "categories": list(rules.categories),
        "other": rules.categories.index(OTHER),
        "class_category": rules.class_category.tolist(),
        "class_fine": rules.class_fine.tolist(),
        "fine_labels": list(rules.fine_labels),
        "weights": [rules.weights.get(c, 1.0) for c in rules.categories],
        "prior_floor": rules.prior_floor,
        "prior_correction": rules.prior_correction,
        "min_confidence": rules.min_confidence,
        "temperature": rules.temperature,
    }


def category_mass(probs: np.ndarray | TopK, rules: Rules | None = None) -> np.ndarray:
    """(N, K) raw probability mass per category of ``rules`` (default: the shipped rules)."""
    return Categorizer(rules).mass(probs)
