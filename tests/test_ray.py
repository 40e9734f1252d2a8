"""The ray engine on a real local Ray instance: the same catalog as the local engine, faults, cancel and resume.

One Ray instance serves the module (starting one costs seconds); the CLI test starts and stops its own, as
`photosift classify --engine ray` does. The fast tests at the top need no Ray.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from photosift.cli import app
from photosift.core.catalog import Catalog
from photosift.core.config import Settings
from photosift.core.errors import ClusterError, ModelError
from photosift.run.ray_executor import KnownHashes, one_line_error
from testkit import DATA, PHOTOS

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="the cluster extra (ray[data]) is not installed")


# -- no Ray needed ------------------------------------------------------------------------------------------------
def test_known_hashes_finds_exactly_the_known_digests() -> None:
    digests = [f"{i:02x}" * 32 for i in (3, 200, 17, 99)]
    known = KnownHashes.of(digests)
    assert len(known) == 4 and all(d in known for d in digests)
    assert "00" * 32 not in known and "ff" * 32 not in known and f"{18:02x}" * 32 not in known
    assert "11" * 32 not in KnownHashes.of([])
    # Anything that is not a sha256 in hex is never a file's content hash (nor a reason to fail).
    assert len(KnownHashes.of(["bench0001", "zz" * 32, digests[0]])) == 1 and "bench0001" not in known


def test_a_workers_photosift_error_comes_back_as_its_own_line() -> None:
    report = RuntimeError(
        "The actor died because of an error raised in its creation task (pid=1, ip=127.0.0.1)\n"
        "Traceback (most recent call last):\n  File 'x.py', line 1, in engine\n"
        "photosift.core.errors.ModelError: /m.onnx: model file not found on node n2 (every node needs it)"
    )
    err = one_line_error(report)
    assert (
        type(err) is ModelError
        and str(err) == "/m.onnx: model file not found on node n2 (every node needs it)"
    )
    other = one_line_error(RuntimeError("The node running the driver died\nmore"))
    assert (
        type(other) is ClusterError and str(other) == "the Ray job failed: The node running the driver died"
    )


def test_worker_options_need_the_ray_engine(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["classify", str(DATA), "--db", str(tmp_path / "c.db"), "--cpus-per-worker", "2"]
    )
    assert res.exit_code == 2 and "--engine ray" in res.output


# -- a local Ray instance ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    if not HAS_RAY:
        pytest.skip("the cluster extra (ray[data]) is not installed")
    from photosift.run.ray_executor import connect

    # 2 cores here: 3 logical CPUs leave one to decoding while an actor holds one.
    ray = connect(None, cpus=3, object_store_mb=512)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test photos, 16 crops of them (distinct content: enough batches that a kill lands mid-run), and one
    file that is not an image (it must come back as an error row)."""
    from PIL import Image

    lib = tmp_path_factory.mktemp("library")
    for p in PHOTOS:
        shutil.copy2(p, lib / p.name)
    jpegs = sorted(DATA.glob("*.jpg"))
    for i in range(16):
        with Image.open(jpegs[i % len(jpegs)]) as im:
            k = 1 + i // len(jpegs)
            im.convert("RGB").crop((k, k, im.width - k, im.height - k)).save(
                lib / f"crop{i:02d}.jpg", quality=85
            )
    (lib / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return lib


def _settings(tmp_path: Path, db: str, **overrides: Any) -> Settings:
    s = Settings(data_dir=tmp_path / "data", db=tmp_path / db, batch_size=4)
    for key, value in overrides.items():
        setattr(s, key, value)
    return s


def _classify(settings: Settings, folder: Path, on_chunk: Callable[[Any], None] | None = None) -> Any:
    from photosift.services import build_pipeline

    pipeline = build_pipeline(settings)
    try:
        return pipeline.run([str(folder)], on_progress=on_chunk)
    finally:
        pipeline.catalog.close()


def _stored(db: Path) -> dict[str, tuple[Any, ...]]:
    """What the catalog says about each path (label, top-5 indices, category, error), one entry per row."""
    with Catalog(db, readonly=True) as cat:
        rows = cat.results()
        out = {
            r.path: (r.status, r.error, r.label, tuple(t["index"] for t in r.top5), r.category) for r in rows
        }
        assert len(out) == len(rows), "a path is stored more than once"
        scores = {r.path: r.score for r in rows}
    out["__scores__"] = tuple(scores[p] or 0.0 for p in sorted(scores))
    return out


@pytest.fixture(scope="module")
def reference(library: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, ...]]:
    """The local engine's catalog of the library: what every ray run must end with."""
    tmp = tmp_path_factory.mktemp("reference")
    summary = _classify(_settings(tmp, "local.db"), library)
    assert summary.errors == 1 and summary.classified == len(list(library.iterdir())) - 1
    return _stored(tmp / "local.db")


