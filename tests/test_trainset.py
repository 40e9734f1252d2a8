"""Training data (toolchain/trainset.py): sources, counts and their errors, unreadable and duplicate photos,
the split, the fingerprint, augmented views. Real files in tmp dirs, real decoding; no torch needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photosift.core.errors import ToolchainError
from photosift.core.imaging import Preprocess, load_tensor
from photosift.toolchain.trainset import (
    MIN_PER_CLASS,
    Views,
    augment,
    from_csv,
    from_folders,
    load_photos,
    split,
)

DATA = Path(__file__).parent / "data"
PRE = Preprocess(32, 36, (127.0,) * 3, (128.0,) * 3)


def coloured(path: Path, rgb: tuple[int, int, int], seed: int, size: int = 48) -> Path:
    """A photo-like image: a colour with noise and a darker square somewhere (seeded)."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(rgb) + rng.normal(0, 20, (size, size, 3)), 0, 255)
    x, y = rng.integers(0, size // 2, 2)
    arr[y : y + size // 3, x : x + size // 3] *= 0.5
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def two_classes(root: Path, n: int = 4) -> Path:
    for i in range(n):
        coloured(root / "red" / f"r{i}.png", (200, 40, 40), i)
        coloured(root / "blue" / f"b{i}.png", (40, 40, 200), 100 + i)
    return root


def test_folders_give_classes_and_files(tmp_path: Path) -> None:
    data = from_folders(two_classes(tmp_path / "d"))
    assert data.classes == ["blue", "red"] and data.counts() == {"blue": 4, "red": 4}
    assert data.origin == f"folder {tmp_path / 'd'}"


def test_a_single_class_is_an_error_with_the_counts(tmp_path: Path) -> None:
    coloured(tmp_path / "d" / "only" / "a.png", (1, 2, 3), 0)
    coloured(tmp_path / "d" / "only" / "b.png", (1, 2, 3), 1)
    with pytest.raises(ToolchainError, match=r"at least two classes, found 1 \(only 2\)"):
        load_photos(from_folders(tmp_path / "d"), [PRE])


def test_an_empty_class_folder_is_an_error(tmp_path: Path) -> None:
    two_classes(tmp_path / "d")
    (tmp_path / "d" / "green").mkdir()
    with pytest.raises(ToolchainError, match=r"'green' has no images; counts: blue 4, red 4"):
        from_folders(tmp_path / "d")


def test_too_few_photos_is_an_error_with_every_count(tmp_path: Path) -> None:
    two_classes(tmp_path / "d")
    coloured(tmp_path / "d" / "green" / "g.png", (40, 200, 40), 7)
    with pytest.raises(ToolchainError) as err:
        load_photos(from_folders(tmp_path / "d"), [PRE])
    assert f"too few photos in 'green' (need at least {MIN_PER_CLASS}" in str(err.value)
    assert "counts: blue 4, green 1, red 4" in str(err.value)


def test_unreadable_photos_are_skipped_and_duplicates_dropped(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "d")
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    shutil.copy2(root / "blue" / "b0.png", root / "blue" / "copy-of-b0.png")
    loose = coloured(root / "loose.png", (0, 0, 0), 9)
    data = from_folders(root)
    assert any("directly in" in n for n in data.notes) and loose not in [f.path for f in data.files]
    photos = load_photos(data, [PRE])
    assert photos.counts() == {"blue": 4, "red": 4}
    assert [Path(p).name for p, _ in photos.skipped] == ["broken.jpg"]
    assert photos.skipped[0][1] == "not a recognised image format"
    assert photos.duplicates == 1


def test_a_class_left_too_small_by_unreadable_photos_is_an_error(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "d")
    for name in ("x.jpg", "y.jpg"):
        (root / "green" / name).parent.mkdir(exist_ok=True)
        (root / "green" / name).write_bytes(b"not an image")
    with pytest.raises(ToolchainError, match=r"after skipping 2 unreadable.*too few photos in 'green'"):
        load_photos(from_folders(root), [PRE])


def test_the_inference_view_is_what_classify_feeds_the_model(tmp_path: Path) -> None:
    photos = load_photos(from_folders(two_classes(tmp_path / "d")), [PRE])
    views = Views(PRE, 0, seed=0)
    p = photos.photos[0]
    np.testing.assert_array_equal(views.batch([p], [0])[0], load_tensor(p.path, PRE))


def test_csv_source_and_unlabelled_rows(tmp_path: Path) -> None:
    two_classes(tmp_path / "images")
    rows = ["file,category", "red/r0.png,red", "red/r1.png,red", "blue/b0.png,blue", "blue/b1.png,blue"]
    (tmp_path / "labels.csv").write_text("\n".join([*rows, "blue/b2.png,"]) + "\n")
    data = from_csv(tmp_path / "labels.csv")  # images/ beside the CSV, as photosift eval reads it
    assert data.counts() == {"blue": 2, "red": 2}
    assert data.unlabelled == [tmp_path / "images" / "blue" / "b2.png"]


def test_split_is_stratified_seeded_and_keeps_a_training_photo() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
    train, val = split(labels, 0.2, seed=3)
    assert sorted([*train, *val]) == list(range(len(labels)))
    assert [int((labels[val] == c).sum()) for c in range(3)] == [2, 1, 1]
    assert all((labels[train] == c).any() for c in range(3))
    again, val_again = split(labels, 0.2, seed=3)
    assert (again == train).all() and (val_again == val).all()
    assert not (split(labels, 0.2, seed=4)[1] == val).all()
    assert len(split(labels, 0.0, seed=3)[1]) == 0


def test_fingerprint_follows_content_and_labels_not_names(tmp_path: Path) -> None:
    a = load_photos(from_folders(two_classes(tmp_path / "a")), [PRE]).fingerprint()
    two_classes(tmp_path / "b")
    (tmp_path / "b" / "red" / "r0.png").rename(tmp_path / "b" / "red" / "renamed.png")
    assert load_photos(from_folders(tmp_path / "b"), [PRE]).fingerprint() == a
    (tmp_path / "b" / "red" / "renamed.png").rename(tmp_path / "b" / "blue" / "moved.png")
    assert load_photos(from_folders(tmp_path / "b"), [PRE]).fingerprint() != a


def test_augmented_views_depend_on_the_seed_not_the_size() -> None:
    base = Image.open(DATA / "chelsea.jpg").convert("RGB")
    a = augment(base, 64, np.random.default_rng(5))
    b = augment(base, 128, np.random.default_rng(5)).resize((64, 64), Image.Resampling.BILINEAR)
    assert np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean() < 6
    c = augment(base, 64, np.random.default_rng(6))
    assert np.abs(np.asarray(a, np.float32) - np.asarray(c, np.float32)).mean() > 6
