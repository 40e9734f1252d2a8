"""The packaged model, its card and sha256 check, and provider choice with verified fallback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from photosift.core import imaging
from photosift.core.errors import ModelError, ProviderError
from photosift.models import registry
from photosift.models.session import OrtEngine, candidate_providers
from testkit import DATA


def test_packaged_model_card(lite0) -> None:
    card = lite0.card
    assert (card.preprocess.input_size, card.preprocess.resize_size) == (224, 256)
    assert card.preprocess.mean == (127.0,) * 3 and card.preprocess.std == (128.0,) * 3
    assert len(card.labels) == 1000 and card.labels[281].startswith("tabby")
    assert card.precision == "fp32" and "Apache" in card.license
    assert lite0.sha256 == registry.sha256_file(lite0.path)


def test_builtin_index_matches_files() -> None:
    index = json.loads(registry.BUILTIN_INDEX.read_text())
    for name, item in index["models"].items():
        path = registry.BUILTIN_INDEX.parent / item["file"]
        assert registry.sha256_file(path) == item["sha256"], name
        assert registry.read_card(path).precision == item["card"]["precision"]


def test_real_photos_get_sensible_labels(engine) -> None:
    expect = {
        "chelsea.jpg": {"tabby cat", "tiger cat", "Egyptian Mau", "a cat having a striped coat"},
        "coffee.jpg": {"espresso", "cup", "coffee mug"},
        "china.jpg": {"palace", "monastery", "bell tower"},
    }
    pre = engine.card.preprocess
    batch = np.stack([imaging.load_tensor(DATA / f, pre) for f in expect])
    out = engine.run(batch)
    logits, emb = out["logits"], out["embedding"]
    assert logits.shape == (3, 1000) and emb.shape == (3, 1280)
    for (name, ok), row in zip(expect.items(), logits, strict=True):
        assert engine.card.labels[int(row.argmax())] in ok, name


def test_batch_axis_is_dynamic(engine) -> None:
    t = imaging.load_tensor(DATA / "coffee.jpg", engine.card.preprocess)
    one = engine.run(t[None])["logits"]
    many = engine.run(np.stack([t] * 5))["logits"]
    np.testing.assert_allclose(many, np.repeat(one, 5, axis=0), atol=1e-4)


def _built_registry(data_dir: Path, lite0, sha: str) -> None:
    models = data_dir / "models"
    models.mkdir(parents=True)
    shutil.copy(lite0.path, models / "mine.onnx")
    (models / "index.json").write_text(json.dumps({"models": {"mine": {"file": "mine.onnx", "sha256": sha}}}))


def test_sha256_mismatch_is_reported(tmp_path: Path, lite0) -> None:
    _built_registry(tmp_path, lite0, "0" * 64)
    with pytest.raises(ModelError, match="corrupt"):
        registry.resolve_model("mine", tmp_path)


def test_corrupted_bytes_detected(tmp_path: Path, lite0) -> None:
    _built_registry(tmp_path, lite0, lite0.sha256)
    path = tmp_path / "models" / "mine.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt"):
        registry.resolve_model("mine", tmp_path)


def test_missing_and_unknown_models(tmp_path: Path, lite0) -> None:
    _built_registry(tmp_path, lite0, lite0.sha256)
    (tmp_path / "models" / "mine.onnx").unlink()
    with pytest.raises(ModelError, match="file missing"):
        registry.resolve_model("mine", tmp_path)
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        registry.resolve_model("nope", tmp_path)
    with pytest.raises(ModelError, match="not found"):
        registry.resolve_model(str(tmp_path / "absent.onnx"), tmp_path)


def test_non_onnx_file_is_a_model_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"definitely not protobuf" * 10)
    model = registry.resolve_model(str(fake))
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        _ = model.card


def test_provider_choice() -> None:
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert candidate_providers("auto", avail) == avail
    assert candidate_providers("cuda", avail) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert candidate_providers("cpu", avail) == ["CPUExecutionProvider"]
    with pytest.raises(ProviderError, match="not available"):
        candidate_providers("tensorrt", avail)
    with pytest.raises(ProviderError, match="unknown provider"):
        candidate_providers("tpu", avail)


def test_auto_runs_on_cpu_here(lite0) -> None:
    eng = OrtEngine(lite0, provider="auto", intra_op_threads=1)
    assert eng.provider == "CPUExecutionProvider"
    assert eng.info.attempts[-1].ok


def test_auto_never_picks_a_remote_provider(lite0) -> None:
    """This onnxruntime build lists AzureExecutionProvider (it sends inputs to a cloud endpoint): never used."""
    from photosift.models.session import available_providers

    remote = "AzureExecutionProvider"
    assert candidate_providers("auto", [remote, "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ProviderError, match="unknown provider"):
        candidate_providers("azure", [remote, "CPUExecutionProvider"])
    assert remote not in candidate_providers("auto", available_providers())
    eng = OrtEngine(lite0, provider="auto", intra_op_threads=1)
    assert [a.provider for a in eng.info.attempts] == ["CPUExecutionProvider"]
    assert eng.session.get_providers() == ["CPUExecutionProvider"]


def test_falls_back_when_a_provider_cannot_run(lite0) -> None:
    # CUDA is not in this onnxruntime build: ORT would silently run on CPU, which the engine catches and
    # records as a failed attempt before falling back to the next candidate, as with a broken GPU install.
    eng = OrtEngine(lite0, candidates=["CUDAExecutionProvider", "CPUExecutionProvider"], intra_op_threads=1)
    assert eng.provider == "CPUExecutionProvider"
    first = eng.info.attempts[0]
    assert first.provider == "CUDAExecutionProvider" and not first.ok and first.reason


def test_no_provider_left_is_an_error(lite0) -> None:
    with pytest.raises(ProviderError, match="no execution provider could run"):
        OrtEngine(lite0, candidates=["CUDAExecutionProvider"], intra_op_threads=1)
