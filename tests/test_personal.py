"""The personal head: training, ONNX round trip, user categories, precedence, and the base head."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from photosift.album.personal import HEAD_FILE, base_head, combine, cross_validate, load_head, train_head
from photosift.album.rules import Categorizer, CategoryResult
from photosift.core.errors import ModelError, PhotosiftError

DATA = Path(__file__).parent / "data"
PHOTOS = ["chelsea.jpg", "coffee.jpg", "china.jpg", "flower.jpg", "rocket.jpg", "brick.jpg", "text.png"]


@lru_cache(maxsize=1)
def _model():  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    from photosift.models.registry import resolve_model

    m = resolve_model("efficientnet-lite0")
    return m, ort.InferenceSession(str(m.path), providers=["CPUExecutionProvider"])


def variants(name: str) -> list[Image.Image]:
    """Eight views of one photo (crops, mirror, tint): a small labelled set made from the test images."""
    from photosift.core.imaging import decode, read_bytes

    im = decode(read_bytes(DATA / name), DATA / name, min_side=256)
    w, h = im.size
    out = [im, ImageOps.mirror(im)]
    for box in [(0, 0, 0.8, 0.8), (0.2, 0.2, 1, 1), (0.1, 0, 0.9, 0.9), (0, 0.1, 0.9, 1)]:
        out.append(im.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h))))
    out.append(ImageOps.autocontrast(im))
    out.append(Image.blend(im, Image.new("RGB", im.size, (255, 200, 150)), 0.15))
    return out


@lru_cache(maxsize=1)
def dataset() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(softmax, embeddings, photo name) for 8 views of each test photo."""
    from photosift.core.imaging import to_tensor

    m, sess = _model()
    images, names = [], []
    for n in PHOTOS:
        for v in variants(n):
            images.append(to_tensor(v, m.card.preprocess))
            names.append(n)
    logits, emb = sess.run(["logits", "embedding"], {"input": np.stack(images)})
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), emb, names


def test_user_category_learned_from_corrections(tmp_path: Path) -> None:
    probs, emb, names = dataset()
    cat = Categorizer()
    post = cat.posterior(probs)
    # The user files the cat photo under a category of their own and corrects 5 of its 8 views.
    labels = [
        "our cat" if n == "chelsea.jpg" else cat.categorize(probs[i : i + 1])[0].category
        for i, n in enumerate(names)
    ]
    cat_rows = [i for i, n in enumerate(names) if n == "chelsea.jpg"]
    train = cat_rows[:5] + [i for i, n in enumerate(names) if n != "chelsea.jpg"][::2]
    head = train_head(
        emb[train], [labels[i] for i in train], post[train], cat.rules.categories, library_mean=emb.mean(0)
    )
    assert head.categories[-1] == "our cat"
    held_out = cat_rows[5:]
    assert [c for c, _ in head.predict(emb[held_out], post[held_out])] == ["our cat"] * 3
    others = [i for i, n in enumerate(names) if n != "chelsea.jpg"][1::2]
    assert "our cat" not in [c for c, _ in head.predict(emb[others], post[others])]


def test_save_and_load_round_trip_with_onnxruntime_only(tmp_path: Path) -> None:
    import onnxruntime as ort

    probs, emb, names = dataset()
    cat = Categorizer()
    post = cat.posterior(probs)
    labels = ["receipts" if n == "text.png" else "food" if n == "coffee.jpg" else "animals" for n in names]
    head = train_head(emb, labels, post, cat.rules.categories)
    path = head.save(tmp_path)
    assert path == tmp_path / HEAD_FILE
    expected = head.predict_proba(emb, post)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["probs"], {"embedding": emb.astype(np.float32), "rules": post.astype(np.float32)})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    loaded = load_head(tmp_path)
    assert loaded is not None
    assert loaded.categories == head.categories
    np.testing.assert_allclose(loaded.predict_proba(emb, post), expected, atol=1e-4)
    assert loaded.info["examples"]["receipts"] == 8


def test_load_head_missing_and_corrupt(tmp_path: Path) -> None:
    assert load_head(tmp_path) is None
    (tmp_path / HEAD_FILE).write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="not a photosift personal head"):
        load_head(tmp_path)


def test_head_rejects_other_dimensions_and_rules() -> None:
    probs, emb, _ = dataset()
    cat = Categorizer()
    post = cat.posterior(probs)
    head = train_head(emb[:16], ["animals"] * 8 + ["food"] * 8, post[:16], cat.rules.categories)
    with pytest.raises(ModelError, match="1280-d"):
        head.predict(np.zeros((1, 10)), post[:1])
    with pytest.raises(ModelError, match="rules changed"):
        head.predict(emb[:1], post[:1, :5])


def test_train_head_needs_matching_rows() -> None:
    with pytest.raises(PhotosiftError):
        train_head(np.zeros((3, 4)), ["a", "b"], np.zeros((3, 2)), ["a", "b"])


def test_correction_beats_head_beats_rules() -> None:
    rules = CategoryResult("objects", 0.6, "kitchen")
    assert combine(rules, ("food", 0.9), correction="documents") == CategoryResult("documents", 1.0)
    assert combine(rules, ("food", 0.9)) == CategoryResult("food", 0.9)
    assert combine(rules, ("food", 0.2)) == rules  # not confident: the rules stand
    assert combine(rules, ("objects", 0.8)) == CategoryResult("objects", 0.8, "kitchen")
    assert combine(rules, None) == rules


def test_cross_validate_reports_gain() -> None:
    probs, emb, names = dataset()
    res = cross_validate(emb, names, probs, per_category=3, seeds=2)
    assert set(res) >= {"base", "combined", "gain", "runs"}
    assert 0.0 <= res["base"] <= 1.0 and 0.0 <= res["combined"] <= 1.0
    assert res["gain"] == pytest.approx(res["combined"] - res["base"], abs=1e-3)


def test_base_head_rebuilds_logits_from_embeddings() -> None:
    m, _ = _model()
    probs, emb, _ = dataset()
    w, b = base_head(m.path)
    assert w.shape == (1000, 1280)
    logits = emb.astype(np.float16).astype(np.float32) @ w.T + b  # as stored in the catalog
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    rebuilt = e / e.sum(axis=1, keepdims=True)
    cat = Categorizer()
    assert [r.category for r in cat.categorize(rebuilt)] == [r.category for r in cat.categorize(probs)]
