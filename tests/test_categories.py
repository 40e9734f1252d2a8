"""Album categories: the shipped rules, rules-file checking (with line numbers), and the decision itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from photosift.album.people import PeopleSignal
from photosift.album.rules import (
    BUILTIN_RULES,
    OTHER,
    Categorizer,
    CategoryResult,
    category_mass,
    imagenet_labels,
    load_rules,
    parse_rules,
)
from photosift.core.errors import RulesError, UnknownCategory
from testkit import lite0_probs

CATEGORIES = (
    "animals",
    "food",
    "plants",
    "landscape",
    "architecture",
    "vehicles",
    "documents",
    "people",
    "objects",
)


def one_hot(n: int = 1000, **mass: float) -> np.ndarray:
    """A softmax row with the given probability on the named classes and the rest spread evenly."""
    labels = imagenet_labels()
    p = np.zeros(n)
    for name, v in mass.items():
        p[labels.index(name.replace("_", " "))] = v
    rest = 1.0 - p.sum()
    p[p == 0] = rest / (p == 0).sum()
    return p[None]


# -- shipped rules ----------------------------------------------------------------------------------------------


def test_shipped_rules_cover_every_class_once() -> None:
    rules = load_rules()
    assert rules.categories == (*CATEGORIES, OTHER)
    assert rules.num_classes == 1000
    assert (rules.class_category >= 0).all()
    assert sum(len(rules.classes_of(c)) for c in rules.categories) == 1000


@pytest.mark.parametrize(
    ("index", "category", "fine"),
    [
        (151, "animals", "dog"),  # Chihuahua
        (268, "animals", "dog"),  # Mexican hairless dog
        (281, "animals", "cat"),  # tabby
        (145, "animals", "bird"),  # king penguin
        (963, "food", "dish"),  # pizza
        (948, "food", "fruit"),  # Granny Smith
        (945, "food", "vegetable"),  # bell pepper
        (985, "plants", "flower"),  # daisy
        (997, "plants", "fungus"),  # bolete
        (970, "landscape", "mountain"),  # alp
        (978, "landscape", "water"),  # seashore
        (698, "architecture", "building"),  # palace
        (497, "architecture", "building"),  # church
        (817, "vehicles", "car"),  # sports car
        (404, "vehicles", "aircraft"),  # airliner
        (916, "documents", None),  # web site
        (922, "documents", None),  # menu
        (549, "documents", None),  # envelope
        (983, "people", None),  # scuba diver
        (610, "objects", "clothing"),  # T-shirt
        (971, "other", "pattern"),  # bubble
    ],
)
def test_shipped_rules_map_classes_by_meaning(index: int, category: str, fine: str | None) -> None:
    rules = load_rules()
    assert rules.categories[rules.class_category[index]] == category
    got = rules.fine_labels[rules.class_fine[index]] if rules.class_fine[index] >= 0 else None
    assert got == fine


def test_every_dog_breed_is_a_dog() -> None:
    rules = load_rules()
    dog = [rules.fine_labels[rules.class_fine[i]] for i in range(151, 269)]
    assert set(dog) == {"dog"}


def test_shipped_file_is_readable_yaml_with_names() -> None:
    text = BUILTIN_RULES.read_text()
    assert "- 151 Chihuahua" in text
    assert "min_confidence:" in text and "prior_correction:" in text


# -- rules-file errors name the file and the line ------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "categories.yaml"
    p.write_text(text)
    return p


def minimal(body: str = "", extra: str = "") -> str:
    return f"version: 1\n{extra}unmapped: objects\ncategories:\n  objects:\n    - 0 tench\n{body}"


def test_user_file_with_unmapped_loads(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, minimal("  animals:\n    dog:\n      - 151-268\n")))
    assert rules.categories == ("objects", "animals", OTHER)
    assert rules.categories[rules.class_category[200]] == "animals"
    assert rules.categories[rules.class_category[5]] == "objects"


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\ncategories:\n  animals:\n    - 1 goldfish\n   - 2 great white shark\n")
    with pytest.raises(RulesError, match=rf"{p.name}:5: not valid YAML"):
        load_rules(p)


def test_unknown_setting_is_reported_with_line_and_suggestion(tmp_path: Path) -> None:
    p = write(tmp_path, minimal(extra="min_confidance: 0.4\n"))
    with pytest.raises(
        RulesError, match=r":2: unknown setting 'min_confidance'; did you mean 'min_confidence'"
    ):
        load_rules(p)


def test_duplicate_class_names_both_lines(tmp_path: Path) -> None:
    p = write(tmp_path, minimal("  animals:\n    - 0\n"))
    with pytest.raises(RulesError, match=r":7: class 0 'tench' is already listed on line 5"):
        load_rules(p)


def test_index_out_of_range(tmp_path: Path) -> None:
    p = write(tmp_path, minimal("  animals:\n    - 1000\n"))
    with pytest.raises(RulesError, match=r":7: class index 1000 is out of range"):
        load_rules(p)


def test_name_must_match_index(tmp_path: Path) -> None:
    p = write(tmp_path, minimal("  animals:\n    - 151 Chihuahaua\n"))
    with pytest.raises(RulesError, match=r":7: class 151 is 'Chihuahua', not 'Chihuahaua'"):
        load_rules(p)


def test_unknown_class_name_suggests(tmp_path: Path) -> None:
    p = write(tmp_path, minimal("  animals:\n    - goldfsh\n"))
    with pytest.raises(RulesError, match=r":7: no class named 'goldfsh'; did you mean 'goldfish'"):
        load_rules(p)


def test_missing_classes_are_listed(tmp_path: Path) -> None:
    p = write(tmp_path, "categories:\n  animals:\n    - 0-9\n")
    with pytest.raises(
        RulesError, match=r":1: 990 of the model's 1000 classes are in no category \(10 'brambling'"
    ):
        load_rules(p)


def test_weights_must_name_a_category(tmp_path: Path) -> None:
    p = write(tmp_path, minimal(extra="weights:\n  objcts: 0.5\n"))
    with pytest.raises(RulesError, match=r":3: weights: unknown category 'objcts'"):
        load_rules(p)


def test_bad_number(tmp_path: Path) -> None:
    p = write(tmp_path, minimal(extra="min_confidence: high\n"))
    with pytest.raises(RulesError, match=r":2: min_confidence must be a number from 0 to 1"):
        load_rules(p)


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="not found"):
        load_rules(tmp_path / "nope.yaml")
    with pytest.raises(RulesError, match="empty"):
        load_rules(write(tmp_path, ""))


def test_user_categories_and_check_category(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, minimal(extra="user_categories: [receipts, our cat]\n")))
    assert rules.categories[-2:] == ("receipts", "our cat")
    assert rules.check_category("our cat") == "our cat"
    assert rules.check_category("holidays", extra=["holidays"]) == "holidays"
    with pytest.raises(UnknownCategory, match="did you mean 'receipts'"):
        rules.check_category("reciepts")


def test_fingerprint_changes_with_rules(tmp_path: Path) -> None:
    a = parse_rules(minimal())
    b = parse_rules(minimal(extra="min_confidence: 0.5\n"))
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == parse_rules(minimal()).fingerprint


# -- deciding -----------------------------------------------------------------------------------------------------


def test_real_photos() -> None:
    probs = lite0_probs(["chelsea.jpg", "coffee.jpg", "china.jpg", "flower.jpg", "text.png", "rocket.jpg"])
    got = Categorizer().categorize(probs)
    assert [r.category for r in got] == ["animals", "food", "architecture", "plants", "documents", "vehicles"]
    assert got[0].fine == "cat"
    assert all(0.0 <= r.score <= 1.0 for r in got)


def test_people_signal_makes_portraits_people() -> None:
    probs = lite0_probs(["grace_hopper.jpg", "astronaut.jpg", "chelsea.jpg"])
    cat = Categorizer()
    without = [r.category for r in cat.categorize(probs)]
    assert "people" not in without  # ImageNet sees a uniform and a helmet, not a person
    signals = [PeopleSignal(1, 0.13, 0.13, 1.0), PeopleSignal(1, 0.04, 0.04, 1.0), None]
    got = cat.categorize(probs, signals)
    assert [r.category for r in got] == ["people", "people", "animals"]


def test_small_face_does_not_beat_a_confident_category() -> None:
    cat = Categorizer()
    probs = one_hot(Egyptian_Mau=0.6, tabby_cat=0.35)
    small = PeopleSignal(faces=1, largest_face=0.004, face_area=0.004, person_score=0.99)
    assert cat.categorize(probs, [small])[0].category == "animals"
    vague = one_hot(tabby_cat=0.05)
    assert cat.categorize(vague, [small])[0].category == "people"
    group = PeopleSignal(faces=4, largest_face=0.01, face_area=0.04, person_score=1.0)
    assert cat.categorize(probs, [group])[0] == CategoryResult("people", 1.0, "group")


def test_aggregated_mass_beats_top1() -> None:
    # Top class is "whistle" (objects), but most of the mass is on fish classes.
    probs = one_hot(whistle=0.3, clownfish=0.2, rock_beauty_fish=0.2, lionfish=0.15, pufferfish=0.1)
    r = Categorizer().categorize(probs)[0]
    assert (r.category, r.fine) == ("animals", "fish")


def test_diffuse_softmax_is_other() -> None:
    probs = np.full((1, 1000), 1e-3)
    r = Categorizer().categorize(probs)[0]
    assert r.category == OTHER and r.fine is None


def test_topk_pairs_give_the_same_answer_as_full_softmax() -> None:
    probs = lite0_probs(["chelsea.jpg", "coffee.jpg", "china.jpg", "flower.jpg"])
    cat = Categorizer()
    full = cat.categorize(probs)
    idx = np.argsort(-probs, axis=1)[:, :100]
    stored = (idx.astype(np.int16), np.take_along_axis(probs, idx, axis=1).astype(np.float16))
    again = cat.categorize(stored)
    assert [r.category for r in again] == [r.category for r in full]


def test_mass_and_scores_shapes() -> None:
    probs = lite0_probs(["coffee.jpg"])
    cat = Categorizer()
    mass = category_mass(probs)
    assert mass.shape == (1, len(cat.rules.categories))
    assert mass.sum() == pytest.approx(1.0, abs=1e-5)
    assert cat.scores(probs).sum() == pytest.approx(1.0)


def test_wrong_class_count_is_a_rules_error() -> None:
    with pytest.raises(RulesError, match="rules cover 1000 classes but the model gives 10"):
        Categorizer().categorize(np.full((1, 10), 0.1))


def test_people_list_must_match_rows() -> None:
    with pytest.raises(ValueError):
        Categorizer().categorize(np.full((2, 1000), 1e-3), [None])


def test_temperature_and_weights_change_the_decision(tmp_path: Path) -> None:
    text = BUILTIN_RULES.read_text().replace("  objects: 0.5", "  objects: 50")
    heavy = load_rules(write(tmp_path, text))
    probs = one_hot(whistle=0.3, clownfish=0.2, rock_beauty_fish=0.2, lionfish=0.15, pufferfish=0.1)
    assert Categorizer(heavy).categorize(probs)[0].category == "objects"