def _same(ray_db: Path, reference: dict[str, tuple[Any, ...]]) -> None:
    got = _stored(ray_db)
    got_scores, ref_scores = got.pop("__scores__"), reference["__scores__"]
    assert got == {k: v for k, v in reference.items() if k != "__scores__"}
    # Same tensors and model; only batch composition and ORT's thread count differ, which may move last bits.
    np.testing.assert_allclose(got_scores, ref_scores, rtol=0, atol=1e-5)


@needs_ray
@pytest.mark.slow
def test_ray_engine_stores_what_the_local_engine_stores(
    local_ray: Any, library: Path, reference: dict[str, tuple[Any, ...]], tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    shutil.copytree(library, lib)
    settings = _settings(tmp_path, "ray.db", engine="ray", ray_workers=1, cpus_per_worker=0.5)
    summary = _classify(settings, lib)
    assert (summary.classified, summary.errors, summary.cancelled) == (len(reference) - 2, 1, False)
    assert summary.error_files[0][0] == str(lib / "broken.jpg")
    _same(tmp_path / "ray.db", {k.replace(str(library), str(lib)): v for k, v in reference.items()})
    # A copy under a new name: its content is known, so the decode task recognises it and nothing is inferred.
    shutil.copy2(lib / "chelsea.jpg", lib / "chelsea copy.jpg")
    again = _classify(settings, lib)
    assert (again.classified, again.reused, again.unchanged) == (0, 1, len(reference) - 1)


@needs_ray
@pytest.mark.slow
def test_a_worker_no_node_can_hold_is_refused_in_one_line(
    local_ray: Any, library: Path, tmp_path: Path
) -> None:
    if local_ray.cluster_resources().get("GPU", 0) >= 1:
        pytest.skip("this machine has a GPU")
    settings = _settings(tmp_path, "gpu.db", engine="ray", ray_workers=1, gpus_per_worker=1.0)
    with pytest.raises(ClusterError, match=r"no node of the local Ray instance has 1 CPU and 1 GPU"):
        _classify(settings, library)


def _kill_an_inference_actor() -> int:
    """SIGKILL the process of a running inference actor (what the OOM killer or a lost node does; Ray then
    restarts the actor and retries its batch). Returns the pid killed."""
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        if any("MapBatches(InferActor)" in part for part in proc.info["cmdline"] or ()):
            os.kill(proc.pid, signal.SIGKILL)
            return proc.pid
    raise AssertionError("no inference actor process found")


@needs_ray
@pytest.mark.slow
def test_a_killed_actor_is_replaced_and_every_file_is_stored_once(
    local_ray: Any,
    library: Path,
    reference: dict[str, tuple[Any, ...]],
    tmp_path: Path,
) -> None:
    killed: list[int] = []

    def kill_after_first_chunk(progress: Any) -> None:
        if progress.phase == "classify" and progress.files_done and not killed:
            assert progress.files_done < progress.files_total / 2  # most of the work is still to come
            killed.append(_kill_an_inference_actor())

    settings = _settings(tmp_path, "ray.db", engine="ray", ray_workers=1, cpus_per_worker=0.5, batch_size=2)
    summary = _classify(settings, library, kill_after_first_chunk)
    assert killed and not summary.cancelled
    assert (summary.classified, summary.errors) == (len(reference) - 2, 1)
    _same(tmp_path / "ray.db", reference)


@needs_ray
@pytest.mark.slow
def test_a_cancelled_run_keeps_its_commits_and_a_rerun_finishes(
    local_ray: Any, library: Path, reference: dict[str, tuple[Any, ...]], tmp_path: Path
) -> None:
    cancel = threading.Event()
    settings = _settings(tmp_path, "ray.db", engine="ray", ray_workers=1, cpus_per_worker=0.5, batch_size=2)
    from photosift.services import build_pipeline

    pipeline = build_pipeline(settings)
    first = pipeline.run([str(library)], on_progress=lambda p: p.files_done and cancel.set(), cancel=cancel)
    pipeline.catalog.close()
    assert first.cancelled and 1 <= first.classified + first.errors < len(reference) - 1
    with Catalog(tmp_path / "ray.db", readonly=True) as cat:
        assert len(cat.results()) == first.classified + first.errors  # every committed row is kept
    second = _classify(settings, library)
    assert not second.cancelled
    assert second.unchanged == first.classified + first.errors
    assert second.classified + second.errors == len(reference) - 1 - second.unchanged
    _same(tmp_path / "ray.db", reference)


def _ray_servers() -> set[int]:
    import psutil

    return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in ("gcs_server", "raylet")}


