"""Promises the README makes that no other test held: formats decode to the right pixels, links and loops in a
library, two writers on one catalog at once, a fresh gallery token per launch, and PHOTOSIFT_* settings."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from photosift.cli import app
from photosift.core import imaging, scanner
from testkit import DATA, PHOTOS, ScanGate

runner = CliRunner()


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return Image.open(DATA / "chelsea.jpg").convert("RGB")


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _register_heif() -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()


@pytest.mark.parametrize(
    ("fmt", "name", "tolerance"),
    [
        ("BMP", "cat.bmp", 0.0),
        ("AVIF", "cat.avif", 6.0),
        ("HEIF", "cat.heic", 6.0),
        ("WEBP", "cat.webp", 6.0),
    ],
)
def test_formats_decode_to_the_photos_pixels(cat: Image.Image, fmt: str, name: str, tolerance: float) -> None:
    """Not only "it opens": the decoded pixels are the photo's (lossless BMP exactly, lossy ones closely)."""
    if fmt == "HEIF":
        _register_heif()
    elif fmt == "AVIF":
        from PIL import features

        if not features.check("avif"):
            pytest.skip("this Pillow has no AVIF codec")
    kw = {} if fmt == "BMP" else {"quality": 90}
    data = _save(cat, fmt, **kw)
    im = imaging.decode(data, name, min_side=None)
    assert im.mode == "RGB" and im.size == cat.size
    diff = np.abs(np.asarray(im, np.float32) - np.asarray(cat, np.float32)).mean()
    assert diff <= tolerance, f"{fmt}: mean |Δpixel| {diff:.2f}"
    # and the photo is still the same photo for the model (a mirrored copy would not be this close)
    mirrored = np.abs(np.asarray(im, np.float32)[:, ::-1] - np.asarray(cat, np.float32)).mean()
    assert mirrored > 4 * max(diff, 1.0)


