"""The command line through Typer's runner and as a real subprocess: exit codes, formats, SIGKILL, no network."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from photosift.cli import app
from testkit import DATA

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_classify_and_results_formats(photos_dir: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    res = run("classify", str(photos_dir), "--db", db, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert (
        summary["classified"] == len(list(photos_dir.iterdir()))
        and summary["provider"] == "CPUExecutionProvider"
    )

    res = run("results", "--db", db, "--format", "json")
    items = json.loads(res.stdout)
    assert {
        "path",
        "status",
        "error",
        "label",
        "score",
        "category",
        "category_score",
        "top5",
        "model",
        "corrected_category",
    } <= set(items[0])
    assert all(os.path.isabs(i["path"]) and i["status"] == "ok" for i in items)
    assert [t["score"] for t in items[0]["top5"]] == sorted(
        (t["score"] for t in items[0]["top5"]), reverse=True
    )

    res = run("results", "--db", db, "--format", "csv", "--limit", "3")
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 3 and rows[0]["label"]

    res = run("results", "--db", db)
    assert res.exit_code == 0 and "coffee" in res.stdout


def test_exit_codes(tmp_path: Path, lite0) -> None:
    assert run("classify", str(tmp_path / "nope"), "--db", str(tmp_path / "c.db")).exit_code == 2
    assert run("classify", "--batch-size", "0", str(tmp_path)).exit_code == 2
    assert run("results", "--db", str(tmp_path / "absent.db")).exit_code == 1
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    res = run("classify", str(tmp_path), "--db", str(tmp_path / "c.db"), "--model", str(bad))
    assert res.exit_code == 1 and "bad.onnx" in res.output
    res = run("classify", str(tmp_path), "--db", str(tmp_path / "c.db"), "--model", "no-such-model")
    assert res.exit_code == 1 and "unknown model" in res.output


@pytest.mark.slow
def test_awkward_corpus_finishes_with_exit_zero(tmp_path: Path) -> None:
    corpus = tmp_path / "awkward"
    corpus.mkdir()
    cat = Image.open(DATA / "chelsea.jpg")
    rgba = cat.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(corpus / "alpha.png")
    cat.convert("P").save(corpus / "palette.gif")
    cat.convert("CMYK").save(corpus / "cmyk.jpg")
    cat.save(corpus / "progressive.jpg", progressive=True)
    cat.save(corpus / "pages.tiff", save_all=True, append_images=[cat.convert("L")])
    cat.save(corpus / "anim.webp", save_all=True, append_images=[cat.rotate(90)])
    (corpus / "garbage.jpg").write_bytes(os.urandom(4096))
    (corpus / "zero.heic").write_bytes(b"")
    good = (DATA / "coffee.jpg").read_bytes()
    (corpus / "truncated.jpg").write_bytes(good[:2000])
    db = str(tmp_path / "c.db")
    res = subprocess.run(
        [sys.executable, "-m", "photosift", "classify", str(corpus), "--db", db],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for name in ("garbage.jpg", "zero.heic", "truncated.jpg"):
        assert f"skipping {corpus / name}:" in res.stderr
    items = json.loads(run("results", "--db", db, "--format", "json").stdout)
    by_name = {Path(i["path"]).name: i for i in items}
    assert len(by_name) == 9
    assert {n for n, i in by_name.items() if i["status"] == "error"} == {
        "garbage.jpg",
        "zero.heic",
        "truncated.jpg",
    }
    assert all(i["error"] for i in items if i["status"] == "error")
    assert all(i["label"] for i in items if i["status"] == "ok")


def _corpus(tmp_path: Path, n: int) -> Path:
    """n distinct real photos (different crops of the test photos, so different content hashes)."""
    corpus = tmp_path / "many"
    corpus.mkdir()
    sources = [Image.open(p).convert("RGB") for p in sorted(DATA.glob("*.jpg"))]
    for i in range(n):
        im = sources[i % len(sources)]
        k = i // len(sources)
        im.crop((k, k, im.width - k, im.height - k)).save(corpus / f"img{i:03d}.jpg", quality=85)
    return corpus


def _slow_classify(corpus: Path, db: Path) -> list[str]:
    """A classify command with small batches and one loader, so it commits often and can be interrupted."""
    return [sys.executable, "-m", "photosift", "classify", str(corpus), "--db", str(db), "--batch-size", "4",
            "--workers", "1"]  # fmt: skip


# The same command with a gate in the engine, so a test interrupts it at a known point instead of racing it:
# after GATE_AFTER batches the next inference announces itself (GATE_FILE) and waits for RELEASE_FILE.
GATED = """
import os, sys, time
from photosift.models import session
real, calls = session.OrtEngine.run, [0]
def gated(self, batch):
    calls[0] += 1
    if calls[0] == int(os.environ["GATE_AFTER"]) + 1:
        open(os.environ["GATE_FILE"], "w").close()
        while not os.path.exists(os.environ["RELEASE_FILE"]):
            time.sleep(0.01)
    return real(self, batch)
