"""Any model runs through the same path: a 10-class classifier exported from a user's module classifies a
folder, and its own labels are the categories in `results`, the gallery, `correct` and `eval`; an embedding-only
model stores embeddings and no labels. Real export (torch), real ONNX Runtime, a real SQLite file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from photosift.cli import app  # noqa: E402
from photosift.models.card import read_card  # noqa: E402

runner = CliRunner()

COLOURS = {
    "red": (200, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 40, 200),
    "yellow": (220, 210, 40),
    "cyan": (40, 200, 210),
    "magenta": (200, 40, 190),
    "white": (240, 240, 240),
    "black": (15, 15, 15),
    "orange": (240, 140, 20),
    "grey": (128, 128, 128),
}

# A classifier by colour: logits are minus the distance of the image's mean colour to each class's colour, so it
# is right by construction on the generated photos below and its outputs are known without training.
MODULE = f"""
import torch
from torch import nn

COLOURS = {list(COLOURS.values())!r}
PHOTOSIFT_CARD = {{"input_size": 64, "resize_size": 64, "mean": [0, 0, 0], "std": [255, 255, 255],
                  "labels": {list(COLOURS)!r}, "source": "a colour classifier made by the test", "license": "CC0"}}


class ColourNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.centres = nn.Parameter(torch.tensor(COLOURS, dtype=torch.float32) / 255.0)

    def forward(self, x):
        emb = x.mean(dim=(2, 3))
        logits = -3.0 * ((emb[:, None, :] - self.centres[None]) ** 2).sum(-1)
        return logits, emb


def make():
    return ColourNet()