def test_links_and_loops_in_a_library(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    (lib / "a").mkdir(parents=True)
    (lib / "a" / "cat.jpg").write_bytes((DATA / "chelsea.jpg").read_bytes())
    (lib / "a" / "loop").symlink_to(lib, target_is_directory=True)  # a folder link back up: not followed
    (lib / "coffee-link.jpg").symlink_to(DATA / "coffee.jpg")  # a file link: taken, under its own name
    (lib / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    found = sorted(Path(e.path).relative_to(lib).as_posix() for e in scanner.walk([lib]))
    assert found == ["a/cat.jpg", "coffee-link.jpg"]
    db = str(tmp_path / "c.db")
    res = runner.invoke(app, ["classify", str(lib), "--db", db, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["classified"] == 2


@pytest.mark.slow
def test_a_cli_classify_while_the_gallery_scans(tmp_path: Path, engine) -> None:
    """Two writers on one catalog: a `photosift classify` subprocess runs while the gallery's scan thread is
    mid-run (held at its first batch by a gate), and every file of both ends up stored exactly once."""
    pytest.importorskip("fastapi")
    import sqlite3

    from photosift.core.config import Settings
    from photosift.web.scan import ScanManager

    photos = PHOTOS
    web_lib, cli_lib = tmp_path / "web", tmp_path / "cli"
    for lib, tag in ((web_lib, "w"), (cli_lib, "c")):
        lib.mkdir()
        for p in photos:
            (lib / f"{tag}-{p.name}").write_bytes(p.read_bytes())
    db = tmp_path / "c.db"
    gate = ScanGate()  # the gallery's first batch waits in the model until the CLI run has finished
    settings = Settings(db=db, data_dir=tmp_path / "data", config_dir=tmp_path / "config")
    scans = ScanManager(settings, gate.factory(engine, batch_size=4))
    try:
        scans.start(str(web_lib))
        assert gate.entered.wait(60)
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "photosift",
                "classify",
                str(cli_lib),
                "--db",
                str(db),
                "--json",
                "--no-people",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["classified"] == len(photos)
        gate.release.set()
        deadline = time.monotonic() + 120
        while scans.snapshot().active and time.monotonic() < deadline:
            time.sleep(0.05)
        state = scans.snapshot()
        assert state.state == "done", state
    finally:
        gate.release.set()
        scans.shutdown()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        total, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM photos").fetchone()
        assert total == distinct == 2 * len(photos)
        assert conn.execute("SELECT COUNT(*) FROM photos WHERE status = 'ok'").fetchone()[0] == 2 * len(
            photos
        )


def test_every_gallery_launch_has_its_own_token(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from photosift.core.config import Settings
    from photosift.web import app as webapp

    settings = Settings(db=tmp_path / "c.db", data_dir=tmp_path / "d", config_dir=tmp_path / "c")
    tokens = {webapp.create_app(settings).state.token for _ in range(5)}
    assert len(tokens) == 5 and all(len(t) >= 40 for t in tokens)  # 32 random bytes, URL-safe base64


@pytest.mark.slow
def test_photosift_settings_from_the_environment(tmp_path: Path) -> None:
    """PHOTOSIFT_DB, PHOTOSIFT_MODEL, PHOTOSIFT_PEOPLE and PHOTOSIFT_DATA_DIR, as a user sets them."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("chelsea.jpg", "astronaut.jpg"):
        (lib / name).write_bytes((DATA / name).read_bytes())
    env = dict(os.environ)
    env.update(
        PHOTOSIFT_DB=str(tmp_path / "from-env.db"),
        PHOTOSIFT_MODEL="efficientnet-lite0-int8",
        PHOTOSIFT_PEOPLE="false",
        PHOTOSIFT_DATA_DIR=str(tmp_path / "data-home"),
        PHOTOSIFT_CONFIG_DIR=str(tmp_path / "config-home"),
    )

    def photosift(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "photosift", *args], capture_output=True, text=True, env=env
        )

    res = photosift("classify", str(lib), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["model"] == "efficientnet-lite0-int8" and summary["classified"] == 2
    assert (tmp_path / "from-env.db").is_file()
    items = json.loads(photosift("results", "--format", "json").stdout)
    astronaut = next(i for i in items if i["path"].endswith("astronaut.jpg"))
    assert astronaut["model"] == "efficientnet-lite0-int8"
    # PHOTOSIFT_PEOPLE=false: no face was looked for (the stored face signal is empty)
    import sqlite3

    with sqlite3.connect(tmp_path / "from-env.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM results WHERE people IS NOT NULL").fetchone()[0] == 0
    # PHOTOSIFT_DATA_DIR: the default catalog lives there when PHOTOSIFT_DB is not set
    del env["PHOTOSIFT_DB"]
    assert photosift("classify", str(lib), "--json").returncode == 0
    assert (tmp_path / "data-home" / "catalog.db").is_file()


@pytest.mark.slow
def test_a_read_only_catalog_can_be_read_and_is_never_written(tmp_path: Path) -> None:
    """`results`, `search` and `duplicates` read a catalog that cannot be written (file and folder read-only);
    `classify` refuses it with one line; the file stays byte-identical. As root, the commands run without the
    capabilities that let root write anything (otherwise the modes would not bind)."""
    import hashlib

    from photosift.bench.faults import without_root_reads

    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "c.db"
    env = {**os.environ, "PHOTOSIFT_DATA_DIR": str(tmp_path / "data")}
    made = subprocess.run(
        [sys.executable, "-m", "photosift", "classify", str(DATA), "--db", str(db), "--no-people"],
        capture_output=True,
        env=env,
    )
    assert made.returncode == 0, made.stderr
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sqlite3; sqlite3.connect({str(db)!r}).execute('PRAGMA wal_checkpoint(TRUNCATE)')",
        ],
        check=True,
    )
    for leftover in folder.glob("c.db-*"):
        leftover.unlink()
    writable = subprocess.run(
        [sys.executable, "-m", "photosift", "results", "--format", "json", "--db", str(db)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert writable.returncode == 0 and len(json.loads(writable.stdout)) >= 5, writable.stderr
    for leftover in folder.glob("c.db-*"):
        leftover.unlink()
    db.chmod(0o444)
    folder.chmod(0o555)
    prefix = without_root_reads(env) if os.geteuid() == 0 else []
    if os.geteuid() == 0 and not prefix:
        pytest.skip("root, and no way to drop the right to write any file here")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    try:

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            cmd = [*prefix, sys.executable, "-m", "photosift", *args, "--db", str(db)]
            return subprocess.run(cmd, capture_output=True, text=True, env=env)

        rows = run("results", "--format", "json")
        assert rows.returncode == 0, rows.stderr
        assert json.loads(rows.stdout) == json.loads(writable.stdout)
        assert run("search", "cat").returncode == 0
        assert run("duplicates").returncode == 0
        refused = run("classify", str(DATA), "--no-people")
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 1 and len(lines) == 1 and "read-only" in lines[0], refused.stderr
        assert hashlib.sha256(db.read_bytes()).hexdigest() == before
        assert sorted(p.name for p in folder.iterdir()) == ["c.db"]
    finally:
        folder.chmod(0o755)
