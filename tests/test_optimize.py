"""Offline graph optimization: ORT + onnxslim, parity-checked, card kept, nothing partial on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from photosift.core.errors import ToolchainError
from photosift.core.imaging import load_tensor
from photosift.models.card import read_card
from photosift.toolchain import modelfile
from photosift.toolchain import optimize as omod
from photosift.toolchain.modelfile import Speed, load_checked, probe_inputs, session
from photosift.toolchain.optimize import optimize
from testkit import PHOTOS, lite0_engine


@pytest.mark.slow
def test_optimize_lite0_keeps_card_and_outputs(tmp_path: Path, lite0) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "models" / "lite0-opt.onnx"
    report = optimize(lite0.path, out)
    assert read_card(out) == read_card(lite0.path)
    assert report.max_abs_diff <= modelfile.PARITY_TOLERANCE and report.top1_agree == report.parity_inputs
    # The counts describe the two files on disk.
    assert (report.size_before, report.size_after) == (lite0.path.stat().st_size, out.stat().st_size)
    nodes = [len(onnx.load(str(p)).graph.node) for p in (lite0.path, out)]
    assert [report.nodes_before, report.nodes_after] == nodes
    # The written file classifies the test photos as the packaged model does (checked here, not by optimize).
    x = np.stack([load_tensor(p, lite0.card.preprocess) for p in PHOTOS])
    want, got = lite0_engine().run(x)["logits"], session(out).run(["logits"], {"input": x})[0]
    assert np.abs(got - want).max() <= 1e-3 and (got.argmax(1) == want.argmax(1)).all()
    assert report.speed.reference_ips > 0 and report.speed.model_ips > 0
    data = json.loads(json.dumps(report.to_dict()))
    assert data["speed"]["batch"] == 8 and data["level"] == "basic"
    assert sorted(p.name for p in out.parent.iterdir()) == ["lite0-opt.onnx"]
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # an ordinary file, not mkstemp's private one


def test_optimize_without_slim(tmp_path: Path, lite0, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(omod, "compare_speed", lambda *a, **k: Speed(1.0, 1.0))  # timing is tested above
    report = optimize(lite0.path, tmp_path / "o.onnx", level="basic", slim=False)
    assert report.slim is False and report.max_abs_diff <= modelfile.PARITY_TOLERANCE


def test_parity_failure_writes_nothing(tmp_path: Path, lite0, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import onnxslim

    def broken_slim(model: onnx.ModelProto) -> onnx.ModelProto:
        init = next(i for i in model.graph.initializer if i.name == "inner._fc.bias")
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 1.0, init.name))
        return model

    monkeypatch.setattr(onnxslim, "slim", broken_slim)
    with pytest.raises(ToolchainError, match=r"fails parity: max \|Δlogit\| = 1\.00e\+00"):
        optimize(lite0.path, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_input_and_level(tmp_path: Path, lite0) -> None:  # type: ignore[no-untyped-def]
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    with pytest.raises(ToolchainError, match="not an ONNX model"):
        optimize(junk, tmp_path / "o.onnx")
    with pytest.raises(ToolchainError, match="unknown optimization level"):
        optimize(lite0.path, tmp_path / "o.onnx", level="max")
    assert not (tmp_path / "o.onnx").exists()


def test_probe_inputs_look_like_preprocessed_photos(lite0) -> None:  # type: ignore[no-untyped-def]
    card = load_checked(lite0.path).card
    x = probe_inputs(card, 3)
    assert x.shape == (3, 3, 224, 224) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert np.array_equal(x, probe_inputs(card, 3))
