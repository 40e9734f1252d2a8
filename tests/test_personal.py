"""The personal head on real embeddings: it moves near-duplicates of a corrected photo and nothing else; the
embedding index finds exactly those neighbours and caches itself by catalog state; the user protocol."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from photosift.album.neighbours import EmbeddingIndex
from photosift.album.personal import (
    SIMILARITY,
    PersonalHead,
    base_head,
    cached_base_head,
    simulate_users,
    unit,
)
from photosift.album.rules import Categorizer
from photosift.core.catalog import Catalog, ResultRecord
from photosift.core.errors import ModelError
from photosift.models.tasks import softmax
from testkit import DATA, lite0_engine

PHOTOS = ["chelsea.jpg", "coffee.jpg", "china.jpg", "flower.jpg", "rocket.jpg", "brick.jpg", "text.png"]


def variants(name: str) -> list[Image.Image]:
    """Eight views of one photo (crops, mirror, tint): near-duplicates, as a burst or an edit would make."""
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

    engine = lite0_engine()
    images, names = [], []
    for n in PHOTOS:
        for v in variants(n):
            images.append(to_tensor(v, engine.card.preprocess))
            names.append(n)
    out = engine.run(np.stack(images))
    return softmax(out["logits"]), out["embedding"], names


def test_a_correction_moves_near_duplicates_and_abstains_elsewhere() -> None:
    _, emb, names = dataset()
    cat = [i for i, n in enumerate(names) if n == "chelsea.jpg"]
    others = [i for i, n in enumerate(names) if n != "chelsea.jpg"]
    head = PersonalHead(emb[cat[:1]], ["our cat"], ["h0"])
    moved = head.decide(emb[cat[1:]])
    assert all(d is not None and d.category == "our cat" and d.source == "h0" for d in moved)
    assert all(d is not None and d.similarity >= SIMILARITY for d in moved)
    assert head.decide(emb[others]) == [None] * len(others)  # no other photo is anywhere near


def test_the_nearest_correction_wins_and_a_photo_never_follows_itself() -> None:
    _, emb, names = dataset()
    cat = [i for i, n in enumerate(names) if n == "chelsea.jpg"]
    coffee = [i for i, n in enumerate(names) if n == "coffee.jpg"]
    head = PersonalHead(emb[[cat[0], coffee[0]]], ["animals", "mornings"], ["cat", "cup"])
    got = head.decide(emb[[cat[1], coffee[1]]])
    assert [d.category if d else None for d in got] == ["animals", "mornings"]
    # The corrected photos themselves: only the other correction could speak, and it is far away.
    assert head.decide(emb[[cat[0], coffee[0]]], hashes=["cat", "cup"]) == [None, None]


def test_the_head_rejects_embeddings_of_another_model() -> None:
    _, emb, _ = dataset()
    head = PersonalHead(emb[:2], ["animals", "food"], ["a", "b"])
    with pytest.raises(ModelError, match="1280-d"):
        head.decide(np.zeros((1, 10), np.float32))
    assert PersonalHead(None, [], []).decide(emb[:3]) == [None, None, None]


def _catalog_with(tmp_path: Path, emb: np.ndarray, model: str = "m" * 64) -> Catalog:
    cat = Catalog(tmp_path / "c.db")
    cat.register_model(model, "test", ["a"], task="embed")
    records = [ResultRecord(f"{i:064x}", None, e, None, None) for i, e in enumerate(emb)]
    cat.write_batch([], records, model, ["a"])
    return cat


def test_embedding_index_finds_exactly_the_neighbours_within_the_gate(tmp_path: Path) -> None:
    _, emb, _ = dataset()
    with _catalog_with(tmp_path, emb) as cat:
        index = EmbeddingIndex.open(cat, "m" * 64, tmp_path / "index")
        stored = unit(emb.astype(np.float16))
        for row in (0, 9, 33):
            hashes, vectors = index.near(emb[row].astype(np.float16), SIMILARITY)
            expected = {f"{i:064x}" for i in np.nonzero(stored @ stored[row] >= SIMILARITY)[0]}
            assert set(hashes) == expected and f"{row:064x}" in expected
            assert vectors.shape == (len(hashes), emb.shape[1])


def test_embedding_index_is_cached_in_segments_by_catalog_state(tmp_path: Path) -> None:
    _, emb, _ = dataset()
    cache, model = tmp_path / "index", "m" * 64

    def files() -> list[str]:
        return sorted(p.name.split(model[:16] + "-")[1] for p in cache.iterdir())

    with _catalog_with(tmp_path, emb[:40]) as cat:
        assert len(EmbeddingIndex.open(cat, model, cache)) == 40
        assert files() == ["0-40.hashes.npy", "0-40.npy"]
        EmbeddingIndex._opened.clear()  # a new process: the cache is memory-mapped, the catalog not read
        again = EmbeddingIndex.open(cat, model, cache)
        assert [type(s.matrix) for s in again.segments] == [np.memmap]
        # A scan adds a photo: only a segment for the new rowids is built.
        cat.write_batch([], [ResultRecord("f" * 64, None, emb[40], None, None)], model, ["a"])
        grown = EmbeddingIndex.open(cat, model, cache)
        assert len(grown) == 41 and "f" * 64 in grown.near(emb[40].astype(np.float16))[0]
        assert files() == ["0-40.hashes.npy", "0-40.npy", "40-41.hashes.npy", "40-41.npy"]
        # A replaced embedding (new rowid, its old range one row short): that segment and the rest are rebuilt.
        cat.write_batch([], [ResultRecord(f"{0:064x}", None, emb[41], None, None)], model, ["a"])
        rebuilt = EmbeddingIndex.open(cat, model, cache)
        assert files() == ["0-42.hashes.npy", "0-42.npy"] and len(rebuilt) == 41
        assert f"{0:064x}" in rebuilt.near(emb[41].astype(np.float16))[0]


def test_user_protocol_measures_the_change_on_photos_not_corrected() -> None:
    _, emb, names = dataset()
    truth = ["animals" if n == "chelsea.jpg" else "other" for n in names]
    # Rules that got every cat view wrong: correcting one fixes its near-duplicates, nothing else moves.
    rules = ["food" if n == "chelsea.jpg" else "other" for n in names]
    wrong = simulate_users(truth, rules, emb, pick="wrong", k_max=10, trials=5)
    assert wrong.shape == (5, 10)
    # After k of the 8 cat views, the other 8 - k are fixed: (8 - k) of the 56 - k photos not corrected.
    k = np.arange(1, 9)
    np.testing.assert_allclose(wrong[:, :8], np.tile(100 * (8 - k) / (56 - k), (5, 1)))
    assert np.isnan(wrong[:, 8:]).all()  # only 8 wrong photos to pick
    never = simulate_users(truth, rules, emb, pick="random", k_max=5, trials=3, similarity=1.01)
    assert np.all(never == 0)  # a gate nothing passes changes nothing


# The test photos' album categories, by looking at them (a brick texture has no honest one: left out).
TRUTH = {
    "chelsea.jpg": "animals",
    "coffee.jpg": "food",
    "china.jpg": "architecture",
    "flower.jpg": "plants",
    "rocket.jpg": "vehicles",
    "text.png": "documents",
}


def test_honest_users_never_make_the_other_photos_worse() -> None:
    """The shipping rule on a small real setting: eight views of each test photo, the rules' own decisions
    (some rocket views read as architecture), users correcting wrong photos (or any photo) to their true
    category in random orders: the photos not corrected never get worse on average, no trial loses more than
    a point, and corrections do help (the wrong views follow a corrected view of the same photo)."""
    probs, emb, names = dataset()
    keep = [i for i, n in enumerate(names) if n in TRUTH]
    truth = [TRUTH[names[i]] for i in keep]
    rules = [r.category for r in Categorizer().categorize(probs[keep])]
    wrong = sum(t != r for t, r in zip(truth, rules, strict=True))
    assert 0 < wrong < len(keep) // 2  # something to correct, and most photos right: something to lose
    for pick in ("wrong", "random"):
        changes = simulate_users(truth, rules, emb[keep], pick=pick, k_max=10, trials=50, seed=1)
        changes = changes[:, : wrong if pick == "wrong" else 10]  # k beyond the wrong photos: nothing to pick
        assert not np.isnan(changes).any()
        assert np.nanmin(np.nanmean(changes, axis=0)) >= 0.0 and np.nanmin(changes) >= -1.0, pick
        assert np.nanmean(changes[:, 0]) > 0.0, pick
    # The gate is what keeps it so: without it, one correction drags unrelated photos along.
    ungated = simulate_users(truth, rules, emb[keep], pick="wrong", k_max=3, trials=20, similarity=-1.0)
    assert np.nanmin(ungated) < -1.0


def test_base_head_rebuilds_logits_from_embeddings() -> None:
    probs, emb, _ = dataset()
    w, b = base_head(lite0_engine().model.path)
    assert w.shape == (1000, 1280)
    rebuilt = softmax(emb.astype(np.float16).astype(np.float32) @ w.T + b)  # as stored in the catalog
    cat = Categorizer()
    assert [r.category for r in cat.categorize(rebuilt)] == [r.category for r in cat.categorize(probs)]


def test_classifier_weights_are_cached_by_model_hash(tmp_path: Path) -> None:
    """recategorize reads the weights from the cache after the first time (the onnx import costs 0.6 s), and a
    damaged cache file is read from the model again and rewritten."""
    model = lite0_engine().model
    w, b = base_head(model.path)
    cache = tmp_path / "index"
    first = cached_base_head(model.path, model.sha256, cache)
    (saved,) = cache.glob("classifier-*.npz")
    assert model.sha256[:32] in saved.name
    # The cache, not the model file, answers now: a model path that no longer exists still gives the weights.
    again = cached_base_head(tmp_path / "gone.onnx", model.sha256, cache)
    for got in (first, again):
        np.testing.assert_array_equal(got[0], w)
        np.testing.assert_array_equal(got[1], b)
    saved.write_bytes(b"not an npz")
    repaired = cached_base_head(model.path, model.sha256, cache)
    np.testing.assert_array_equal(repaired[0], w)
    with np.load(saved) as z:
        np.testing.assert_array_equal(z["bias"], b)
