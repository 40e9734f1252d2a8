from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
PHOTOS = sorted(p for p in DATA.iterdir() if p.suffix.lower() in {".jpg", ".png"})


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def lite0():
    from photosift.models.registry import resolve_model

    return resolve_model("efficientnet-lite0")


@pytest.fixture(scope="session")
def engine(lite0):
    from photosift.models.session import OrtEngine

    return OrtEngine(lite0, provider="cpu", intra_op_threads=2)


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
