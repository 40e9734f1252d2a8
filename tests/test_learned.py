"""The learned category head (photosift.album.learned): features, decisions, the rules' switch, authority."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from photosift.album import learned
from photosift.album.decisions import AlbumClassifier
from photosift.album.people import PeopleSignal
from photosift.album.personal import PersonalHead
from photosift.album.rules import BUILTIN_RULES, PEOPLE, Categorizer, load_rules, parse_rules
from photosift.core.errors import RulesError
from photosift.models.registry import registry

RULES = load_rules()
CATS = list(RULES.categories)
K = len(CATS)
SIDE = len(learned.SIDE_FEATURES)


def one_hot_probs(index: int, rules: object = RULES) -> np.ndarray:
    p = np.full((1, 1000), 0.02 / 999)
    p[0, index] = 0.98
    return p


def mass_head(dim: int = 8) -> learned.CategoryHead:
    """A head that follows the log-mass of each category and sends three faces or more to people."""
    w = np.zeros((K, dim + K + SIDE))
    w[np.arange(K), dim + np.arange(K)] = 1.0  # each category's own log-mass
    w[CATS.index(PEOPLE), dim + K + learned.SIDE_FEATURES.index("face_count")] = 10.0
    return learned.CategoryHead(tuple(CATS), w, np.zeros(K), {"arch": "test"})


def test_shipped_head_fits_both_packaged_models_and_nothing_else() -> None:
    shas = {e.name: e.sha256 for e in registry().values()}
    head = learned.head_for_model(shas["efficientnet-lite0"])
    assert head is not None and learned.head_for_model(shas["efficientnet-lite0-int8"]) is head
    assert learned.head_for_model("0" * 64) is None and learned.head_for_model(None) is None
    assert head.categories == RULES.categories[: len(head.categories)] and head.fits(RULES.categories)
    assert head.dim == 1280 and head.weight.shape == (K, 1280 + K + SIDE)
    assert head.meta["cross_validation"]["chosen"] and head.meta["training"]["corpus_train"] > 400


def test_features_read_the_float16_embedding_row_by_row() -> None:
    """What the catalog stores (float16) gives the same features and probabilities as the float32 output, and
    a photo's probabilities do not depend on the batch it is in (classify vs recategorize)."""
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(5, 1280)).astype(np.float32)
    mass = rng.dirichlet(np.ones(K), size=5)
    people = [None, PeopleSignal(2, 0.02, 0.03, 0.99), None, None, PeopleSignal()]
    abstract = rng.random(5)
    a = learned.raw_features(emb, mass, people, abstract)
    b = learned.raw_features(emb.astype(np.float16), mass, people, abstract)
    assert np.array_equal(a, b) and a.shape == (5, 1280 + K + SIDE)
    assert np.allclose(np.linalg.norm(a[:, :1280], axis=1), 1.0)
    head = learned.load_head()
    assert head is not None
    together = head.probabilities(a)
    alone = np.concatenate([head.probabilities(a[i : i + 1]) for i in range(5)])
    assert np.array_equal(together, alone) and np.allclose(together.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="2 people signals for 5"):
        learned.raw_features(emb, mass, people[:2], abstract)


def test_decide_takes_the_most_probable_category_with_the_rules_finer_label() -> None:
    categorizer = Categorizer(RULES)
    head = mass_head()
    emb = np.ones((3, 8), dtype=np.float32)
    probs = np.concatenate([one_hot_probs(207), one_hot_probs(948), one_hot_probs(207)])  # retriever, apple
    faces = [None, None, PeopleSignal(4, 0.02, 0.06, 0.99)]
    results, posterior = learned.decide(head, categorizer, probs, faces, emb, None)
    assert [(r.category, r.fine) for r in results] == [
        ("animals", "dog"),
        ("food", "fruit"),
        (PEOPLE, "group"),
    ]
    assert results[0].score == pytest.approx(posterior[0, CATS.index("animals")])
    assert np.allclose(posterior.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="8-d embeddings, not 5-d"):
        learned.decide(head, categorizer, probs, faces, np.ones((3, 5)), None)


