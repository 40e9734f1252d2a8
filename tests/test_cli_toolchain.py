"""`photosift optimize`, `quantize` and `eval` through the CLI: outputs, JSON, exit codes, nothing left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from photosift.cli import app
from photosift.models.card import read_card
from test_quantize import tiny_convnet, tiny_mlp
from testkit import DATA

runner = CliRunner()


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    for p in sorted(DATA.glob("*.jpg")):
        shutil.copy2(p, d / p.name)
    return d


@pytest.mark.slow
def test_quantize_writes_a_checked_int8_model_and_its_report(tmp_path: Path, photos: Path) -> None:
    tiny = tiny_convnet(tmp_path / "tiny.onnx")
    out, report = tmp_path / "tiny-int8.onnx", tmp_path / "r.json"
    res = run(
        "quantize", tiny, "--calibrate", photos, "-o", out, "--report", report, "--min-agreement", "0.5"
    )
    assert res.exit_code == 0, res.output
    assert "top-1 agreement with FP32" in res.stdout and "held-out photos" in res.stdout
    assert read_card(out).precision == "int8"
    data = json.loads(report.read_text())
    assert data["agreement"] >= 0.5 and data["method"] == "static" and len(data["candidates"]) >= 5
    lo, hi = data["agreement_ci"]
    assert lo <= data["agreement"] <= hi and f"(95% CI {lo:.1%}–{hi:.1%})" in res.stdout
    assert data["sqnr_db"] is not None and all("sqnr_db" in c for c in data["candidates"])
    assert {"ort per-channel U8S8 percentile", "ort per-channel U8S8 entropy"} <= {
        c["name"] for c in data["candidates"]
    }
    # --json: stdout is the report alone (ONNX Runtime's histogram calibrators print progress otherwise)
    res = run("quantize", tiny, "--calibrate", photos, "-o", out, "--min-agreement", "0.5", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["output"] == str(out)

    res = run(
        "quantize", tiny, "--calibrate", photos, "-o", tmp_path / "half.onnx", "--precision", "fp16", "--json"
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["precision"] == "fp16" and read_card(tmp_path / "half.onnx").precision == "fp16"


def test_quantize_bad_input_is_one_line_and_leaves_nothing(tmp_path: Path, photos: Path) -> None:
    tiny = tiny_convnet(tmp_path / "tiny.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    empty = tmp_path / "empty"
    empty.mkdir()
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "a.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (unreadable / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    before = {p.name for p in tmp_path.iterdir()}
    for args, message in (
        ((junk, "--calibrate", photos), "not an ONNX model"),
        ((tiny, "--calibrate", empty), "no images to calibrate on"),
        ((tiny, "--calibrate", unreadable), "none of the 2 images could be decoded"),
        (
            (tiny, "--calibrate", photos, "--min-agreement", "1.0", "--dynamic"),
            "dynamic quantization refused",
        ),
    ):
        res = run("quantize", *args, "-o", tmp_path / "out.onnx")
        assert res.exit_code == 1, res.output
        assert message in res.output and res.output.count("error:") == 1, res.output
    res = run("quantize", tiny, "-o", tmp_path / "out.onnx")  # no --calibrate
    assert res.exit_code == 2 and "--calibrate" in res.output
    assert {p.name for p in tmp_path.iterdir()} == before


def test_dynamic_quantization_of_a_tiny_mlp(tmp_path: Path) -> None:
    mlp = tiny_mlp(tmp_path / "mlp.onnx")
    res = run("quantize", mlp, "--dynamic", "-o", tmp_path / "mlp-int8.onnx", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["method"] == "dynamic"


@pytest.mark.slow
def test_optimize_reports_parity_and_sizes(tmp_path: Path) -> None:
    tiny = tiny_convnet(tmp_path / "tiny.onnx")
    res = run("optimize", tiny, "-o", tmp_path / "opt.onnx", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["max_abs_diff"] <= 1e-4 and data["top1_agree"] == data["parity_inputs"]
    assert read_card(tmp_path / "opt.onnx").name == "tiny"
    res = run("optimize", tiny, "-o", tmp_path / "opt2.onnx", "--level", "all", "--no-slim")
    assert res.exit_code == 0 and "parity on" in res.stdout, res.output
    res = run("optimize", tmp_path / "missing.onnx", "-o", tmp_path / "x.onnx")
    assert res.exit_code == 1 and "model file not found" in res.output
    assert not (tmp_path / "x.onnx").exists()


def test_eval_album_accuracy_and_confusion(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rows = {
        "chelsea.jpg": "animals",
        "flower.jpg": "plants",
        "rocket.jpg": "vehicles",
        "coffee.jpg": "animals",
    }
    for name in rows:
        shutil.copy2(DATA / name, images / name)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,category\n" + "".join(f"{f},{c}\n" for f, c in rows.items()))
    res = run("eval", "efficientnet-lite0", "--labels", labels, "--json", "--no-people")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    album = data["album"]
    # the cat, the flower and the rocket are right; the coffee cup labelled "animals" is (rightly) food
    assert (album["labelled"], album["correct"]) == (4, 3)
    assert data["confusion"] == {
        "animals": {"animals": 1, "food": 1},
        "plants": {"plants": 1},
        "vehicles": {"vehicles": 1},
    }
    res = run("eval", "efficientnet-lite0-int8", "--labels", labels)  # reference: FP32 Lite0 from the card
    assert res.exit_code == 0, res.output
    assert "top-1 agreement with" in res.stdout and "album confusion" in res.stdout
    assert "95% CI" in res.stdout and "logit SQNR" in res.stdout
    res = run("eval", "efficientnet-lite0")
    assert res.exit_code == 2 and "--labels" in res.output


def test_packaged_int8_model_classifies_like_fp32(tmp_path: Path, photos: Path) -> None:
    labels = {}
    for model in ("efficientnet-lite0", "efficientnet-lite0-int8"):
        db = tmp_path / f"{model}.db"
        res = run("classify", photos, "--db", db, "--model", model, "--no-people", "--json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["model"] == model
        items = json.loads(run("results", "--db", db, "--format", "json").stdout)
        labels[model] = {Path(i["path"]).name: i["label"] for i in items}
    fp32, int8 = labels["efficientnet-lite0"], labels["efficientnet-lite0-int8"]
    assert len(fp32) == len(list(photos.iterdir())) and int8.keys() == fp32.keys()
    agree = sum(int8[k] == fp32[k] for k in fp32)
    assert agree >= len(fp32) - 1, (fp32, int8)  # measured: all agree (docs/MODELS.md)


@pytest.mark.slow
def test_packaged_int8_agrees_with_fp32_as_the_readme_says(photo_variants: Path) -> None:
    """README: INT8 has FP32's top-1 on 95–96 % of real photos it never saw (25 dB logit SQNR). On 80 seeded
    variants of the test photos (measured: 97.5 %, 25.9 dB), 90 % is the bar: a model that truly agreed on 95 %
    would miss it about once in a hundred draws of such a set, one that agreed on 85 % would pass about once in
    ten, and one at 80 % practically never."""
    res = run("eval", "efficientnet-lite0-int8", "--images", photo_variants, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["images"] == 80 and data["reference"].endswith("efficientnet-lite0.onnx")
    assert data["agreement"] >= 0.90, data["disagreements"]
    assert data["top5_containment"] >= 0.99 and data["sqnr_db"] >= 22.0
