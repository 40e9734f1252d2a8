"""Finding photos on a real catalog: the test photos, a re-encoded + resized copy, a 92 % crop, a byte-identical
copy in another folder and EXIF-dated copies, classified by the real pipeline and the packaged model.

Search by meaning (hypernyms, class names, categories, paths, dates), similar photos, near-duplicates (with the
exact and the reduced vector index), dates and cameras read at scan time and filled in for older catalogs, the
CLI's output shapes, and hiding.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from photosift import services
from photosift.album.decisions import AlbumClassifier
from photosift.album.rules import load_rules
from photosift.cli import app
from photosift.core import photometa
from photosift.core.catalog import Catalog
from photosift.core.config import Settings
from photosift.find import hierarchy
from photosift.find.duplicates import find_groups
from photosift.find.library import finder, forget, load_vectors
from photosift.find.search import class_weights
from photosift.find.vectors import VectorIndex
from photosift.models.card import imagenet_labels
from photosift.run.driver import ClassifyOptions, Pipeline
from testkit import DATA, PHOTOS

DATED = {"rocket_2019.jpg": "2019:06:15 10:30:00", "china_2021.jpg": "2021:03:02 08:00:00"}


def exif_bytes(src: Path, taken: str, camera: tuple[str, str] | None = None, gps: bool = False) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(photometa.IFD_EXIF)[photometa.TAG_DATETIME_ORIGINAL] = taken
    if camera:
        exif[photometa.TAG_MAKE], exif[photometa.TAG_MODEL] = camera
    if gps:
        exif.get_ifd(photometa.IFD_GPS)[1] = "N"
        exif.get_ifd(photometa.IFD_GPS)[photometa.GPS_LATITUDE] = (52.0, 13.0, 0.0)
    buf = io.BytesIO()
    with Image.open(src) as im:
        im.convert("RGB").save(buf, "JPEG", quality=92, exif=exif)
    return buf.getvalue()


def make_library(root: Path) -> Path:
    lib = root / "photos"
    (lib / "garden").mkdir(parents=True)
    for p in PHOTOS:
        shutil.copy2(p, lib / p.name)
    with Image.open(DATA / "chelsea.jpg") as im:  # re-encoded and resized
        im.resize((im.width * 2 // 3, im.height * 2 // 3)).save(lib / "chelsea_small.jpg", quality=70)
    with Image.open(DATA / "coffee.jpg") as im:  # a 92 % centre crop
        w, h = im.size
        im.crop((int(w * 0.04), int(h * 0.04), int(w * 0.96), int(h * 0.96))).save(lib / "coffee_crop.jpg")
    shutil.copy2(DATA / "flower.jpg", lib / "garden" / "flower_copy.jpg")  # identical bytes
    (lib / "rocket_2019.jpg").write_bytes(
        exif_bytes(DATA / "rocket.jpg", DATED["rocket_2019.jpg"], ("Canon", "Canon EOS 80D"), gps=True)
    )
    (lib / "china_2021.jpg").write_bytes(exif_bytes(DATA / "china.jpg", DATED["china_2021.jpg"]))
    return lib


def classify(engine: Any, lib: Path, db: Path) -> Any:
    with Catalog(db) as cat:
        pipe = Pipeline(
            engine, cat, AlbumClassifier(load_rules()), options=ClassifyOptions(batch_size=8, workers=2)
        )
        return pipe.run([str(lib)])


@pytest.fixture(scope="module")
def library(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    root = tmp_path_factory.mktemp("find")
    lib = make_library(root)
    db = root / "catalog.db"
    summary = classify(engine, lib, db)
    # the identical copy is content the run already met: reused, not inferred
    assert summary.errors == 0 and summary.classified + summary.reused == len(list(lib.rglob("*.*")))
    settings = Settings(db=db, data_dir=root / "data", config_dir=root / "config")
    yield settings, lib
    forget(db)


def names(items: list[services.Found]) -> list[str]:
    return [Path(f.row.path).name for f in items]


# -- search --------------------------------------------------------------------------------------------------
def test_hypernym_finds_hyponyms_and_not_their_siblings(library) -> None:
    settings, _ = library
    cats = services.search(settings, "cat")
    assert {"chelsea.jpg", "chelsea_small.jpg"} <= set(names(cats.items))
    top1 = cats.items[0].row.top5[0]["index"]
    match = hierarchy.classes_matching("cat")[top1]
    assert match.depth > 0  # the top-1 ("Egyptian Mau") is a kind of cat, not the word itself
    assert "cat" in cats.items[0].why[0]
    assert "coffee.jpg" not in names(cats.items) and "flower.jpg" not in names(cats.items)
    # the siblings of the photo's classes: dogs (beside cats under carnivore), big cats (beside domestic cats)
    for sibling in ("dog", "big cat", "lion"):
        assert "chelsea.jpg" not in names(services.search(settings, sibling).items), sibling
    carnivores = names(services.search(settings, "carnivores").items)  # plural, higher up
    assert "chelsea.jpg" in carnivores and "coffee.jpg" not in carnivores
    drinks = names(services.search(settings, "beverage").items)
    assert "coffee.jpg" in drinks and "chelsea.jpg" not in drinks


def test_ranking_is_mass_not_top1_only(library) -> None:
    settings, _ = library
    page = services.search(settings, "cat")
    for f in page.items:
        row = f.row
        assert (
            row.label is not None and "cat" not in row.label.split()[-1:]
        )  # no photo is labelled just "cat"
    rel = [f.relevance for f in page.items]
    assert rel == sorted(rel, reverse=True) and all(r is not None and r > 0 for r in rel)


def test_project_class_names_match_where_wordnet_spells_them_otherwise() -> None:
    labels = tuple(imagenet_labels())
    rooster = class_weights("rooster", labels)
    assert labels.index("rooster") in rooster and rooster[labels.index("rooster")][0] == 1.0
    assert labels.index("kayak") in class_weights("kayaks", labels)
    # depth weighting: "dog" names no class itself, a breed is a kind of dog a few steps down
    dog = class_weights("dog", labels)
    assert len(dog) == 118 and all(0.5 <= w < 1.0 for w, _ in dog.values())


def test_category_folder_and_date_terms(library) -> None:
    settings, _ = library
    garden = services.search(settings, "garden")
    assert names(garden.items) == ["flower_copy.jpg"] and "path" in garden.items[0].why[0]
    assert names(services.search(settings, "2019").items) == ["rocket_2019.jpg"]
    june = services.search(settings, "june 2019")
    assert (
        june.query.date is not None
        and june.query.date.month == 6
        and names(june.items) == ["rocket_2019.jpg"]
    )
    assert services.search(settings, "march 2019").total == 0
    both = services.search(settings, "vehicles 2019")  # a category word and a year narrow each other
    assert names(both.items) == ["rocket_2019.jpg"] and any("2019" in w for w in both.items[0].why)
    food = services.search(settings, "food")
    assert "coffee.jpg" in names(food.items)


# -- similar and duplicates ------------------------------------------------------------------------------------
def test_similar_ranks_the_original_of_a_copy_first(library) -> None:
    settings, lib = library
    found = services.similar(settings, services.photo_by_path(settings, lib / "chelsea_small.jpg"), limit=5)
    assert names(found)[0] == "chelsea.jpg" and found[0].similarity is not None and found[0].similarity > 0.9
    assert found[1].similarity is not None and found[1].similarity < 0.5
    crop = services.similar(settings, services.photo_by_path(settings, lib / "coffee_crop.jpg"), limit=3)
    assert names(crop)[0] == "coffee.jpg"
    copy = services.similar(settings, services.photo_by_path(settings, lib / "flower.jpg"), limit=3)
    assert names(copy)[0] == "flower_copy.jpg" and copy[0].similarity == 1.0


def _group_names(groups: list[services.DuplicateGroup]) -> list[set[str]]:
    return [{Path(r.path).name for r in g.rows} for g in groups]


def test_duplicates_find_copies_and_crops_not_distinct_photos(library) -> None:
    settings, _ = library
    groups = services.duplicates(settings)
    found = _group_names(groups)
    assert {"chelsea.jpg", "chelsea_small.jpg"} in found
    assert {"coffee.jpg", "coffee_crop.jpg"} in found
    assert {"flower.jpg", "flower_copy.jpg"} in found
    # the EXIF-dated copies are re-encodes of the same pictures: duplicates too
    assert {"rocket.jpg", "rocket_2019.jpg"} in found and {"china.jpg", "china_2021.jpg"} in found
    assert all(len(g) == 2 for g in found)  # no distinct photo joined a group
    chelsea = next(g for g in groups if Path(g.rows[0].path).name.startswith("chelsea"))
    assert Path(chelsea.rows[0].path).name == "chelsea.jpg" and chelsea.keeper_reason == "most pixels"
    assert 0.9 <= chelsea.similarity < 1.0
    # Near 1, identical bytes pass, re-encodes pass on their perceptual hash, the crop (a new framing) does not.
    strict = _group_names(services.duplicates(settings, threshold=0.995))
    assert {"flower.jpg", "flower_copy.jpg"} in strict and {"rocket.jpg", "rocket_2019.jpg"} in strict
    assert {"coffee.jpg", "coffee_crop.jpg"} not in strict


def test_reduced_index_finds_the_same_groups(library) -> None:
    settings, _ = library
    f = finder(settings.db_path)
    assert f.embedder is not None or f.photos() is not None
    hashes, matrix = load_vectors(f.catalog, f.embedder or "")
    exact = VectorIndex.build(hashes, matrix)
    reduced = VectorIndex.build(hashes, matrix, exact_limit=0, dim=12)
    assert exact.exact and not reduced.exact and reduced.matrix.shape == (len(hashes), 12)
    photos = f.photos()
    want = sorted(sorted(g.members) for g in find_groups(photos, exact, f.full_vectors))
    got = sorted(sorted(g.members) for g in find_groups(photos, reduced, f.full_vectors))
    assert got == want and len(want) == 5
    # nearest() proposes from the reduced space; the copy's original is among the first proposals
    small = hashes.index(
        photos.hashes[photos.paths.index(next(p for p in photos.paths if p.endswith("chelsea_small.jpg")))]
    )
    rows, _ = reduced.nearest(matrix[small], 3)
    assert photos.hashes[photos.paths.index(next(p for p in photos.paths if p.endswith("/chelsea.jpg")))] in {
        hashes[r] for r in rows
    }


# -- dates, camera, metadata for older catalogs -----------------------------------------------------------
def test_exif_date_camera_gps_and_mtime_fallback(library) -> None:
    settings, lib = library
    with Catalog(settings.db_path, readonly=True) as cat:
        rows = {Path(r.path).name: r for r in cat.results(status="ok")}
        dated = cat.results(status="ok", order="date")
        months = cat.months()
    rocket = rows["rocket_2019.jpg"]
    assert (rocket.taken_at, rocket.taken_source) == ("2019-06-15T10:30:00", "exif")
    assert rocket.camera == "Canon EOS 80D" and rocket.has_gps is True
    assert (rocket.width, rocket.height) == (512, 342)
    plain = rows["coffee.jpg"]
    assert plain.taken_source == "mtime" and plain.has_gps is False and plain.camera is None
    assert plain.taken_at == photometa.mtime_iso((lib / "coffee.jpg").stat().st_mtime_ns)
    order = [Path(r.path).name for r in dated]
    assert order[:2] == ["rocket_2019.jpg", "china_2021.jpg"]  # the timeline sorts by EXIF date
    assert [m[0] for m in months][-2:] == ["2021-03", "2019-06"] and months[-1][1:] == (1, 0)


def test_header_reading_never_fails_and_turns_sideways_photos() -> None:
    meta = photometa.read_header(b"\xff\xd8\xff\xe0 not a jpeg", 1_700_000_000 * 10**9)
    assert meta.taken_source == "mtime" and meta.width is None and meta.taken_at is not None
    exif = Image.Exif()
    exif[photometa.TAG_ORIENTATION] = 6
    exif.get_ifd(photometa.IFD_EXIF)[photometa.TAG_DATETIME_ORIGINAL] = "0000:00:00 00:00:00"
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, "JPEG", exif=exif)
    sideways = photometa.read_header(buf.getvalue(), 0)
    assert (sideways.width, sideways.height) == (30, 40) and sideways.taken_source == "mtime"


def test_perceptual_hash_survives_reencoding_not_other_photos() -> None:
    with Image.open(DATA / "chelsea.jpg") as im:
        a = photometa.perceptual_hash(im)
        small = photometa.perceptual_hash(im.resize((im.width // 2, im.height // 2)))
    with Image.open(DATA / "coffee.jpg") as other:
        b = photometa.perceptual_hash(other)
    assert photometa.hamming(a, small) <= 4 and photometa.hamming(a, b) >= 16
    assert -(2**63) <= a < 2**63  # fits SQLite's INTEGER


def test_older_catalog_fills_in_dates_without_inference(engine, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "dated.jpg").write_bytes(exif_bytes(DATA / "rocket.jpg", "2018:01:02 03:04:05"))
    shutil.copy2(DATA / "coffee.jpg", lib / "coffee.jpg")
    db = tmp_path / "c.db"
    classify(engine, lib, db)
    with Catalog(db) as cat:  # as a catalog written before dates were stored
        cat.db.execute("UPDATE photos SET taken_at = NULL, taken_source = NULL, camera = NULL, phash = NULL")
    again = classify(engine, lib, db)
    assert (again.classified, again.reused, again.unchanged) == (0, 0, 2)
    with Catalog(db, readonly=True) as cat:
        rows = {Path(r.path).name: r for r in cat.results()}
        hashes = [r[0] for r in cat.db.execute("SELECT phash FROM photos")]
    assert rows["dated.jpg"].taken_at == "2018-01-02T03:04:05" and rows["coffee.jpg"].taken_source == "mtime"
    assert all(h is not None for h in hashes)
    third = classify(engine, lib, db)
    assert (third.classified, third.unchanged) == (0, 2)  # nothing left to fill in: files not even read


# -- CLI ---------------------------------------------------------------------------------------------------------
def run_cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_cli_search_similar_duplicates_hide(library, tmp_path: Path) -> None:
    settings, lib = library
    db = str(settings.db_path)
    res = run_cli("search", "cat", "--db", db, "--format", "json")
    assert res.exit_code == 0, res.output
    items = json.loads(res.stdout)
    results_keys = set(
        json.loads(run_cli("results", "--db", db, "--format", "json", "--limit", "1").stdout)[0]
    )
    assert results_keys <= set(items[0]) and {"relevance", "why"} <= set(items[0])
    assert {Path(i["path"]).name for i in items} >= {"chelsea.jpg", "chelsea_small.jpg"}

    res = run_cli("similar", str(lib / "coffee_crop.jpg"), "--db", db, "--format", "json", "--limit", "2")
    first = json.loads(res.stdout)[0]
    assert Path(first["path"]).name == "coffee.jpg" and first["similarity"] > 0.9
    missing = run_cli("similar", str(tmp_path / "nope.jpg"), "--db", db)
    assert missing.exit_code == 2 and "not in the catalog" in missing.output

    out = tmp_path / "dups.json"
    res = run_cli("duplicates", "--db", db, "--format", "json", "--output", str(out))
    groups = json.loads(res.stdout)
    assert groups == json.loads(out.read_text()) and len(groups) == 5
    assert all(set(g) >= {"paths", "similarity", "keeper"} and g["keeper"] == g["paths"][0] for g in groups)

    res = run_cli("duplicates", "--db", db, "--hide")
    assert res.exit_code == 0 and "5 photos hidden" in res.output
    assert services.duplicates(settings) == []  # hidden photos are out of finding
    assert "chelsea_small.jpg" not in names(services.search(settings, "cat").items)
    assert all(
        (lib / Path(p).name).exists() or Path(p).exists() for g in groups for p in g["paths"]
    )  # no file touched
    res = run_cli("hide", *[p for g in groups for p in g["paths"][1:]], "--undo", "--db", db)
    assert res.exit_code == 0 and "5 photos shown again" in res.output
    assert len(services.duplicates(settings)) == 5

    res = run_cli(
        "results", "--db", db, "--since", "2019", "--until", "2021-03", "--sort", "date", "--format", "json"
    )
    assert [Path(i["path"]).name for i in json.loads(res.stdout)] == ["rocket_2019.jpg", "china_2021.jpg"]
    assert run_cli("results", "--db", db, "--since", "last year").exit_code == 2


def test_bulk_corrections_and_undo_through_services(library) -> None:
    settings, lib = library
    ids = [services.photo_by_path(settings, lib / n) for n in ("brick.jpg", "text.png")]
    with Catalog(settings.db_path) as cat:
        hashes = [cat.content_hash_of(str(lib / n)) for n in ("brick.jpg", "text.png")]
        previous = services.correct_many(settings, cat, [(h, "documents") for h in hashes if h])
        assert previous == {h: None for h in hashes}
        assert {cat.photo(i).corrected_category for i in ids} == {"documents"}  # type: ignore[union-attr]
        corrected = services.search(settings, "documents")
        assert {"brick.jpg", "text.png"} <= set(names(corrected.items))
        assert any("your correction" in w for w in corrected.items[0].why)
        services.correct_many(settings, cat, list(previous.items()))
        assert {cat.photo(i).corrected_category for i in ids} == {None}  # type: ignore[union-attr]


def test_unknown_words_find_nothing_and_explain_nothing(library) -> None:
    settings, _ = library
    page = services.search(settings, "zzzz-nothing")
    assert page.total == 0 and page.items == [] and page.query.terms == ["zzzz-nothing"]
    assert np.all(np.isfinite([f.relevance or 0 for f in services.search(settings, "animal").items]))
