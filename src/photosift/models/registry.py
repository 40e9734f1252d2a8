"""Where models live.

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

from photosift.core.errors import ModelError
from photosift.core.files import write_replacing
from photosift.models.card import ModelCard, read_card

_PACKAGE_DIR = Path(str(resources.files("photosift.models")))
BUILTIN_INDEX = _PACKAGE_DIR / "builtin.json"


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


def built_models_dir(data_dir: Path) -> Path:
    return data_dir / "models"


def _load_index(
    index: Path, base: Path, origin: Literal["packaged", "built"]
) -> tuple[dict[str, RegistryEntry], list[str]]:
    """The entries of one index file, and what is wrong with it (one line each): a damaged entry must not hide
    the others, and a damaged index of built models must not block the packaged ones."""
    if not index.is_file():
        return {}, []
    try:
        raw = json.loads(index.read_text())
        models = raw.get("models", {}) if isinstance(raw, dict) else None
        if not isinstance(models, dict):
            raise ValueError("no 'models' mapping")
    except (OSError, ValueError) as exc:
        return {}, [f"{index}: unreadable model index ({exc})"]
    entries, problems = {}, []
    for name, item in models.items():
        if not isinstance(item, dict) or not isinstance(item.get("file"), str) or not item.get("sha256"):
            problems.append(f"{index}: entry {name!r} needs 'file' and 'sha256'")
            continue
        summary = item.get("card", {})
        entries[name] = RegistryEntry(
            name=name,
            path=base / item["file"],
            sha256=str(item["sha256"]),
            origin=origin,
            summary=summary if isinstance(summary, dict) else {},
        )
    return entries, problems


def registry(data_dir: Path | None = None) -> dict[str, RegistryEntry]:
    return _registry(data_dir)[0]


def registry_problems(data_dir: Path | None = None) -> list[str]:
    """What is wrong with the model indexes (shown by `photosift models` and in "unknown model" errors)."""
    return _registry(data_dir)[1]


def _registry(data_dir: Path | None) -> tuple[dict[str, RegistryEntry], list[str]]:
    entries, problems = _load_index(BUILTIN_INDEX, _PACKAGE_DIR, "packaged")
    if data_dir is not None:
        built_dir = built_models_dir(data_dir)
        built, built_problems = _load_index(built_dir / "index.json", built_dir, "built")
        for name, entry in built.items():
            entries.setdefault(name, entry)
        problems += built_problems
    return entries, problems


def register_built_model(data_dir: Path, name: str, path: Path, card: ModelCard) -> RegistryEntry:
    """Record a model built or trained on this machine so ``--model NAME`` finds it."""
    built_dir = built_models_dir(data_dir)
    built_dir.mkdir(parents=True, exist_ok=True)
    index = built_dir / "index.json"
    raw: dict[str, Any] = {"models": {}}
    if index.is_file():
        try:
            loaded = json.loads(index.read_text())
            if isinstance(loaded, dict) and isinstance(loaded.get("models"), dict):
                raw = loaded
        except (OSError, ValueError):
            pass  # a damaged index is replaced by one that works
    sha = sha256_file(path)
    # A model built here lies in built_dir (its name is enough); a trained one lies where the user wrote it.
    where = path.name if path.resolve().parent == built_dir.resolve() else str(path.resolve())
    raw["models"][name] = {"file": where, "sha256": sha, "card": card_summary(card)}
    write_replacing(index, lambda f: f.write((json.dumps(raw, indent=2) + "\n").encode()))
    return RegistryEntry(name, path, sha, "built", card_summary(card))


def card_summary(card: ModelCard) -> dict[str, Any]:
    return {
        "arch": card.arch,
        "task": card.task,
        "input_size": card.preprocess.input_size,
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
    entries, problems = _registry(data_dir)
    entry = entries.get(name_or_path)
    if entry is None:
        known = ", ".join(sorted(entries)) or "none"
        broken = f"; {problems[0]}" if problems else ""
        raise ModelError(
            f"unknown model {name_or_path!r} (known: {known}; or pass a path to an .onnx file){broken}"
        )
    if not entry.path.is_file():
        if entry.origin == "packaged":
            hint = "reinstall photosift"
        elif data_dir is not None and entry.path.parent == built_models_dir(data_dir):
            hint = f"run `photosift models build {entry.name}`"
        else:  # a trained model, registered where the user wrote it
            hint = "train it again with `photosift train`, or put the file back"
        raise ModelError(f"model {entry.name}: file missing at {entry.path} ({hint})")
    if verify:
        actual = sha256_file(entry.path)
        if actual != entry.sha256:
            raise ModelError(
                f"model {entry.name}: {entry.path} is corrupt (sha256 {actual[:12]}…, expected {entry.sha256[:12]}…)"
            )
    return ResolvedModel(entry.name, entry.path, entry.sha256, entry.origin)


def verify_models(
    data_dir: Path | None, catalog_models: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Every registered model's file, and the file of each model a catalog has results from (``sha256``,
    ``name``, ``path``), checked against its sha256: (rows, problems, warnings). A packaged model missing or
    changed is a problem; a built one, or a catalog's model whose file went away, a warning (its stored results
    stay usable)."""
    checked: dict[Path, str] = {}

    def state(path: Path, sha256: str) -> str:
        if path not in checked:
            checked[path] = (
                "missing" if not path.is_file() else "verified" if sha256_file(path) == sha256 else "changed"
            )
        return checked[path]

    entries, warnings = _registry(data_dir)
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for entry in entries.values():
        verdict = state(entry.path, entry.sha256)
        rows.append({"name": entry.name, "origin": entry.origin, "path": str(entry.path), "file": verdict})
        if verdict != "verified":
            line = f"model {entry.name}: {entry.path} is {verdict}" + (
                " (sha256 differs from the index)" if verdict == "changed" else ""
            )
            (problems if entry.origin == "packaged" else warnings).append(line)
    by_sha = {e.sha256: e for e in entries.values()}
    for m in catalog_models:
        registered = by_sha.get(m["sha256"])
        path = Path(m["path"]) if m["path"] else (registered.path if registered else None)
        verdict = state(path, m["sha256"]) if path is not None else "no file recorded"
        rows.append(
            {"name": m["name"], "origin": "catalog", "path": str(path) if path else None, "file": verdict}
        )
        if verdict != "verified":
            warnings.append(
                f"model {m['name']} ({m['sha256'][:12]}) with results here: file {verdict}; its stored results "
                "stay usable, reclassifying with it needs the file"
            )
    return rows, problems, warnings


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
