"""`photosift doctor`: a damaged catalog is noticed, explained, never written to, and what is readable recovered."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from photosift.cli import app
from photosift.core.catalog import Catalog
from test_catalog import damaged_catalog, fill, foreign_database
from testkit import DATA

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def test_a_healthy_catalog(tmp_path: Path) -> None:
    shutil.copy(DATA / "coffee.jpg", tmp_path / "a.jpg")
    db = tmp_path / "c.db"
    assert run("classify", str(tmp_path / "a.jpg"), "--db", str(db)).exit_code == 0
    res = run("doctor", "--db", str(db), "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["ok"] and report["catalog"]["owner"] == "photosift"
    assert report["catalog"]["integrity"] == ["ok"]
    assert report["catalog"]["schema_version"] == report["catalog"]["schema_current"]
    assert report["catalog"]["rows"]["photos"] == 1 and report["catalog"]["photos"] == {"ok": 1}
    files = {(m["name"], m["origin"]): m["file"] for m in report["models"]}
    assert files[("efficientnet-lite0", "packaged")] == "verified"
    assert files[("efficientnet-lite0", "catalog")] == "verified"
    table = run("doctor", "--db", str(db))
    assert table.exit_code == 0 and "healthy" in table.stdout


def test_a_damaged_catalog_is_refused_explained_and_recovered(tmp_path: Path) -> None:
    db = damaged_catalog(tmp_path)
    before = db.read_bytes()
    shutil.copy(DATA / "coffee.jpg", tmp_path / "new.jpg")
    # classify used to exit 0 and keep writing into the damaged file; results then died on "malformed"
    res = run("classify", str(tmp_path / "new.jpg"), "--db", str(db))
    assert res.exit_code == 1
    line = error_line(res.output)
    assert "catalog is damaged" in line and f"photosift doctor --db {db}" in line
    assert db.read_bytes() == before
    res = run("results", "--db", str(db))
    assert res.exit_code == 1 and "catalog is damaged" in error_line(res.output)

    res = run("doctor", "--db", str(db), "--json")
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    assert not report["ok"] and report["problems"][0].startswith("damaged: ")

    out = tmp_path / "recovered.db"
    res = run("doctor", "--db", str(db), "--recover", str(out))
    assert res.exit_code == 1  # the checked catalog is still damaged; the copy is not
    assert f"recovered into {out}" in " ".join(res.stdout.split())
    assert db.read_bytes() == before
    with Catalog(out, readonly=True) as cat:
        rows = cat.results()
        assert cat.integrity_check() == "ok"
    assert len(rows) >= 360  # 8 KB of garbage costs a few pages of 400 photos' rows, not the catalog
    res = run("doctor", "--db", str(out), "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"]
    assert run("classify", str(tmp_path / "new.jpg"), "--db", str(out)).exit_code == 0
    assert run("doctor", "--db", str(out), "--recover", str(out)).exit_code == 1  # never overwrites


def test_another_programs_database_is_reported_and_untouched(tmp_path: Path) -> None:
    other = tmp_path / "notes.db"
    before = foreign_database(other)
    res = run("doctor", "--db", str(other), "--json")
    assert res.exit_code == 1 and json.loads(res.stdout)["catalog"]["owner"] == "foreign"
    res = run("doctor", "--db", str(other), "--recover", str(tmp_path / "out.db"))
    assert res.exit_code == 1 and "not a photosift catalog" in res.output
    assert other.read_bytes() == before and not (tmp_path / "out.db").exists()


def test_a_model_file_that_went_away_is_a_warning(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with Catalog(db) as cat:
        fill(cat, ["/p/a.jpg"])
        cat.db.execute("UPDATE models SET path = ?", (str(tmp_path / "exported.onnx"),))
    res = run("doctor", "--db", str(db), "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert any("test-model" in w and "file missing" in w for w in report["warnings"])


def test_a_missing_catalog(tmp_path: Path) -> None:
    res = run("doctor", "--db", str(tmp_path / "absent.db"))
    assert res.exit_code == 1 and "no such catalog" in res.output
    assert not (tmp_path / "absent.db").exists()


def test_damage_that_keeps_the_files_metadata_is_still_one_line(tmp_path: Path) -> None:
    """The check at open is skipped for a file in the state its last writer recorded (core/checkrecord.py); a
    disk that corrupts pages without touching the file's size or mtime is then met by SQLite when the damaged
    page is read: one line that names doctor, no traceback — and doctor finds it."""
    import os

    from test_catalog import damage

    db = tmp_path / "c.db"
    with Catalog(db) as cat:
        fill(cat, [f"/library/{i:04d}.jpg" for i in range(400)])
    st = db.stat()
    damage(db)
    os.utime(db, ns=(st.st_atime_ns, st.st_mtime_ns))
    res = run("results", "--db", str(db))
    assert res.exit_code == 1
    line = error_line(res.output)
    assert "photosift doctor" in line and "malformed" in line
    res = run("doctor", "--db", str(db), "--json")
    assert res.exit_code == 1 and json.loads(res.stdout)["problems"][0].startswith("damaged: ")
