"""Evaluation: agreement with a reference, ImageNet accuracy, album accuracy and confusion, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from photosift.core.errors import ToolchainError
from photosift.models.card import CARD_KEY, ModelCard
from photosift.toolchain.evaluate import evaluate
from testkit import DATA, PHOTOS, lite0_outputs


@pytest.fixture()
def labelled(tmp_path: Path, lite0) -> Path:  # type: ignore[no-untyped-def]
    """labels.csv beside images/: two rows with the FP32 model's own ImageNet label, one wrong, one album-only."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "rocket.jpg", "flower.jpg"):
        shutil.copy2(DATA / name, images / name)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    names = ["chelsea.jpg", "coffee.jpg"]
    logits = lite0_outputs(names)["logits"]
    top = {name: lite0.card.labels[int(row.argmax())] for name, row in zip(names, logits, strict=True)}
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "file,category,source\n"
        f"chelsea.jpg,{top['chelsea.jpg']},test\n"
        f"coffee.jpg,{top['coffee.jpg'].upper()},test\n"
        "rocket.jpg,goldfish,test\n"
        "flower.jpg,plants,test\n"
        "broken.jpg,objects,test\n"
    )
    return csv


def _int8_carded_copy(src: Path, dst: Path) -> Path:
    """The FP32 file with a card that says int8: the default reference must then be the packaged FP32 model."""
    m = onnx.load(str(src))
    meta = {p.key: p.value for p in m.metadata_props}
    card = ModelCard.from_json(meta[CARD_KEY], "src").model_copy(update={"precision": "int8"})
    for p in m.metadata_props:
        if p.key == CARD_KEY:
            p.value = card.to_json()
    onnx.save(m, str(dst))
    return dst


def test_imagenet_accuracy_and_agreement(labelled: Path, tmp_path: Path, lite0) -> None:  # type: ignore[no-untyped-def]
    model = _int8_carded_copy(lite0.path, tmp_path / "fake-int8.onnx")
    report = evaluate(model, labelled)
    assert report.reference == str(lite0.path)
    assert report.images == 4 and [Path(p).name for p, _ in report.skipped] == ["broken.jpg"]
    assert report.agreement == 1.0 and report.top5_containment == 1.0 and report.max_abs_diff == 0.0
    assert report.sqnr_db is None and report.agreement_ci is not None and report.agreement_ci[1] == 1.0
    assert report.imagenet is not None and (report.imagenet.labelled, report.imagenet.correct) == (3, 2)
    assert report.reference_imagenet == report.imagenet
    assert report.album is None  # no categorize function given
    json.dumps(report.to_dict())


def test_album_accuracy_and_confusion(labelled: Path, lite0) -> None:  # type: ignore[no-untyped-def]
    calls = []

    def categorize(
        model: Path, probs: np.ndarray, embeddings: np.ndarray | None, files: list[Path]
    ) -> list[str]:
        assert len(files) == len(probs) and all(f.is_file() for f in files)
        assert model == lite0.path and embeddings is not None and embeddings.shape == (len(probs), 1280)
        calls.append(probs.shape)
        assert np.allclose(probs.sum(1), 1.0, atol=1e-4)
        return ["plants" if i % 2 else "animals" for i in range(len(probs))]

    report = evaluate(lite0.path, labelled, categorize=categorize)
    assert report.reference is None and report.agreement is None  # an FP32 model has no default reference
    assert calls == [(4, 1000)]
    assert report.album is not None and (report.album.labelled, report.album.correct) == (
        4,
        1,
    )  # flower -> plants
    assert report.confusion["plants"] == {"plants": 1}
    assert sum(sum(row.values()) for row in report.confusion.values()) == 4


def test_explicit_reference_and_images_only(tmp_path: Path, lite0) -> None:  # type: ignore[no-untyped-def]
    images = tmp_path / "pics"
    images.mkdir()
    for name in ("astronaut.jpg", "brick.jpg", "text.png"):
        shutil.copy2(DATA / name, images / name)
    report = evaluate(lite0.path, images=images, reference=lite0.path)
    assert report.images == 3 and report.agreement == 1.0 and report.imagenet is None
    by_name = evaluate("efficientnet-lite0", images=images)  # type: ignore[arg-type]
    assert by_name.images == 3


def test_bad_inputs(tmp_path: Path, lite0) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ToolchainError, match="needs a labels CSV or an images folder"):
        evaluate(lite0.path)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.jpg,cat\n")
    with pytest.raises(ToolchainError, match="'file' column"):
        evaluate(lite0.path, bad)
    gone = tmp_path / "gone.csv"
    gone.write_text("file,category\nmissing.jpg,animals\n")
    with pytest.raises(ToolchainError, match="none of the 1 listed photos could be read"):
        evaluate(lite0.path, gone)
    with pytest.raises(ToolchainError, match="images folder not found"):
        evaluate(lite0.path, images=tmp_path / "nowhere")
    with pytest.raises(ToolchainError, match="unknown model"):
        evaluate("no-such-model", images=DATA)  # type: ignore[arg-type]


