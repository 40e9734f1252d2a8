"""`photosift train` end to end on a few generated photos: tiny models trained in seconds, exported through the
real path (card, dynamic batch, parity), registered, classified with, evaluated; distillation, pruning, the
report, Ctrl-C, the catalog's corrections and the errors a user meets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from photosift.cli import app
from photosift.core.imaging import load_tensor
from photosift.models.card import read_card
from photosift.services import imagenet_concepts
from photosift.toolchain.modelfile import load_checked
from test_trainset import coloured, two_classes

torch = pytest.importorskip("torch")

DATA = Path(__file__).parent / "data"
runner = CliRunner()
TINY = ["--arch", "unet-classifier", "--img-size", "32", "--epochs", "3"]


def run(*args: object):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two_classes(tmp_path_factory.mktemp("colours") / "data", n=6)


def train(data: Path, out: Path, **kw: object):  # type: ignore[no-untyped-def]
    from photosift.toolchain.train import TrainOptions
    from photosift.toolchain.train import train as train_model
    from photosift.toolchain.trainset import from_folders

    options = TrainOptions(arch="unet-classifier", img_size=32, epochs=3, **kw)  # type: ignore[arg-type]
    return train_model(from_folders(data), out, options)


@pytest.mark.slow
def test_unet_trains_exports_and_runs_like_any_classifier(colours: Path, tmp_path: Path) -> None:
    out = tmp_path / "colours.onnx"
    result = train(colours, out)
    checked = load_checked(out)  # a card, an input the card describes, the logits output
    card = checked.card
    assert card.task == "classify" and card.labels == ["blue", "red"] and card.name == "colours"
    assert card.arch == "unet-classifier (scratch, 2 skips)" and card.preprocess.input_size == 32
    assert card.training["fingerprint"] == result.fingerprint and card.training["counts"] == {
        "blue": 6,
        "red": 6,
    }
    assert card.training["val_accuracy"] == result.validation.accuracy and result.val_photos == 2
    assert result.parity["images"] == 2 and result.parity["max_abs_diff"] <= 1e-4
    assert [h.stage for h in result.history] == ["train"] * len(result.history) and result.history
    assert np.array(result.validation.confusion).sum() == 2
    # dynamic batch axis on the input and on both outputs
    graph = checked.proto.graph
    for value in [*graph.input, *graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param, value.name
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    files = sorted(colours.rglob("*.png"))
    for n in (1, 5):
        x = np.stack([load_tensor(f, card.preprocess) for f in files[:n]])
        logits, emb = sess.run(["logits", "embedding"], {"input": x})
        assert logits.shape == (n, 2) and emb.shape[0] == n


@pytest.mark.slow
def test_the_same_seed_gives_the_same_model(colours: Path, tmp_path: Path) -> None:
    a = train(colours, tmp_path / "a.onnx", seed=7)
    b = train(colours, tmp_path / "b.onnx", seed=7)
    c = train(colours, tmp_path / "c.onnx", seed=8)
    files = sorted(colours.rglob("*.png"))
    outs = []
    for r in (a, b, c):
        sess = ort.InferenceSession(str(r.output), providers=["CPUExecutionProvider"])
        x = np.stack([load_tensor(f, r.card.preprocess) for f in files])
        outs.append(sess.run(["logits"], {"input": x})[0])
    np.testing.assert_array_equal(outs[0], outs[1])
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert not np.array_equal(outs[0], outs[2])


def test_ctrl_c_keeps_the_best_model_so_far(colours: Path, tmp_path: Path) -> None:
    from photosift.toolchain.train import TrainOptions
    from photosift.toolchain.train import train as train_model
    from photosift.toolchain.trainset import from_folders

    def interrupt_in_epoch_3(p: object) -> None:
        if getattr(p, "stage", "") == "train" and getattr(p, "note", "").startswith("epoch 2/"):
            raise KeyboardInterrupt

    out = tmp_path / "stopped.onnx"
    options = TrainOptions(arch="unet-classifier", img_size=32, epochs=6)
    result = train_model(from_folders(colours), out, options, interrupt_in_epoch_3)
    assert result.interrupted and len(result.history) == 2 and out.is_file()
    assert read_card(out).training["interrupted"] is True


@pytest.mark.slow
def test_cli_trains_registers_reports_and_classifies(colours: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "models" / "col.onnx", tmp_path / "report" / "r.json"
    res = run("train", colours, "-o", out, *TINY, "--name", "colour-test", "--report", report)
    assert res.exit_code == 0, res.output
    assert "validation accuracy" in res.stdout and "registered as colour-test" in res.stdout
    data = json.loads(report.read_text())
    assert data["classes"] == ["blue", "red"] and data["validation"]["confusion"]
    assert data["history"] and data["fingerprint"] == read_card(out).training["fingerprint"]
    for png in ("r-curves.png", "r-confusion.png"):
        assert (report.parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    listed = {m["name"]: m for m in json.loads(run("models", "--json").stdout)}
    assert listed["colour-test"]["num_classes"] == 2 and listed["colour-test"]["path"] == str(out.resolve())
    db = tmp_path / "cat.db"
    res = run("classify", colours, "--db", db, "--model", "colour-test", "--no-people", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(run("results", "--db", db, "--format", "json").stdout)
    assert len(rows) == 12 and {r["category"] for r in rows} <= {"blue", "red"}
    assert all(r["label"] in {"blue", "red"} for r in rows)
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "file,category\n"
        + "".join(f"{p.relative_to(colours)},{p.parent.name}\n" for p in colours.rglob("*.png"))
    )
    res = run("eval", "colour-test", "--labels", csv, "--images", colours, "--no-people", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["album"]["labelled"] == 12
    # the registered name goes through optimize and static INT8 quantization like a built-in model's
    opt = tmp_path / "col-opt.onnx"
    res = run("optimize", "colour-test", "-o", opt, "--json")
    assert res.exit_code == 0, res.output
    q = tmp_path / "col-int8.onnx"
    res = run("quantize", opt, "-o", q, "--calibrate", colours, "--min-agreement", "0.5", "--json")
    assert res.exit_code == 0, res.output
    quantized = json.loads(res.stdout)
    assert quantized["precision"] == "int8" and quantized["agreement"] >= 0.5
    assert (
        read_card(q).labels == ["blue", "red"] and read_card(q).training["fingerprint"] == data["fingerprint"]
    )
    res = run("classify", colours, "--db", tmp_path / "q.db", "--model", q, "--no-people", "--json")
    assert res.exit_code == 0, res.output


def test_cli_json_and_labels_csv_source(colours: Path, tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    files = sorted(colours.rglob("*.png"))
    csv.write_text("file,category\n" + "".join(f"{f.relative_to(colours)},{f.parent.name}\n" for f in files))
    res = run(
        "train",
        "--labels",
        csv,
        "--images",
        colours,
        "-o",
        tmp_path / "m.onnx",
        *TINY,
        "--json",
        "--no-register",
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["counts"] == {"blue": 6, "red": 6} and data["registered"] is None
    assert data["output"] == str(tmp_path / "m.onnx") and data["validation"]["photos"] == 2


def test_cli_errors_are_one_line(colours: Path, tmp_path: Path) -> None:
    res = run("train", "-o", tmp_path / "x.onnx")
    assert res.exit_code == 2 and "exactly one of DATA" in res.output
    res = run("train", colours, "--labels", tmp_path / "l.csv", "-o", tmp_path / "x.onnx")
    assert res.exit_code == 2
    single = tmp_path / "single"
    for i in range(3):
        coloured(single / "only" / f"{i}.png", (9, 9, 9), i)
    res = run("train", single, "-o", tmp_path / "x.onnx", *TINY)
    assert res.exit_code == 1 and "at least two classes, found 1 (only 3)" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "x.onnx").exists()
    res = run("train", colours, "-o", tmp_path / "x.onnx", "--arch", "unet-classifier", "--img-size", "30")
    assert res.exit_code == 1 and "multiple of 32" in res.output
    res = run("train", colours, "-o", tmp_path / "x.onnx", *TINY, "--teacher", tmp_path / "nope.onnx")
    assert res.exit_code == 1 and "teacher" in res.output and "not found" in res.output


@pytest.mark.slow
def test_pruning_removes_channels_and_reports_what_it_cost(colours: Path, tmp_path: Path) -> None:
    res = run("train", colours, "-o", tmp_path / "p.onnx", *TINY, "--prune", "0.5", "--json", "--no-register")
    assert res.exit_code == 0, res.output
    p = json.loads(res.stdout)["pruning"]
    assert p["fraction"] == 0.5 and p["groups"] == 8
    # inner channels 8, 16, 32, 64, 128, 64, 32, 16: half of each goes, the kept counts stay multiples of 8
    assert p["channels_before"] == 360 and p["channels_after"] == 8 + 8 + 16 + 32 + 64 + 32 + 16 + 8
    assert p["params_after"] < p["params_before"] and p["bytes_after"] < p["bytes_before"]
    assert {"val_accuracy_before", "val_accuracy_pruned", "val_accuracy_after", "speedup"} <= set(p)
    assert "pruned 50%" in read_card(tmp_path / "p.onnx").arch


@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet-lite0"])
def test_pruning_keeps_pretrained_networks_working(arch: str) -> None:
    from photosift.toolchain.archs import build
    from photosift.toolchain.builtins import BUILDABLE
    from photosift.toolchain.prune import groups_of, prune_channels

    module, _ = build(BUILDABLE[arch].arch, BUILDABLE[arch].weights())
    x = torch.zeros(2, 3, 64, 64)
    counts = prune_channels(module, 0.3)
    logits, emb = module(x)
    assert logits.shape == (2, 1000) and emb.shape == (2, 1280)
    assert counts["groups"] >= 15 and 0.65 < counts["channels_after"] / counts["channels_before"] < 0.75
    assert counts["params_after"] < counts["params_before"]
    # ONNX Runtime's fast blocked convolutions need multiples of 8: the kept counts stay so
    assert all(g.producer.out_channels % 8 == 0 for g in groups_of(module))


@pytest.mark.slow
def test_distillation_learns_from_a_teacher_on_unlabelled_photos(colours: Path, tmp_path: Path) -> None:
    teacher = tmp_path / "teacher.onnx"
    assert run("train", colours, "-o", teacher, *TINY, "--no-register").exit_code == 0
    unlabelled = tmp_path / "unlabelled"
    for i in range(4):
        coloured(unlabelled / f"u{i}.png", (200, 40, 40) if i % 2 else (40, 40, 200), 500 + i)
    res = run(
        "train", colours, "-o", tmp_path / "student.onnx", *TINY, "--teacher", teacher,
        "--unlabelled", unlabelled, "--json", "--no-register",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    d = data["distillation"]
    assert d["teacher"] == str(teacher) and d["unlabelled_photos"] == 4 and data["unlabelled_photos"] == 4
    assert d["temperature"] == 4.0 and d["teacher_val_accuracy"] is not None
    assert d["student_bytes"] > 0 and d["teacher_images_per_s"] > 0
    # a teacher that does not know the classes is refused
    other = tmp_path / "other"
    for name in ("cats", "dogs"):
        for i in range(2):
            coloured(other / name / f"{i}.png", (1, 2, 3), i)
    res = run("train", other, "-o", tmp_path / "s2.onnx", *TINY, "--teacher", teacher)
    assert res.exit_code == 1 and "its labels lack 'cats', 'dogs'" in res.output


@pytest.mark.slow
def test_from_catalog_learns_the_corrections(colours: Path, tmp_path: Path) -> None:
    from photosift import services
    from photosift.cli.common import settings

    db = tmp_path / "cat.db"
    photos = tmp_path / "photos"
    shutil.copytree(colours, photos)
    assert run("classify", photos, "--db", db, "--no-people").exit_code == 0
    config = settings(db)
    for f in sorted(photos.rglob("*.png"))[:3] + sorted(photos.rglob("*.png"))[-3:]:
        services.correct(config, f, "warm" if f.parent.name == "red" else "cool", create=True)
    res = run(
        "train", "--from-catalog", "--db", db, "-o", tmp_path / "c.onnx", *TINY, "--json", "--no-register"
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["counts"] == {"cool": 3, "warm": 3} and data["classes"] == ["cool", "warm"]


@pytest.mark.slow
def test_transfer_from_lite0_with_concepts(tmp_path: Path) -> None:
    """Two classes of real photos; the head sees the embedding and WordNet-pooled ImageNet probabilities."""
    data = tmp_path / "data"
    for name, cls in (
        ("chelsea", "pets"),
        ("astronaut", "people"),
        ("grace_hopper", "people"),
        ("coffee", "food"),
    ):
        (data / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy2(DATA / f"{name}.jpg", data / cls / f"{name}.jpg")
    shutil.copy2(DATA / "flower.jpg", data / "pets" / "flower.jpg")  # a mislabel the head must still fit
    shutil.copy2(DATA / "china.jpg", data / "food" / "china.jpg")
    out = tmp_path / "t.onnx"
    res = run("train", data, "-o", out, "--img-size", "96", "--val-split", "0", "--json", "--no-register")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["arch"] == "lite0 transfer" and result["val_photos"] == 0
    assert [h["stage"] for h in result["history"]] == ["head"] and result["history"][0][
        "train_accuracy"
    ] == 1.0
    card = read_card(out)
    assert card.preprocess.input_size == 96 and card.preprocess.mean == (127.0, 127.0, 127.0)
    assert "efficientnet-lite0" in card.source and card.labels == ["food", "people", "pets"]
    assert (
        card.training["options"]["concepts"] == imagenet_concepts().shape[1] > 100
    )  # the CLI gives WordNet's