def test_rules_switch_the_head_on_and_a_users_file_leaves_it_off(tmp_path: Path) -> None:
    text = BUILTIN_RULES.read_text(encoding="utf-8")
    assert RULES.learned_head and "\nlearned_head: on\n" in text
    head = mass_head()
    assert AlbumClassifier(RULES, category_head=head).category_head is head
    without = parse_rules(text.replace("\nlearned_head: on\n", "\n"), "user.yaml")
    off = parse_rules(text.replace("\nlearned_head: on\n", "\nlearned_head: off\n"), "user.yaml")
    assert not without.learned_head and not off.learned_head and off.fingerprint != RULES.fingerprint
    assert AlbumClassifier(without, category_head=head).category_head is None
    with pytest.raises(RulesError, match=r"user.yaml:\d+: learned_head must be `on` or `off`, not 'maybe'"):
        parse_rules(text.replace("\nlearned_head: on\n", "\nlearned_head: maybe\n"), "user.yaml")
    # A head that does not know the rules' categories (renamed by the user) is not used.
    other = learned.CategoryHead(("cats", "dogs"), np.zeros((2, 8 + 2 + SIDE)), np.zeros(2), {})
    assert AlbumClassifier(RULES, category_head=other).category_head is None


def test_the_head_decides_over_the_rules_and_the_personal_head_starts_from_it() -> None:
    """A head that says "people" wherever three faces are seen overrides the rules' animals; without
    embeddings (top-k only) the rules decide."""
    album = AlbumClassifier(RULES, category_head=mass_head())
    faces = [PeopleSignal(3, 0.001, 0.002, 0.99)]
    assert album.categorize(one_hot_probs(207), faces, np.ones((1, 8)))[0].category == PEOPLE
    assert album.categorize(one_hot_probs(207), faces, None)[0].category == "animals"
    rules_only = AlbumClassifier(RULES)
    assert rules_only.categorize(one_hot_probs(207), faces, np.ones((1, 8)))[0].category == "animals"


def test_missing_head_file_means_rules_decide(tmp_path: Path) -> None:
    assert learned.load_head(tmp_path / "none.npz") is None
    bad = tmp_path / "bad.npz"
    np.savez(bad, weight=np.zeros(3))
    assert learned.load_head(bad) is None


def test_head_file_round_trips(tmp_path: Path) -> None:
    head = mass_head()
    head.save(tmp_path / "h.npz")
    again = learned.load_head(tmp_path / "h.npz")
    assert again is not None and again.categories == head.categories and again.meta == {"arch": "test"}
    assert np.array_equal(again.weight, head.weight.astype(np.float32))
    json.dumps(again.meta)


def test_the_model_decides_with_the_learned_head_and_the_personal_head_sits_on_top() -> None:
    """AlbumClassifier.base is the model's decision (stored as the result's category): the learned head's where it
    decides, the rules' otherwise (and for photos without embeddings). A correction of a photo that looks the
    same makes the personal head speak; the model's decision is kept beside it."""
    faces = [PeopleSignal(3, 0.001, 0.002, 0.99)]
    with_head = AlbumClassifier(RULES, category_head=mass_head())
    assert with_head.base(one_hot_probs(207), faces, np.ones((1, 8)), None)[0].category == PEOPLE
    assert (
        AlbumClassifier(RULES).base(one_hot_probs(207), faces, np.ones((1, 8)), None)[0].category == "animals"
    )
    assert with_head.base(one_hot_probs(207), faces, None, None)[0].category == "animals"
    with_head.head = PersonalHead(np.ones((1, 8)), ["our cat"], ["corrected"])
    decided = with_head.categorize(one_hot_probs(207), faces, np.ones((1, 8)), ["another"])[0]
    assert (decided.category, decided.shown) == (PEOPLE, "our cat")