def test_categorize_must_return_one_category_per_photo(labelled: Path, lite0) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ToolchainError, match="returned 1 categories for 4 photos"):
        evaluate(lite0.path, labelled, categorize=lambda model, probs, emb, files: ["animals"])


def test_per_category_recall_precision_and_split(tmp_path: Path, lite0) -> None:  # type: ignore[no-untyped-def]
    """--split keeps one set of a shared CSV; recall and precision per category with Wilson intervals; a TSV
    with comment lines reads the same; the confusion matrix plots to a PNG."""
    from PIL import Image

    from photosift.toolchain.evaluate import plot_confusion

    images = tmp_path / "images"
    images.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "rocket.jpg", "flower.jpg"):
        shutil.copy2(DATA / name, images / name)
    rows = [
        ("chelsea.jpg", "animals", "test"),
        ("coffee.jpg", "food", "test"),
        ("rocket.jpg", "vehicles", "test"),
        ("flower.jpg", "plants", "train"),
    ]
    tsv = tmp_path / "labels.tsv"
    tsv.write_text(
        "# a comment line\nfile\tcategory\tsplit\n" + "".join(f"{f}\t{c}\t{s}\n" for f, c, s in rows)
    )
    said = {
        "chelsea.jpg": "animals",
        "coffee.jpg": "animals",
        "rocket.jpg": "vehicles",
        "flower.jpg": "plants",
    }

    def categorize(model: Path, probs: np.ndarray, emb: np.ndarray | None, files: list[Path]) -> list[str]:
        return [said[f.name] for f in files]

    report = evaluate(lite0.path, tsv, images, categorize=categorize, split="test")
    assert report.images == 3 and report.album is not None and report.album.correct == 2
    scores = {c: s.to_dict() for c, s in report.per_category.items()}
    assert set(scores) == {"animals", "food", "vehicles"}
    assert (scores["animals"]["recall"], scores["animals"]["precision"]) == (1.0, 0.5)
    assert scores["food"]["recall"] == 0.0 and scores["food"]["precision"] is None
    low, high = scores["vehicles"]["recall_ci"]
    assert 0.15 < low < 0.25 and high == 1.0  # 1/1 right says little: Wilson interval 0.21-1.0
    assert json.loads(json.dumps(report.to_dict()))["per_category"]["animals"]["labelled"] == 1
    png = tmp_path / "confusion.png"
    plot_confusion(report, png)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 200
    with pytest.raises(ToolchainError, match="no rows with split 'validation'"):
        evaluate(lite0.path, tsv, images, categorize=categorize, split="validation")


def test_agreement_against_a_reference_it_differs_from(tmp_path: Path, photos_dir: Path, lite0) -> None:  # type: ignore[no-untyped-def]
    """A copy of the model whose class-0 bias is raised by Δ: every logit of class 0 moves by exactly Δ and
    nothing else does, so the photos whose top-1 leads class 0 by less than Δ flip to it. The report must name
    exactly those photos and give the agreement, |Δlogit| and SQNR that this edit implies (worked out here from
    the reference's logits, not by evaluate)."""
    ref = lite0_outputs(PHOTOS)["logits"].astype(np.float64)
    lead = ref.max(1) - ref[:, 0]
    ordered = np.sort(lead)
    k = len(PHOTOS) // 2
    delta = float(ordered[k - 1] + ordered[k]) / 2  # half the photos flip; the gap keeps it clear of rounding
    assert ordered[k] - ordered[k - 1] > 0.1
    shifted = onnx.load(str(lite0.path))
    bias = next(i for i in shifted.graph.initializer if i.name == "inner._fc.bias")
    values = numpy_helper.to_array(bias).copy()
    values[0] += delta
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    model = tmp_path / "shifted.onnx"
    onnx.save(shifted, str(model))

    report = evaluate(model, images=photos_dir, reference=lite0.path)
    flipped = sorted(p.name for p, d in zip(PHOTOS, lead, strict=True) if d < delta)
    assert len(flipped) == k and report.images == len(PHOTOS)
    assert sorted(d["file"] for d in report.disagreements) == flipped
    assert {d["label"] for d in report.disagreements} == {lite0.card.labels[0]}
    assert report.agreement == round(1 - k / len(PHOTOS), 4)
    assert (
        report.agreement_ci is not None and report.agreement_ci[0] < report.agreement < report.agreement_ci[1]
    )
    assert report.top5_containment == 1.0  # one class moved up: the reference's top-1 is at worst second
    assert report.max_abs_diff == pytest.approx(delta, abs=1e-3)
    sqnr = 10 * np.log10((ref**2).mean() / (delta**2 / ref.shape[1]))
    assert report.sqnr_db == pytest.approx(sqnr, abs=0.11)
