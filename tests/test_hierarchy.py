"""photosift.find.hierarchy: which ImageNet classes a word denotes by WordNet 3.0, and the data file behind it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from photosift.find import hierarchy as h

ROOT = Path(__file__).resolve().parents[1]
LABELS = json.loads((ROOT / "src" / "photosift" / "models" / "imagenet_labels.json").read_text())
WORDNET = Path("/usr/share/wordnet")


def matching(term: str) -> set[int]:
    return set(h.classes_matching(term))


def test_data_file_has_1000_sorted_unique_wnids() -> None:
    data = h.load()
    wnids = [c["wnid"] for c in data["classes"]]
    assert len(wnids) == 1000 and wnids == sorted(set(wnids))
    assert (wnids[0], wnids[207], wnids[999]) == ("n01440764", "n02099601", "n15075141")
    assert h.synonyms(0) == ["tench", "Tinca tinca"] and h.synonyms(207) == ["golden retriever"]
    assert h.synonyms(999) == ["toilet tissue", "toilet paper", "bathroom tissue"]
    lines = (ROOT / "src/photosift/data/imagenet_wnids.txt").read_text().splitlines()
    committed = [s for s in lines if not s.startswith("#")]
    assert committed == wnids
    for c in data["classes"]:
        assert c["paths"] and all(
            p[-1] == "n00001740" and set(p) <= data["synsets"].keys() for p in c["paths"]
        )


def test_dog_is_every_breed_and_no_cat() -> None:
    assert matching("dog") == set(range(151, 269))
    assert matching("dogs") == matching("dog")
    assert not matching("dog") & set(range(281, 286))


def test_cats_plural_and_big_cats() -> None:
    # WordNet's "cat" is both the domestic cat's genus and "big cat, cat": lions and tigers are cats.
    assert matching("cats") == matching("cat") == set(range(281, 294))
    assert matching("big cat") == set(range(288, 294))


def test_bird_is_the_birds_and_not_airplanes() -> None:
    birds = set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147))
    assert matching("bird") == matching("birds") == birds
    assert not matching("bird") & {404, 417, 895}  # airliner, balloon, warplane


def test_fruit_follows_wordnet() -> None:
    # Granny Smith, strawberry, orange, lemon, fig, pineapple, banana, jackfruit, custard apple, pomegranate.
    edible = set(range(948, 958))
    assert matching("edible fruit") == edible
    # WordNet's "fruit" is the botanical one: acorns, rose hips, buckeyes, ears of corn and rapeseed too.
    assert matching("fruit") == edible | {984, 987, 988, 989, 990, 998}
    assert matching("berries") == {949}


def test_vehicle_follows_wordnet() -> None:
    vehicle = matching("vehicle")
    cars = {436, 468, 511, 609, 627, 656, 717, 751, 817}
    trucks = {555, 569, 864, 867}
    bikes = {444, 665, 670, 671}
    boats = {472, 510, 628, 724, 780, 814}  # vessel -> craft -> vehicle
    assert cars | trucks | bikes | boats | {404} <= vehicle
    # Buses and trains are "public transport", a conveyance but not a vehicle in WordNet.
    buses_trains = {466, 654, 779, 874}
    assert not vehicle & buses_trains
    assert buses_trains | vehicle <= matching("conveyance")
    assert matching("buses") == {654, 779, 874}


def test_multi_word_terms() -> None:
    instruments = matching("musical instrument")
    assert {402, 486, 546, 558, 579, 594, 776, 881, 889} <= instruments  # guitars, pianos, violin, cello, ...
    assert len(instruments) == 26 and not instruments & set(range(400)) and 859 not in instruments
    assert h.classes_matching("Golden Retriever") == {207: h.Match(0, "n02099601", "golden retriever")}
    assert matching("golden retrievers") == matching("golden_retriever") == {207}
    assert matching("hot-dog") == {934}


def test_match_says_how() -> None:
    m = h.classes_matching("dog")
    assert m[207] == h.Match(4, "n02084071", "dog")  # retriever, sporting dog, hunting dog, dog
    assert h.classes_matching("retriever")[207].depth == 1
    depths = h.match_depths("dog")
    assert depths.shape == (1000,) and depths.dtype == np.int16
    assert (depths[151:269] > 0).all() and (np.delete(depths, np.s_[151:269]) == -1).all()
    near = h.ancestors(207)
    assert near[0][:2] == (1, "n02099029") and [a[1] for a in near].count("n02084071") == 1


def test_irregular_plurals() -> None:
    assert matching("geese") == {99}
    assert matching("wolves") == matching("wolf")


@pytest.mark.parametrize(
    "term", ["xyzzy", "", "  ", "entity", "physical entity", "object", "whole", "abstraction"]
)
def test_unknown_and_stop_listed_terms_match_nothing(term: str) -> None:
    assert h.classes_matching(term) == {}


def test_general_terms_that_are_kept() -> None:
    assert len(matching("animal")) == 398 and len(matching("artifact")) == 522


@pytest.mark.skipif(not (WORDNET / "data.noun").exists(), reason="needs Debian's wordnet-base")
def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    out = tmp_path / "label_hierarchy.json"
    tool = ROOT / "tools" / "build_label_hierarchy.py"
    subprocess.run(
        [sys.executable, tool, "--wordnet", WORDNET, "--out", out], check=True, capture_output=True
    )
    assert out.read_bytes() == h.DATA.read_bytes()
