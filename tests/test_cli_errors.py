"""What a user sees when things are odd: any file name, bad settings, a busy catalog, a busy port.

Real subprocesses where output bytes matter (a name that is not UTF-8 must neither crash nor garble the
output); Typer's runner elsewhere. Every failure is one `error:` line with the right exit code, no traceback.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from photosift.cli import app
from testkit import DATA

runner = CliRunner()


def photosift(
    *args: str | bytes, env: dict[str, str] | None = None, timeout: float = 180
) -> tuple[int, str, str]:
    """Run the real CLI; stdout and stderr must be valid UTF-8 whatever the file names."""
    res = subprocess.run(
        [sys.executable, "-m", "photosift", *args],
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    out, err = res.stdout.decode("utf-8"), res.stderr.decode("utf-8")  # strict: raises on garbage
    assert "Traceback" not in out + err, err
    return res.returncode, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# -- item 1: names that are not UTF-8 ------------------------------------------------------------------------------
@pytest.fixture()
def odd_library(tmp_path: Path) -> tuple[Path, set[bytes]]:
    """Latin-1 names (a file and a folder), a newline and brackets, and an unreadable file with a Latin-1 name."""
    lib = tmp_path / "lib"
    lib.mkdir()
    root = os.fsencode(lib)
    os.mkdir(os.path.join(root, b"caf\xe9"))
    files = {
        os.path.join(root, b"m\xe9nu.jpg"): "coffee.jpg",
        os.path.join(root, b"caf\xe9", b"chat.jpg"): "chelsea.jpg",
        os.path.join(root, b"line\nbreak [holiday].jpg"): "flower.jpg",
    }
    for target, source in files.items():
        shutil.copy(DATA / source, target)
    bad = os.path.join(root, b"bad \xff[red].jpg")
    with open(bad, "wb") as f:
        f.write(b"not an image")
    return lib, {*files, bad}


@pytest.mark.slow
def test_a_non_utf8_library_is_classified_and_round_trips(odd_library, tmp_path: Path) -> None:
    lib, names = odd_library
    db = str(tmp_path / "c.db")
    code, out, err = photosift("classify", str(lib), "--db", db)
    assert code == 0, err
    assert f"skipping {lib}/bad \\xff[red].jpg: not a recognised image format" in err
    assert "classified" in out and "3" in out
    code, out, _ = photosift("classify", str(lib), "--db", db, "--json")
    assert json.loads(out)["unchanged"] == 4  # the rescan finds every stored name again

    code, out, _ = photosift("results", "--db", db, "--format", "json")
    items = json.loads(out)
    exact = {base64.b64decode(i["path_b64"]) if i["path_b64"] else i["path"].encode() for i in items}
    assert exact == names
    menu = next(i for i in items if i["path"].endswith("nu.jpg"))
    assert menu["path"] == str(lib) + "/m\ufffdnu.jpg" and menu["label"] == "espresso"

    code, out, _ = photosift("results", "--db", db, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {base64.b64decode(r["path_b64"]) if r["path_b64"] else r["path"].encode() for r in rows} == names

    code, out, err = photosift("results", "--db", db)
    assert code == 0, err
    flat = out.replace("\n", "").replace("│", "").replace(" ", "")
    assert "m\\xe9nu.jpg" in flat and "line\\nbreak[holiday].jpg" in flat and "bad\\xff[red].jpg" in flat

    code, out, err = photosift(
        "correct", os.path.join(os.fsencode(lib), b"m\xe9nu.jpg"), "--db", db, "--category", "people"
    )
    assert code == 0, err
    assert out.startswith(f"{lib}/m\\xe9nu.jpg: people")


# -- item 4: brackets are text, never Rich markup ------------------------------------------------------------------
@pytest.mark.slow
def test_brackets_in_paths_are_printed_as_they_are(tmp_path: Path) -> None:
    lib = tmp_path / "[holiday] photos"
    (lib / "x[").mkdir(parents=True)
    shutil.copy(DATA / "coffee.jpg", lib / "[holiday] beach.jpg")
    shutil.copy(DATA / "chelsea.jpg", lib / "x[" / "]y.jpg")  # the path holds "[/]"
    (lib / "[bold]bad.jpg").write_bytes(b"no image")
    db = tmp_path / "[red]catalog[/red].db"
    code, out, err = photosift("classify", str(lib), "--db", str(db))
    assert code == 0, err
    assert f"skipping {lib}/[bold]bad.jpg: not a recognised image format" in err
    assert str(db) in out.replace("\n", "").replace(" ", "")
    code, out, err = photosift("results", "--db", str(db))
    assert code == 0, err
    flat = out.replace("\n", "").replace("│", "").replace(" ", "")
    for name in ("[holiday]beach.jpg", "x[/]y.jpg", "[bold]bad.jpg"):
        assert name in flat, name
    code, out, err = photosift(
        "correct", str(lib / "[holiday] beach.jpg"), "--db", str(db), "--category", "food"
    )
    assert code == 0 and out.startswith(f"{lib}/[holiday] beach.jpg: food"), err
    code, _, err = photosift("results", "--db", str(tmp_path / "[x] absent.db"))
    assert (
        one_error_line(err)
        == f"error: {tmp_path}/[x] absent.db: catalog not found (run `photosift classify` first)"
    )


# -- item 4: settings and the model index ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PHOTOSIFT_BATCH_SIZE", "abc"),
        ("PHOTOSIFT_WORKERS", "0"),
        ("PHOTOSIFT_PROVIDER", "bogus"),
        ("PHOTOSIFT_MAX_FILE_MB", "lots"),
        ("PHOTOSIFT_DECODE_MEMORY_MB", "-1"),
    ],
)
def test_a_bad_setting_is_a_usage_error(tmp_path: Path, name: str, value: str) -> None:
    res = runner.invoke(app, ["classify", str(tmp_path), "--db", str(tmp_path / "c.db")], env={name: value})
    assert res.exit_code == 2, res.output
    assert one_error_line(res.output).startswith(f"error: {name}: ")
    assert not (tmp_path / "c.db").exists()


def test_the_provider_setting_is_honoured(tmp_path: Path) -> None:
    shutil.copy(DATA / "coffee.jpg", tmp_path / "a.jpg")
    res = runner.invoke(
        app, ["classify", str(tmp_path), "--db", str(tmp_path / "c.db")], env={"PHOTOSIFT_PROVIDER": "coreml"}
    )
    assert res.exit_code == 1 and "provider coreml" in res.output  # asked for, and not in this build


def test_a_malformed_model_index_is_reported_not_a_traceback(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    (data / "models" / "index.json").write_text("{not json")
    env = {"PHOTOSIFT_DATA_DIR": str(data)}
    res = runner.invoke(app, ["models"], env=env)
    assert res.exit_code == 0 and "efficientnet-lite" in res.stdout
    assert "unreadable model index" in res.output
    (data / "models" / "index.json").write_text(json.dumps({"models": {"mine": {"file": 3}}}))
    res = runner.invoke(
        app, ["classify", str(tmp_path), "--db", str(tmp_path / "c.db"), "--model", "mine"], env=env
    )
    assert res.exit_code == 1
    assert "unknown model 'mine'" in one_error_line(res.output) and "needs 'file' and 'sha256'" in res.output


# -- item 4: a catalog someone else is writing to -------------------------------------------------------------------------
HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_catalog_locked_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    shutil.copy(DATA / "coffee.jpg", tmp_path / "a.jpg")
    db = tmp_path / "c.db"
    assert photosift("classify", str(tmp_path / "a.jpg"), "--db", str(db))[0] == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        shutil.copy(DATA / "chelsea.jpg", tmp_path / "b.jpg")
        code, _, err = photosift(
            "classify", str(tmp_path), "--db", str(db), env={"PHOTOSIFT_BUSY_TIMEOUT_S": "1"}
        )
        assert code == 1
        assert "catalog is busy: another process is writing to it" in one_error_line(err)
        code, _, err = photosift(
            "correct",
            str(tmp_path / "a.jpg"),
            "--db",
            str(db),
            "--category",
            "food",
            env={"PHOTOSIFT_BUSY_TIMEOUT_S": "1"},
        )
        assert code == 1 and "catalog is busy" in one_error_line(err)
    finally:
        holder.kill()
        holder.wait()


# -- item 9: the small ones -------------------------------------------------------------------------------------------
@pytest.fixture()
def classified(tmp_path: Path) -> tuple[Path, Path]:
    lib = tmp_path / "a"
    lib.mkdir()
    shutil.copy(DATA / "coffee.jpg", lib / "x.jpg")
    db = tmp_path / "c.db"
    assert runner.invoke(app, ["classify", str(lib), "--db", str(db)]).exit_code == 0
    return lib, db


def test_correct_understands_dot_dot(classified, monkeypatch: pytest.MonkeyPatch) -> None:
    lib, db = classified
    monkeypatch.chdir(lib.parent)
    res = runner.invoke(app, ["correct", "a/../a/x.jpg", "--category", "people", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"{lib}/x.jpg: people")


@pytest.mark.parametrize("command", [["correct", "x.jpg", "--category", "food"], ["recategorize"]])
def test_a_mistyped_db_creates_nothing(tmp_path: Path, command: list[str]) -> None:
    typo = tmp_path / "catalgo.db"
    res = runner.invoke(app, [*command, "--db", str(typo)])
    assert res.exit_code == 1 and "catalog not found" in one_error_line(res.output)
    assert not typo.exists()


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "", " ", "x" * 200])
def test_a_new_category_name_must_be_one_short_line(classified, name: str) -> None:
    lib, db = classified
    res = runner.invoke(app, ["correct", str(lib / "x.jpg"), "--category", name, "--create", "--db", str(db)])
    assert res.exit_code == 2 and "category name" in one_error_line(res.output)
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT COUNT(*) FROM user_categories").fetchone()[0] == 0


@pytest.mark.slow
def test_serve_on_a_busy_port_is_one_line_exit_1(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = photosift("serve", "--db", str(tmp_path / "c.db"), "--port", str(port), timeout=60)
    assert code == 1
    lines = [
        line for line in err.splitlines() if line.strip() and not line.startswith("photosift gallery on")
    ]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}"), err


def test_serve_refuses_to_bind_beyond_loopback(tmp_path: Path) -> None:
    res = runner.invoke(app, ["serve", "--db", str(tmp_path / "c.db"), "--host", "0.0.0.0"])
    assert res.exit_code == 2 and "loopback" in one_error_line(res.output)