"""


@pytest.fixture()
def colour_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(the exported model, a folder of photos with a labels.csv)."""
    pkg = tmp_path / "usernets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "colour.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    net = importlib.import_module("usernets.colour").make()
    weights = tmp_path / "colour.pt"
    torch.save(net.state_dict(), weights)

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        for j in range(2):
            noise = rng.normal(0, 12, (120 + 10 * j, 160, 3))
            pixels = np.clip(np.array(rgb, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
            file = f"{i:02d}-{name}-{j}.jpg"
            Image.fromarray(pixels).save(photos / file, quality=92)
            rows.append({"file": file, "category": name})
    with (photos / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "category"])
        writer.writeheader()
        writer.writerows(rows)

    out = tmp_path / "colour.onnx"
    res = runner.invoke(
        app,
        [
            "export",
            "module:usernets.colour:make",
            "--weights",
            str(weights),
            "-o",
            str(out),
            "--images",
            str(photos),
        ],
    )
    assert res.exit_code == 0, res.output
    return out, photos


def test_a_ten_class_model_classifies_a_folder_into_its_own_labels(colour_model, tmp_path: Path) -> None:
    model, photos = colour_model
    card = read_card(model)
    assert card.task == "classify" and card.labels == list(COLOURS) and card.embedding_name == "embedding"

    db = str(tmp_path / "c.db")
    res = runner.invoke(app, ["classify", str(photos), "--model", str(model), "--db", db, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["classified"] == 20 and summary["errors"] == 0
    assert summary["categories"] == {name: 2 for name in COLOURS}

    items = json.loads(runner.invoke(app, ["results", "--db", db, "--format", "json"]).stdout)
    for it in items:
        truth = Path(it["path"]).name.split("-")[1]
        assert (it["label"], it["category"], it["model"]) == (truth, truth, "colour")
        assert it["top5"][0]["label"] == truth

    only_red = json.loads(
        runner.invoke(app, ["results", "--db", db, "--category", "red", "--format", "json"]).stdout
    )
    assert sorted(Path(i["path"]).name for i in only_red) == ["00-red-0.jpg", "00-red-1.jpg"]
    wrong = runner.invoke(app, ["results", "--db", db, "--category", "animals"])
    assert wrong.exit_code == 2 and "red" in wrong.output  # the known categories are the model's labels

    res = runner.invoke(app, ["correct", str(photos / "00-red-0.jpg"), "--category", "orange", "--db", db])
    assert res.exit_code == 0, res.output
    corrected = json.loads(
        runner.invoke(app, ["results", "--db", db, "--category", "orange", "--format", "json"]).stdout
    )
    assert str(photos / "00-red-0.jpg") in {i["path"] for i in corrected}


def test_the_gallery_shows_the_models_labels_as_categories(colour_model, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from photosift.core.config import Settings
    from photosift.web import app as webapp

    model, photos = colour_model
    db = tmp_path / "c.db"
    assert (
        runner.invoke(app, ["classify", str(photos), "--model", str(model), "--db", str(db)]).exit_code == 0
    )
    settings = Settings(db=db, data_dir=tmp_path / "data", config_dir=tmp_path / "config")
    with TestClient(webapp.create_app(settings, token="t", port=8765), base_url="http://127.0.0.1:8765") as c:
        overview = c.get("/")
        assert overview.status_code == 200
        for name in COLOURS:
            assert f"/category/{name}" in overview.text
        page = c.get("/category/cyan")
        assert page.status_code == 200 and page.text.count("/thumb/") == 2
        photo_id = int(page.text.split("/photo/")[1].split('"')[0])
        options = c.get(f"/photo/{photo_id}").text
        assert all(f'value="{name}"' in options for name in COLOURS)  # correct to any of the model's labels
        assert c.get("/category/animals").status_code == 404


def test_eval_reports_accuracy_on_the_models_own_labels(colour_model) -> None:
    model, photos = colour_model
    res = runner.invoke(
        app, ["eval", str(model), "--labels", str(photos / "labels.csv"), "--images", str(photos), "--json"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["album"] == {"labelled": 20, "correct": 20, "accuracy": 1.0}
    assert set(report["confusion"]) == set(COLOURS)


def test_an_embedding_model_stores_vectors_and_no_labels(tmp_path: Path, photos_dir: Path, lite0) -> None:
    import sqlite3

    from photosift.models.card import CARD_KEY
    from photosift.toolchain.modelfile import set_card

    proto = onnx.load(str(lite0.path))
    card = lite0.card.model_copy(update={"name": "lite0-embed", "task": "embed", "labels": []})
    set_card(proto, card)
    embedder = tmp_path / "embedder.onnx"
    onnx.save(proto, str(embedder))
    assert json.loads({p.key: p.value for p in proto.metadata_props}[CARD_KEY])["task"] == "embed"

    db = tmp_path / "c.db"
    res = runner.invoke(
        app, ["classify", str(photos_dir), "--model", str(embedder), "--db", str(db), "--json"]
    )
    assert res.exit_code == 0, res.output
    n = len(list(photos_dir.iterdir()))
    assert json.loads(res.stdout)["classified"] == n
    items = json.loads(runner.invoke(app, ["results", "--db", str(db), "--format", "json"]).stdout)
    assert len(items) == n and all(i["label"] is None and i["category"] is None for i in items)
    with sqlite3.connect(db) as conn:
        vectors = [np.frombuffer(v, np.float16) for (v,) in conn.execute("SELECT vector FROM embeddings")]
    assert len(vectors) == n and all(v.shape == (1280,) and np.isfinite(v).all() for v in vectors)
    # The same library indexed by a classifier too: side by side, each with its own results.
    assert runner.invoke(app, ["classify", str(photos_dir), "--db", str(db)]).exit_code == 0
    by_model = json.loads(
        runner.invoke(
            app, ["results", "--db", str(db), "--model", "efficientnet-lite0", "--format", "json"]
        ).stdout
    )
    assert len(by_model) == n and all(i["label"] and i["category"] for i in by_model)
    embedded = json.loads(
        runner.invoke(app, ["results", "--db", str(db), "--model", "embedder", "--format", "json"]).stdout
    )
    assert len(embedded) == n and all(i["label"] is None for i in embedded)
    assert runner.invoke(app, ["recategorize", "--db", str(db)]).exit_code == 0
