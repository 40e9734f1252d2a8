"""Corrections, the personal head and recategorize on a real catalog (real model, real photos, real SQLite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from photosift.album.decisions import MIN_CORRECTIONS, head_path, recategorize
from photosift.album.rules import BUILTIN_RULES, load_rules
from photosift.cli import app
from photosift.core.catalog import Catalog
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
        report = recategorize(cat, lambda _labels: load_rules(), cat.path.parent / "data")
    assert report.photos == 24 and report.changed == 0
    after = {k: (v["category"], round(v["category_score"], 3)) for k, v in _results(db).items()}
    assert after == before


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
    assert [Path(i["path"]).name for i in json.loads(res.stdout)] == ["p01.jpg"]
    res = runner.invoke(app, ["correct", str(photos / "missing.jpg"), "--category", "food", "--db", str(db)])
    assert res.exit_code == 2


def test_personal_head_trains_from_corrections_and_is_applied(library) -> None:
    from photosift.core.config import Settings

    photos, db = library
    items = _results(db)
    # Teach it a user category: the photos made from the coffee picture (p05, p15) are "mornings"; eight other
    # photos are confirmed in the category the rules gave them.
    coffee = ["p05.jpg", "p15.jpg"]
    others = [n for n in sorted(items) if n not in coffee][: MIN_CORRECTIONS - len(coffee)]
    corrections = [(n, items[n]["category"]) for n in others] + [(n, "mornings") for n in coffee]
    assert len({n for n, _ in corrections}) == MIN_CORRECTIONS
    for n, category in corrections[:-1]:
        res = runner.invoke(
            app, ["correct", str(photos / n), "--category", category, "--create", "--db", str(db)]
        )
        assert res.exit_code == 0 and "not trained" in res.output
    with Catalog(db) as c:
        model_sha = c.latest_model()
        assert model_sha is not None
        path = head_path(Settings().data_dir, c.path, model_sha)
    assert not path.exists()
    n, category = corrections[-1]
    res = runner.invoke(
        app, ["correct", str(photos / n), "--category", category, "--create", "--db", str(db)]
    )
    assert res.exit_code == 0 and f"retrained on {MIN_CORRECTIONS} corrections" in res.output
    assert path.is_file()
    # A new photo of the same kind, never corrected, is filed under the user's category by the head.
    Image.open(photos / "p05.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "new.jpg")
    res = runner.invoke(app, ["classify", str(photos), "--db", str(db), "--json"])
    assert json.loads(res.stdout)["classified"] == 1
    new = _results(db)["new.jpg"]
    assert new["category"] == "mornings" and new["corrected_category"] is None
    # ... while the photos the rules got right keep their categories.
    after = _results(db)
    unchanged = [k for k in items if k not in coffee and after[k]["category"] == items[k]["category"]]
    assert len(unchanged) >= len(items) - len(coffee) - 2
