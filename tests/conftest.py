from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testkit import DATA, PHOTOS, lite0_engine


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """tests/data for the modules still written against a fixture (test_export, test_personal, test_train*);
    the others import testkit.DATA."""
    return DATA


@pytest.fixture(scope="session")
def lite0():
    from photosift.models.registry import resolve_model

    return resolve_model("efficientnet-lite0")


@pytest.fixture(scope="session")
def engine():
    return lite0_engine()


@pytest.fixture(scope="session")
def photo_variants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 seeded variants of the test photos (crop 70-95 %, mirror, brightness, colour, ±8° rotation, JPEG
    q70-95): a set big enough for agreement statistics, made from the committed photos alone."""
    import numpy as np
    from PIL import Image, ImageEnhance, ImageOps

    out = tmp_path_factory.mktemp("variants")
    rng = np.random.default_rng(0)
    for p in PHOTOS:
        with Image.open(p) as src:
            im = src.convert("RGB")
        for k in range(8):
            w, h = im.size
            f = rng.uniform(0.7, 0.95)
            cw, ch = int(w * f), int(h * f)
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            v = im.crop((x0, y0, x0 + cw, y0 + ch))
            if k % 2:
                v = ImageOps.mirror(v)
            v = ImageEnhance.Brightness(v).enhance(rng.uniform(0.8, 1.2))
            v = ImageEnhance.Color(v).enhance(rng.uniform(0.7, 1.3))
            v = v.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR, fillcolor=(128, 128, 128))
            v.save(out / f"{p.stem}-{k}.jpg", quality=int(rng.integers(70, 95)))
    return out


@pytest.fixture()
def photos_dir(tmp_path: Path) -> Path:
    """A private copy of the test photos that a test may rename, touch or delete."""
    d = tmp_path / "photos"
    d.mkdir()
    for p in PHOTOS:
        shutil.copy2(p, d / p.name)
    return d


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never touch the real user's data or config dir.
    monkeypatch.setenv("PHOTOSIFT_DATA_DIR", str(tmp_path / "data-home"))
    monkeypatch.setenv("PHOTOSIFT_CONFIG_DIR", str(tmp_path / "config-home"))
    monkeypatch.delenv("PHOTOSIFT_DB", raising=False)
