"""The face signal: real faces found, none on photos without people, thread safety, small faces."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from photosift.album.people import PeopleDetector, PeopleSignal
from photosift.core.errors import ModelError
from photosift.core.imaging import decode, read_bytes
from testkit import DATA

WITH_PEOPLE = ["astronaut.jpg", "grace_hopper.jpg", "camera.png"]
WITHOUT = ["brick.jpg", "chelsea.jpg", "china.jpg", "coffee.jpg", "flower.jpg", "rocket.jpg", "text.png"]


def decoded(name: str) -> Image.Image:
    # As the pipeline has it: DCT-scaled to a shorter side of at least 256 px.
    p = DATA / name
    return decode(read_bytes(p), p, min_side=256)


@pytest.fixture(scope="module")
def detector() -> PeopleDetector:
    return PeopleDetector()


@pytest.mark.parametrize("name", WITH_PEOPLE)
def test_finds_the_face(detector: PeopleDetector, name: str) -> None:
    s = detector.detect(decoded(name))
    assert s.faces == 1
    assert s.person_score > 0.95
    assert 0.005 < s.largest_face == s.face_area < 0.5


@pytest.mark.parametrize("name", WITHOUT)
def test_no_face_where_there_is_none(detector: PeopleDetector, name: str) -> None:
    assert detector.detect(decoded(name)) == PeopleSignal()


def test_face_box_is_on_the_face(detector: PeopleDetector) -> None:
    im = decoded("grace_hopper.jpg")
    (face,) = detector.faces(im)
    cx, cy = (face.x0 + face.x1) / 2 / im.width, (face.y0 + face.y1) / 2 / im.height
    assert 0.3 < cx < 0.7 and 0.15 < cy < 0.55  # her face is in the upper middle of the portrait


def test_scale_invariant_signal(detector: PeopleDetector) -> None:
    im = decoded("grace_hopper.jpg")
    big = im.resize((im.width * 3, im.height * 3))
    a, b = detector.detect(im), detector.detect(big)
    assert b.faces == 1
    assert b.face_area == pytest.approx(a.face_area, rel=0.25)


def test_face_pasted_into_a_scene(detector: PeopleDetector) -> None:
    scene = decoded("china.jpg").resize((1024, 684))
    person = decoded("grace_hopper.jpg")
    for height, found in [(600, True), (60, False)]:  # a face of ~80 px at work size; then ~8 px
        canvas = scene.copy()
        p = person.resize((round(person.width * height / person.height), height))
        canvas.paste(p, (100, 40))
        s = detector.detect(canvas)
        assert (s.faces >= 1) is found, (height, s)


def test_greyscale_and_mirrored(detector: PeopleDetector) -> None:
    im = decoded("astronaut.jpg")
    assert detector.detect(im.convert("L")).faces == 1
    assert detector.detect(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)).faces == 1


def test_tiny_and_empty_images(detector: PeopleDetector) -> None:
    assert detector.detect(Image.new("RGB", (8, 8))) == PeopleSignal()
    assert detector.detect(Image.new("RGB", (300, 200), "white")) == PeopleSignal()


def test_shared_between_threads(detector: PeopleDetector) -> None:
    images = [decoded(n) for n in WITH_PEOPLE + WITHOUT] * 2
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(detector.detect, images))
    assert threaded == [detector.detect(im) for im in images]


def test_signal_round_trips_through_dict() -> None:
    s = PeopleSignal(faces=3, largest_face=0.0123, face_area=0.031, person_score=0.9991)
    assert PeopleSignal.from_dict(s.to_dict()) == PeopleSignal(3, 0.0123, 0.031, 0.9991)
    assert PeopleSignal.from_dict({}) == PeopleSignal()


def test_missing_model_is_a_model_error(tmp_path: Path) -> None:
    det = PeopleDetector(model_dir=tmp_path)
    with pytest.raises(ModelError, match=r"pnet\.onnx: not a loadable ONNX model"):
        det.detect(decoded("astronaut.jpg"))


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        PeopleDetector(work_size=10)
    with pytest.raises(ValueError):
        PeopleDetector(min_face=0)


def test_gate_skips_confident_animals_and_plants_only(detector: PeopleDetector) -> None:
    assert not detector.wanted("animals", 0.9)
    assert not detector.wanted("plants", 0.5)
    assert detector.wanted("animals", 0.45)  # not sure it is an animal: look
    assert detector.wanted("objects", 1.0)  # a uniform or a tripod can have a face above it
    assert PeopleDetector(skip_categories=()).wanted("animals", 1.0)
    # A batch: the category gate and the face gate (per photo; None: no gate for the model) must both agree.
    decided = [SimpleNamespace(category=c, score=0.9) for c in ("animals", "objects", "objects")]
    assert detector.to_search(decided, None) == [False, True, True]
    assert detector.to_search(decided, np.array([True, True, False])) == [False, True, False]


def test_work_image_is_what_the_detector_sees(detector: PeopleDetector) -> None:
    im = decoded("grace_hopper.jpg")
    small = detector.work_image(im)
    assert small.dtype.name == "uint8" and min(small.shape[:2]) == detector.work_size
    assert detector.detect(small) == detector.detect(im)
    assert detector.work_image(im.convert("L")).shape == small.shape


def classify_photos(
    tmp_path: Path, names: tuple[str, ...], db_name: str = "c.db"
) -> tuple[dict[str, str | None], dict[str, dict[str, float] | None]]:
    """Classify these tests/data photos as ``photosift classify`` does; per name, the category and the stored
    face signal (None: not looked)."""
    import shutil

    from photosift.core.catalog import Catalog
    from photosift.core.config import Settings
    from photosift.services import build_pipeline

    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(DATA / name, photos / name)
    settings = Settings(data_dir=tmp_path, db=tmp_path / db_name)
    with Catalog(settings.db_path) as catalog:
        assert build_pipeline(settings, catalog).run([str(photos)]).classified == len(names)
        stored = {
            h: people
            for m in catalog.models()
            for part in catalog.stored_chunks(m.sha256)
            for h, people in zip(part.hashes, part.people, strict=True)
        }
        rows = {Path(r.path).name: r for r in catalog.results()}
        return (
            {n: r.category for n, r in rows.items()},
            {n: stored[catalog.content_hash_of(r.path)] for n, r in rows.items()},
        )


@pytest.mark.slow
def test_pipeline_looks_for_faces_after_the_classifier(tmp_path: Path) -> None:
    """The cat photo (animals, sure) is not searched: its signal is stored as not looked (NULL); the portraits are."""
    categories, signals = classify_photos(tmp_path, ("astronaut.jpg", "grace_hopper.jpg", "chelsea.jpg"))
    assert categories["chelsea.jpg"] == "animals"
    assert signals["chelsea.jpg"] is None
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        assert categories[name] == "people"
        assert signals[name] is not None and signals[name]["faces"] == 1


def test_face_gate_fits_the_packaged_models_only() -> None:
    from photosift.album.facegate import gate_for_model, load_gate
    from photosift.models.registry import registry

    shas = {e.sha256 for e in registry().values() if e.summary.get("arch") == "efficientnet-lite0"}
    assert len(shas) >= 2  # fp32 and int8 share the embedding space the gate was trained in
    assert all(gate_for_model(sha) is not None for sha in shas)
    assert gate_for_model("0" * 64) is None and gate_for_model(None) is None
    gate = load_gate()
    assert gate is not None and 0.0 < gate.threshold < 0.5
    assert gate.wanted(np.zeros((2, 7), "float32")) is None  # another embedding size


@pytest.mark.slow
def test_face_gate_skips_photos_without_face_evidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the gate, the rocket and the coffee cup (no animal, no plant, no face) are not searched — stored as
    not looked (NULL) — while the portraits are, and every category is what searching everything gives."""
    from photosift.album import decisions

    names = ("astronaut.jpg", "grace_hopper.jpg", "rocket.jpg", "coffee.jpg", "camera.png")
    gated_categories, gated = classify_photos(tmp_path, names, "gated.db")
    monkeypatch.setattr(decisions, "gate_for_model", lambda sha: None)
    all_categories, everywhere = classify_photos(tmp_path, names, "everywhere.db")
    assert gated["rocket.jpg"] is None and gated["coffee.jpg"] is None
    assert (
        everywhere["rocket.jpg"]
        == everywhere["coffee.jpg"]
        == {
            "faces": 0,
            "largest_face": 0.0,
            "face_area": 0.0,
            "person_score": 0.0,
        }
    )
    for name in ("astronaut.jpg", "grace_hopper.jpg", "camera.png"):
        signal = gated[name]
        assert signal is not None and signal == everywhere[name] and signal["faces"] >= 1
    assert gated_categories == all_categories


def test_held_image_is_the_small_decode_or_the_work_image(detector: PeopleDetector) -> None:
    """The pipeline holds a DCT-scaled JPEG as decoded (shrinking it costs time most photos never need), a big
    image only at the work size; detecting either gives the same signal."""
    im = decoded("grace_hopper.jpg")
    assert detector.held_image(im) is im
    big = im.resize((im.width * 4, im.height * 4))
    held = detector.held_image(big)
    assert isinstance(held, np.ndarray) and min(held.shape[:2]) == detector.work_size
    assert detector.detect(held) == detector.detect(big)