def _crops(folder: Path, n: int) -> Path:
    """n distinct photos (crops of the test photos: different content hashes)."""
    from PIL import Image

    folder.mkdir()
    jpegs = sorted(DATA.glob("*.jpg"))
    for i in range(n):
        with Image.open(jpegs[i % len(jpegs)]) as im:
            k = 1 + i // len(jpegs)
            im.convert("RGB").crop((k, k, im.width - k, im.height - k)).save(
                folder / f"img{i:03d}.jpg", quality=85
            )
    return folder


def _stored_rows(db: Path, proc: subprocess.Popen[str], rows: int, timeout: float = 180) -> int:
    import sqlite3
    import time

    deadline, stored = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and proc.poll() is None and stored < rows:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as c:
                    stored = c.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0  # tables not created yet
        time.sleep(0.02)
    return stored


@needs_ray
@pytest.mark.slow
def test_cli_ctrl_c_stops_the_job_and_a_rerun_finishes(tmp_path: Path) -> None:
    """The CLI starts and stops its own local instance. Ctrl-C in a terminal signals the whole process group,
    Ray's processes included: the run still stops cleanly, keeps its commits, and leaves no Ray process."""
    n = 60
    corpus, db = _crops(tmp_path / "many", n), tmp_path / "cli.db"
    before = _ray_servers()
    cmd = [sys.executable, "-m", "photosift", "classify", str(corpus), "--db", str(db), "--engine", "ray",
           "--workers", "1", "--cpus-per-worker", "0.5", "--batch-size", "2", "--no-people"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    assert _stored_rows(db, proc, 4) >= 4
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in out + err, err[-3000:]
    with Catalog(db, readonly=True) as cat:
        kept = len(cat.results())
    assert 4 <= kept < n
    assert f"stopped after {kept} of {n} files" in " ".join(out.split())  # files done of files planned
    res = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout)  # stdout holds the summary and nothing else
    assert (summary["unchanged"], summary["classified"], summary["errors"]) == (kept, n - kept, 0)
    assert any(note.startswith("engine: ray on a local Ray instance") for note in summary["notes"])
    assert _ray_servers() <= before  # the instances it started are gone


@needs_ray
@pytest.mark.slow
def test_web_scan_runs_on_the_engine_the_settings_choose(
    local_ray: Any, library: Path, reference: dict[str, tuple[Any, ...]], tmp_path: Path
) -> None:
    import time

    from photosift.web.scan import ScanManager

    manager = ScanManager(_settings(tmp_path, "web.db", engine="ray", ray_workers=1, cpus_per_worker=0.5))
    manager.start(str(library))
    deadline = time.monotonic() + 240
    while manager.snapshot().active and time.monotonic() < deadline:
        time.sleep(0.2)
    state = manager.snapshot()
    manager.shutdown()
    assert state.state == "done", state.message
    assert (state.classified, state.errors) == (len(reference) - 2, 1)
    _same(tmp_path / "web.db", reference)