session.OrtEngine.run = gated
from photosift.cli import main
sys.argv = ["photosift", *sys.argv[1:]]
main()
"""


def _gated_classify(
    corpus: Path, db: Path, tmp_path: Path, after: int, **popen: Any
) -> tuple[subprocess.Popen, Path, Path]:
    gate, release = tmp_path / "gate", tmp_path / "release"
    env = {**os.environ, "GATE_AFTER": str(after), "GATE_FILE": str(gate), "RELEASE_FILE": str(release)}
    args = _slow_classify(corpus, db)[3:]  # after "python -m photosift"
    proc = subprocess.Popen([sys.executable, "-c", GATED, *args], env=env, **popen)
    deadline = time.monotonic() + 120
    while not gate.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the gated run never reached its gate"
        time.sleep(0.01)
    return proc, gate, release


@pytest.mark.slow
def test_sigkill_mid_run_loses_nothing_committed(tmp_path: Path) -> None:
    n = 120
    db = tmp_path / "c.db"
    corpus = _corpus(tmp_path, n)
    cmd = _slow_classify(corpus, db)
    # Killed while its 4th batch is in the model: the 3 batches before it are committed, nothing else.
    proc, _, _ = _gated_classify(
        corpus, db, tmp_path, after=3, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        after_kill = c.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
    assert after_kill == 3 * 4
    res = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["unchanged"] == after_kill
    assert summary["classified"] == n - after_kill
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert c.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM photos").fetchone() == (n, n)
        assert (
            c.execute(
                "SELECT COUNT(*) FROM photos p JOIN results r ON r.content_hash = p.content_hash"
            ).fetchone()[0]
            == n
        )


# Network use: tests/test_offline.py (every command, recorded from outside the hook's reach, and in a
# network namespace).


def test_models_listing() -> None:
    res = run("models", "--json")
    assert res.exit_code == 0
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    lite0 = rows["efficientnet-lite0"]
    assert lite0["present"] and lite0["input_size"] == 224 and len(lite0["sha256"]) == 64


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_committed_work(tmp_path: Path) -> None:
    n = 120
    db = tmp_path / "c.db"
    corpus = _corpus(tmp_path, n)
    cmd = _slow_classify(corpus, db)
    # Ctrl-C while the 3rd batch is in the model; the run then finishes that batch and what is decoded.
    proc, _, release = _gated_classify(
        corpus, db, tmp_path, after=2, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)  # let the handler run before the batch goes on (either order gives the same result)
    release.touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kept = c.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
    assert 3 * 4 <= kept <= 3 * 4 + 8 < n  # + at most the files in flight (queue depth 8)
    # files done of files planned, not "120 seen" as if the run had looked at them all
    assert f"stopped after {kept} of {n} files" in " ".join(out.split())
    res = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    summary = json.loads(res.stdout)
    assert summary["unchanged"] == kept and summary["classified"] == n - kept
