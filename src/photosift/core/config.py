"""Settings: defaults, environment (PHOTOSIFT_*), and where photosift keeps its files.

Settings are read once at the edge (CLI, web app) and passed into constructors; library code never reads a
global settings object.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_config_path, user_data_path
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

APP_NAME = "photosift"


def default_data_dir() -> Path:
    return user_data_path(APP_NAME, appauthor=False)


def default_config_dir() -> Path:
    return user_config_path(APP_NAME, appauthor=False)


class Settings(BaseSettings):
    """Everything a user may set with PHOTOSIFT_<NAME> environment variables."""

    model_config = SettingsConfigDict(env_prefix="PHOTOSIFT_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    config_dir: Path = Field(default_factory=default_config_dir)
    db: Path | None = None
    model: str = "efficientnet-lite0"
    provider: Literal["auto", "cpu", "cuda", "tensorrt", "openvino", "coreml", "dml"] = "auto"
    batch_size: int = Field(default=16, ge=1, le=1024)
    # Decode threads. Pillow releases the GIL while decoding, so one thread per core keeps the cores busy
    # while ONNX Runtime runs the previous batch.
    workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1, le=256)
    rules: Path | None = None
    # Face detection for the "people" category (MTCNN on the already-decoded image, ~5 core-ms a photo, after the
    # classifier and only where it is not sure of animals or plants: docs/CATEGORIES.md).
    people: bool = True
    # JPEG decode on an NVIDIA GPU (nvJPEG via torchvision); falls back to the CPU decoder with a logged reason.
    gpu_decode: bool = False
    # Files larger than this are refused unread (a 4 GB sparse .jpg, a video renamed .png).
    max_file_mb: int = Field(default=256, ge=1, le=65536)
    # Memory the decodes in flight may hold together (file bytes + decode peak), whatever the number of workers;
    # an image that needs more is refused with the reason, one that needs less waits its turn.
    decode_memory_mb: int = Field(default=1024, ge=64, le=1048576)
    # How long a catalog write waits for another process's transaction before it gives up with a clear error.
    busy_timeout_s: float = Field(default=30.0, ge=0, le=3600)

    @field_validator("provider", mode="before")
    @classmethod
    def _provider_lowercase(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    # Where classify runs: "local" (this process's threads) or "ray" (Ray Data; the cluster extra).
    engine: Literal["local", "ray"] = "local"
    # A running Ray cluster (`ray://HEAD:10001`, `HEAD:6379`, `auto`); None: a local instance for each run.
    ray_address: str | None = None
    # Inference actors on the ray engine; None: from 1 up to what the cluster's CPUs (or GPUs) allow.
    ray_workers: int | None = Field(default=None, ge=1, le=100_000)
    # What each inference actor reserves; its ONNX Runtime session gets that many intra-op threads.
    cpus_per_worker: float = Field(default=1.0, gt=0, le=1024)
    gpus_per_worker: float = Field(default=0.0, ge=0, le=64)

    @property
    def db_path(self) -> Path:
        return self.db if self.db is not None else self.data_dir / "catalog.db"

    @property
    def user_rules(self) -> Path | None:
        """The user's edit of the built-in ImageNet rules, dropped in the config dir, if any (``rules``, when
        set, is the file the user chose explicitly)."""
        candidate = self.config_dir / "categories.yaml"
        return candidate if candidate.is_file() else None
