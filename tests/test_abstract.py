"""The abstract-art detector (photosift.album.abstract) and the rules' ``abstract_threshold``."""

from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from photosift.album.abstract import head_for_model, load_head
from photosift.album.decisions import AlbumClassifier
from photosift.album.people import PeopleSignal
from photosift.album.rules import BUILTIN_RULES, OTHER, Categorizer, load_rules, parse_rules
from photosift.core.errors import RulesError
from testkit import DATA, lite0_engine
from testkit import PHOTOS as TEST_PHOTOS

PHOTOS = [p.name for p in TEST_PHOTOS]


def generated_abstract() -> bytes:
    """A blurred-blobs-on-a-gradient wallpaper, the kind the softmax calls an object."""
    w, h = 640, 480
    y, x = np.mgrid[0:h, 0:w] / 640.0
    t = np.clip(x * 0.8 + y * 0.6, 0, 1)[..., None]
    arr = np.array([200, 40, 120]) * (1 - t) + np.array([30, 90, 220]) * t
    im = Image.fromarray(arr.astype(np.uint8))
    d = ImageDraw.Draw(im)
    for cx, cy, r, c in [
        (150, 120, 90, (250, 200, 40)),
        (420, 300, 140, (40, 200, 160)),
        (520, 90, 60, (250,) * 3),
    ]:
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=c)
    buf = io.BytesIO()
    im.filter(ImageFilter.GaussianBlur(25)).save(buf, "PNG")
    return buf.getvalue()


@lru_cache(maxsize=1)
def outputs() -> tuple[np.ndarray, np.ndarray, str]:
    """(softmax, embedding, model sha256) for the generated image followed by every photo in tests/data."""
    from photosift.core.imaging import decode, load_tensor, to_tensor
    from photosift.models.tasks import softmax

    engine = lite0_engine()
    x = [to_tensor(decode(generated_abstract(), "gen.png", min_side=256), engine.card.preprocess)]
    x += [load_tensor(p, engine.card.preprocess) for p in TEST_PHOTOS]
    out = engine.run(np.stack(x))
    return softmax(out["logits"]), out["embedding"], engine.model.sha256


def test_head_ships_and_is_tied_to_its_model() -> None:
    emb, sha = outputs()[1:]
    head = head_for_model(sha)
    assert head is not None and head.dim == emb.shape[1]
    assert head_for_model("0" * 64) is None  # another model's embedding space: no detector
    assert head_for_model(None) is None
    assert head.scores(np.zeros((2, 7), dtype=np.float32)) is None  # wrong width: no scores


def test_generated_abstract_becomes_other_photos_keep_their_category() -> None:
    probs, emb, sha = outputs()
    rules = load_rules()
    assert rules.abstract_threshold < 1.0
    with_detector = AlbumClassifier(rules, abstract=head_for_model(sha)).categorize(probs, None, emb)
    without = AlbumClassifier(rules).categorize(probs, None, emb)
    assert without[0].category != OTHER  # what the softmax alone says (an object)
    assert with_detector[0].category == OTHER
    assert with_detector[0].score >= rules.abstract_threshold
    # Every real photo in tests/data keeps the category the rules give it.
    assert [r.category for r in with_detector[1:]] == [r.category for r in without[1:]]
    assert dict(zip(PHOTOS, [r.category for r in with_detector[1:]], strict=True))["chelsea.jpg"] == "animals"


def test_faces_still_win_over_the_detector() -> None:
    probs = outputs()[0]
    scores = np.array([0.99])
    assert Categorizer().categorize(probs[:1], None, scores)[0].category == OTHER
    portrait = PeopleSignal(faces=1, face_area=0.2, person_score=0.9)
    got = Categorizer().categorize(probs[:1], [portrait], scores)
    assert got[0].category == "people"


def test_scores_are_those_of_the_stored_float16_embedding() -> None:
    # recategorize reads the float16 embedding from the catalog; classify must give the same number.
    _, emb, sha = outputs()
    head = head_for_model(sha)
    assert head is not None
    a = head.scores(emb)
    b = head.scores(emb.astype(np.float16))
    c = np.concatenate([head.scores(emb[i : i + 1]) for i in range(len(emb))])  # type: ignore[misc]
    assert a is not None and np.array_equal(a, b) and np.array_equal(a, c)


def test_threshold_one_or_off_disables(tmp_path: Path) -> None:
    probs, emb, sha = outputs()
    base = "version: 1\n{}unmapped: objects\ncategories:\n  objects:\n    - 0 tench\n"
    for setting in ("abstract_threshold: off\n", "abstract_threshold: 1\n", ""):
        rules = parse_rules(base.format(setting))
        assert rules.abstract_threshold == 1.0
        got = AlbumClassifier(rules, abstract=head_for_model(sha)).categorize(probs[:1], None, emb[:1])
        assert got[0].category == "objects"
    on = parse_rules(base.format("abstract_threshold: 0.9\n"))
    assert on.abstract_threshold == 0.9
    assert on.fingerprint != parse_rules(base.format("")).fingerprint


@pytest.mark.parametrize("value", ["0.2", "high", "yes", "1.5"])
def test_bad_threshold_names_the_line(value: str) -> None:
    text = f"version: 1\nabstract_threshold: {value}\nunmapped: objects\ncategories:\n  objects:\n    - 0 tench\n"
    with pytest.raises(RulesError, match=r"<rules>:2: abstract_threshold must be a number from 0.5 to 1"):
        parse_rules(text)


def test_missing_head_file_means_no_detector(tmp_path: Path) -> None:
    assert load_head(tmp_path / "none.npz") is None


def test_classify_then_recategorize_agree(tmp_path: Path) -> None:
    """End to end: `classify` files the generated art under other, the photos elsewhere, and `recategorize` from
    the catalog's float16 embeddings gives the same answers; switching the detector off gives the object back."""
    from typer.testing import CliRunner

    from photosift.album.decisions import recategorize
    from photosift.cli import app
    from photosift.core.catalog import Catalog

    runner = CliRunner()
    photos = tmp_path / "lib"
    photos.mkdir()
    (photos / "art.png").write_bytes(generated_abstract())
    for name in ("chelsea.jpg", "coffee.jpg", "rocket.jpg"):
        (photos / name).write_bytes((DATA / name).read_bytes())
    db = tmp_path / "c.db"
    res = runner.invoke(app, ["classify", str(photos), "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output

    def categories() -> dict[str, str]:
        out = runner.invoke(app, ["results", "--db", str(db), "--format", "json"])
        return {Path(i["path"]).name: i["category"] for i in json.loads(out.stdout)}

    before = categories()
    assert before == {
        "art.png": OTHER,
        "chelsea.jpg": "animals",
        "coffee.jpg": "food",
        "rocket.jpg": "vehicles",
    }
    with Catalog(db) as cat:
        assert recategorize(cat, lambda _labels: load_rules()).changed == 0
        text = BUILTIN_RULES.read_text(encoding="utf-8")
        assert "\nabstract_threshold: 0.78\n" in text
        # The learned head reads the detector's score as one of its inputs, whatever the threshold; with the head
        # off too, the rules alone decide and the generated art is an object again.
        off = parse_rules(
            text.replace("\nabstract_threshold: 0.78\n", "\nabstract_threshold: off\n").replace(
                "\nlearned_head: on\n", "\nlearned_head: off\n"
            )
        )
        assert off.abstract_threshold == 1.0 and not off.learned_head
        report = recategorize(cat, lambda _labels: off)
    assert report.changed == 1
    assert categories()["art.png"] != OTHER
