"""The layers docs/ARCHITECTURE.md describes, kept true: which package may import which, and optional extras
that stay optional (the core runs with cv2, torch and fastapi absent)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "photosift"

# package -> the photosift packages its modules may import (besides itself). Lower layers never import higher
# ones; the edges (cli, web) import services and what services return, never each other (serve imports the web
# app lazily, the one way across).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "data": set(),  # package data only (rules, heads, face models, the label hierarchy)
    "models": {"core"},
    "album": {"core", "models"},
    "find": {"core", "models", "album"},
    "run": {"core", "models"},
    "toolchain": {"core", "models"},
    "services": {"core", "models", "album", "find", "run"},
    "bench": {"core", "models", "album", "run", "services", "toolchain"},
    "web": {"core", "models", "album", "find", "run", "services"},
    "cli": {"core", "models", "album", "find", "run", "services", "toolchain", "bench", "web"},
    "__init__": {"core", "models", "services", "run"},
    "__main__": {"cli"},
}


def _package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _photosift_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "photosift" and len(parts) > 1:
                found.add(parts[1])
    return found


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_layers(path: Path) -> None:
    package = _package_of(path)
    assert package in ALLOWED, f"{package}: a new package needs its place in ALLOWED and docs/ARCHITECTURE.md"
    wrong = {p for p in _photosift_imports(path) if p != package and p not in ALLOWED[package]}
    # `from photosift import services` names a module of the top package
    wrong -= {"__version__"}
    assert not wrong, f"{path.relative_to(SRC)} ({package}) imports {sorted(wrong)}"


def test_the_layer_table_is_documented() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "ARCHITECTURE.md").read_text()
    for package in ALLOWED:
        if not package.startswith("__"):
            assert f"`{package}" in doc, f"{package} is not described in docs/ARCHITECTURE.md"


# A finder that makes these imports fail as they would where the extra is not installed.
_BLOCK = """
import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"No module named {{name!r}} (blocked by the test)")
        return None
sys.meta_path.insert(0, _Absent())
from photosift.cli import main
sys.argv = ["photosift", *{args!r}]
main()
"""


def _run_without(blocked: set[str], *args: str, env_dir: Path) -> subprocess.CompletedProcess[str]:
    code = _BLOCK.format(blocked=blocked, args=list(args))
    env = {
        "PATH": "/usr/bin:/bin",
        "PHOTOSIFT_DATA_DIR": str(env_dir / "data"),
        "PHOTOSIFT_CONFIG_DIR": str(env_dir / "config"),
        "HOME": str(env_dir),
    }
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_core_runs_without_the_optional_extras(photos_dir: Path, tmp_path: Path) -> None:
    blocked = {"cv2", "torch", "torchvision", "fastapi", "uvicorn", "starlette", "matplotlib", "ray"}
    db = str(tmp_path / "c.db")
    res = _run_without(
        blocked, "classify", str(photos_dir), "--db", db, "--no-people", "--json", env_dir=tmp_path
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["classified"] == len(list(photos_dir.iterdir())) and summary["errors"] == 0
    for args in (
        ("results", "--db", db, "--format", "json"),
        ("correct", str(photos_dir / "coffee.jpg"), "--category", "food", "--db", db),
        ("recategorize", "--db", db, "--json"),
        ("models", "--json"),
    ):
        res = _run_without(blocked, *args, env_dir=tmp_path)
        assert res.returncode == 0, (args, res.stderr)
        assert "Traceback" not in res.stderr
    # Faces on (the default) without OpenCV: the run finishes and says why there are no faces.
    res = _run_without(blocked, "classify", str(photos_dir), "--db", str(tmp_path / "d.db"), env_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "photosift[people]" in res.stdout + res.stderr and "Traceback" not in res.stderr
    # A command that needs an extra says which one, in one line.
    res = _run_without(blocked, "serve", "--db", db, env_dir=tmp_path)
    assert res.returncode == 1 and "photosift[web]" in res.stderr and "Traceback" not in res.stderr


def test_core_imports_nothing_optional() -> None:
    code = (
        "import sys, photosift.services, photosift.run.driver, photosift.album.decisions, photosift.cli;"
        "heavy = {'cv2', 'torch', 'fastapi', 'matplotlib', 'onnxruntime', 'ray'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
