"""Corrections, the personal head, undo and recategorize on a real catalog (real model, photos, SQLite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from photosift import services
from photosift.album.decisions import recategorize
from photosift.album.rules import BUILTIN_RULES
from photosift.cli import app
from photosift.core.catalog import Catalog
from photosift.core.config import Settings
from testkit import PHOTOS

runner = CliRunner()


@pytest.fixture()
def library(tmp_path: Path) -> tuple[Path, Path]:
    """24 distinct real photos (the test photos and crops of them) classified into a fresh catalog."""
    photos = tmp_path / "lib"
    photos.mkdir()
    sources = PHOTOS
    for i in range(24):
        im = Image.open(sources[i % len(sources)]).convert("RGB")
        k = 12 * (i // len(sources))
        im.crop((k, k, im.width - k, im.height - k)).save(photos / f"p{i:02d}.jpg", quality=90)
    db = tmp_path / "c.db"
    res = runner.invoke(app, ["classify", str(photos), "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    return photos, db


def _results(db: Path) -> dict[str, dict]:
    res = runner.invoke(app, ["results", "--db", str(db), "--format", "json"])
    return {Path(i["path"]).name: i for i in json.loads(res.stdout)}


def test_recategorize_reproduces_stored_categories_without_the_model(library) -> None:
    _, db = library
    before = {k: (v["category"], round(v["category_score"], 3)) for k, v in _results(db).items()}
    with Catalog(db) as cat:
        report = recategorize(cat, services.rules_for(Settings()))  # all of them, in vectorised chunks
    assert report.photos == 24 and report.changed == 0
    after = {k: (v["category"], round(v["category_score"], 3)) for k, v in _results(db).items()}
    assert after == before


def test_each_result_records_what_decided_it_and_stale_ones_are_rederived(library) -> None:
    _, db = library
    res = runner.invoke(app, ["recategorize", "--db", str(db), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["results"] == 0  # classify stamped them all current
    before = {k: (v["category"], round(v["category_score"], 3)) for k, v in _results(db).items()}
    with Catalog(db) as cat:
        cat.db.execute(
            "UPDATE results SET decided_by = NULL WHERE rowid % 3 = 0"
        )  # as an older photosift left them
        stale = services.stale_results(Settings(), cat)
    assert stale == 8
    res = runner.invoke(app, ["recategorize", "--db", str(db), "--json"])
    assert json.loads(res.stdout) == {**json.loads(res.stdout), "results": 8, "changed": 0}
    assert {k: (v["category"], round(v["category_score"], 3)) for k, v in _results(db).items()} == before
    with Catalog(db) as cat:
        assert services.stale_results(Settings(), cat) == 0


def test_edited_rules_change_categories_on_recategorize(library, tmp_path: Path) -> None:
    _, db = library
    strict = tmp_path / "strict.yaml"
    text = BUILTIN_RULES.read_text().replace("min_confidence: 0.35", "min_confidence: 0.999")
    # With the learned head on (as shipped) the thresholds do not decide; off, the edited rules decide alone.
    strict.write_text(text)
    res = runner.invoke(app, ["recategorize", "--db", str(db), "--rules", str(strict), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["changed"] == 0
    strict.write_text(text.replace("\nlearned_head: on\n", "\nlearned_head: off\n"))
    res = runner.invoke(app, ["recategorize", "--db", str(db), "--rules", str(strict), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["changed"] > 0 and report["categories"].get("other", 0) > 12


def test_malformed_rules_name_the_line(library, tmp_path: Path) -> None:
    _, db = library
    bad = tmp_path / "bad.yaml"
    text = BUILTIN_RULES.read_text().replace("- 151 Chihuahua", "- 151 Chihuahaua")
    bad.write_text(text)
    line = next(n for n, ln in enumerate(text.splitlines(), 1) if "Chihuahaua" in ln)
    res = runner.invoke(app, ["recategorize", "--db", str(db), "--rules", str(bad)])
    assert res.exit_code == 1
    assert f"bad.yaml:{line}" in res.output and "Chihuahua" in res.output


def test_correction_wins_and_survives_rename_and_reclassification(library) -> None:
    photos, db = library
    res = runner.invoke(app, ["correct", str(photos / "p00.jpg"), "--category", "food", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert _results(db)["p00.jpg"]["corrected_category"] == "food"
    assert "p00.jpg" in {
        Path(i["path"]).name
        for i in json.loads(
            runner.invoke(app, ["results", "--db", str(db), "--category", "food", "--format", "json"]).stdout
        )
    }
    (photos / "p00.jpg").rename(photos / "renamed.jpg")
    res = runner.invoke(app, ["classify", str(photos), "--db", str(db), "--json", "--retry-errors"])
    assert json.loads(res.stdout)["reused"] == 1
    assert _results(db)["renamed.jpg"]["corrected_category"] == "food"
    res = runner.invoke(app, ["correct", str(photos / "renamed.jpg"), "--clear", "--db", str(db)])
    assert res.exit_code == 0 and _results(db)["renamed.jpg"]["corrected_category"] is None


def test_unknown_category_is_rejected_or_created(library) -> None:
    photos, db = library
    res = runner.invoke(app, ["correct", str(photos / "p01.jpg"), "--category", "receipts", "--db", str(db)])
    assert res.exit_code == 2 and "known: animals" in res.output
    res = runner.invoke(app, ["correct", str(photos / "p01.jpg"), "--category", "anmals", "--db", str(db)])
    assert res.exit_code == 2 and "did you mean 'animals'" in res.output
    res = runner.invoke(
        app, ["correct", str(photos / "p01.jpg"), "--category", "receipts", "--create", "--db", str(db)]
    )
    assert res.exit_code == 0, res.output
    assert _results(db)["p01.jpg"]["corrected_category"] == "receipts"
    res = runner.invoke(app, ["results", "--db", str(db), "--category", "receipts", "--format", "json"])
    # p11 and p21 are crops of p01: they follow it into the new category.
    assert [Path(i["path"]).name for i in json.loads(res.stdout)] == ["p01.jpg", "p11.jpg", "p21.jpg"]
    res = runner.invoke(app, ["correct", str(photos / "missing.jpg"), "--category", "food", "--db", str(db)])
    assert res.exit_code == 2


def _correct(photos: Path, db: Path, name: str, *args: str) -> str:
    res = runner.invoke(app, ["correct", str(photos / name), *args, "--db", str(db)])
    assert res.exit_code == 0, res.output
    return res.stdout


def _shown(db: Path) -> dict[str, str]:
    return {k: v["corrected_category"] or v["category"] for k, v in _results(db).items()}


def test_a_correction_moves_only_near_duplicates_and_says_which(library) -> None:
    photos, db = library
    before = _shown(db)
    # p03, p13 and p23 are the cat photo and two crops of it; nothing else looks like it.
    out = _correct(photos, db, "p03.jpg", "--category", "our cat", "--create")
    assert f"p03.jpg: our cat (was {before['p03.jpg']})" not in out  # "was" only names an earlier correction
    assert "2 other photos moved: p13.jpg animals→our cat, p23.jpg animals→our cat" in out
    after = _shown(db)
    assert after["p13.jpg"] == after["p23.jpg"] == "our cat"
    assert {k: v for k, v in after.items() if k not in ("p03.jpg", "p13.jpg", "p23.jpg")} == {
        k: v for k, v in before.items() if k not in ("p03.jpg", "p13.jpg", "p23.jpg")
    }
    # Confirming a photo the rules got right moves nothing that did not look like it already.
    out = _correct(photos, db, "p06.jpg", "--category", before["p06.jpg"])
    assert "no other photo moved" in out


def test_undo_takes_back_a_correction_and_what_it_moved(library) -> None:
    photos, db = library
    before, full_before = _shown(db), _results(db)
    _correct(photos, db, "p03.jpg", "--category", "food")
    _correct(photos, db, "p03.jpg", "--category", "plants")
    assert _shown(db)["p13.jpg"] == "plants"
    out = _correct(photos, db, "p03.jpg", "--undo")
    assert "p03.jpg: correction undone, back to food" in out
    assert "2 other photos moved: p13.jpg plants→food, p23.jpg plants→food" in out
    out = _correct(photos, db, "p03.jpg", "--undo", "--json")
    report = json.loads(out)
    assert report["corrected_category"] is None and report["previous"] == "food"
    assert [(Path(m["path"]).name, m["from"], m["to"]) for m in report["moved"]] == [
        ("p13.jpg", "food", "animals"),
        ("p23.jpg", "food", "animals"),
    ]
    assert _shown(db) == before
    assert _results(db) == full_before  # every field of every photo, the head's decisions and scores too
    res = runner.invoke(app, ["correct", str(photos / "p03.jpg"), "--undo", "--db", str(db)])
    assert res.exit_code == 2 and "no correction to undo" in res.output
    with Catalog(db) as cat:  # every step is in the history, with what it moved
        events = cat.db.execute("SELECT before, after, undoes IS NOT NULL FROM correction_history").fetchall()
    assert [tuple(e) for e in events] == [
        (None, "food", 0),
        ("food", "plants", 0),
        ("plants", "food", 1),
        ("food", None, 1),
    ]


def test_a_new_near_duplicate_follows_a_correction_when_classified(library) -> None:
    photos, db = library
    out = _correct(photos, db, "p05.jpg", "--category", "mornings", "--create")
    assert "p15.jpg food→mornings" in out  # the crop of the same coffee photo
    Image.open(photos / "p05.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "new.jpg")
    res = runner.invoke(app, ["classify", str(photos), "--db", str(db), "--json"])
    assert json.loads(res.stdout)["classified"] == 1
    new = _results(db)["new.jpg"]
    assert new["category"] == "mornings" and new["corrected_category"] is None


def test_a_correction_made_during_a_scan_reaches_photos_stored_after_it(library) -> None:
    photos, db = library
    Image.open(photos / "p05.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "new.jpg")
    settings = Settings(db=db)
    corrected: list[str] = []

    def correct_in_the_gallery(progress) -> None:  # type: ignore[no-untyped-def]
        # The run has loaded its personal head already; the correction lands before new.jpg is stored.
        if progress.phase == "classify" and not corrected:
            with Catalog(db) as other:
                h = other.content_hash_of(str(photos / "p05.jpg"))
                assert h is not None
                services.correct_hash(settings, other, h, "mornings", create=True)
            corrected.append("p05")

    summary = services.classify(settings, [photos], on_progress=correct_in_the_gallery)
    assert corrected and summary.classified == 1
    assert _results(db)["new.jpg"]["category"] == "mornings"


def test_a_photos_own_correction_wins_over_the_head(library) -> None:
    photos, db = library
    out = _correct(photos, db, "p13.jpg", "--category", "plants")
    assert "2 other photos moved: p03.jpg animals→plants, p23.jpg animals→plants" in out
    # p03's own correction wins over the head that moved it; p23 stays with its nearest correction, p13.
    out = _correct(photos, db, "p03.jpg", "--category", "food")
    assert "no other photo moved" in out
    shown = _shown(db)
    assert (shown["p03.jpg"], shown["p13.jpg"], shown["p23.jpg"]) == ("food", "plants", "plants")
    out = _correct(photos, db, "p13.jpg", "--clear")
    assert "1 other photo moved: p23.jpg plants→food" in out  # now p03 is the nearest correction


def test_a_catalog_from_before_the_history_is_upgraded_and_rederived(tmp_path: Path, lite0) -> None:
    import sqlite3

    import numpy as np

    from photosift.core.catalog import MIGRATIONS

    db = tmp_path / "old.db"
    raw = sqlite3.connect(db)
    raw.execute("CREATE TABLE migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL)")
    for version, step in enumerate(MIGRATIONS[:2], start=1):  # the schema photosift wrote before
        step(raw)
        raw.execute("INSERT INTO migrations VALUES (?, ?, 0)", (version, step.__name__))
    raw.execute(
        "INSERT INTO models(sha256, name, path, labels, task) VALUES (?, 'lite0', ?, ?, 'classify')",
        (lite0.sha256, str(lite0.path), json.dumps(list(lite0.card.labels))),
    )
    vector = np.random.default_rng(0).random(1280).astype(np.float16)
    raw.execute(
        "INSERT INTO results (content_hash, model_sha256, label_index, score, top5, topk_index, topk_prob, "
        "category, created_at) VALUES ('h1', ?, 0, 0.5, '[]', ?, ?, 'objects', 0)",
        (lite0.sha256, np.zeros(1, np.uint16).tobytes(), np.ones(1, np.float16).tobytes()),
    )
    raw.execute("INSERT INTO embeddings VALUES ('h1', ?, ?)", (lite0.sha256, vector.tobytes()))
    raw.commit()
    raw.close()
    with Catalog(db) as cat:  # migrates: nothing says what decided the old category, so it is stale
        assert cat.schema_version() == len(MIGRATIONS) and cat.corrections_version() == 0
        assert services.stale_results(Settings(), cat) == 1
        report = recategorize(cat, services.rules_for(Settings()), only_stale=True)
        assert report.photos == 1 and services.stale_results(Settings(), cat) == 0
