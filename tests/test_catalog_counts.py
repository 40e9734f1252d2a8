"""The kept categories and counts (migrations 4 and 5's triggers) agree with the catalog's contents after any writes,
and the overview's queries are index lookups, not scans."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from photosift.core.catalog import Catalog, PersonalDecision, PhotoRecord, ResultRecord

LABELS = [f"class{i}" for i in range(10)]
CATEGORIES = ["animals", "plants", "food", None]

# What the counts were computed as before they were kept: the newest result per photo (the personal head's
# category where it spoke, else the model's), then its correction.
REFERENCE = """
    SELECT COALESCE(c.category, r.personal_category, r.category) AS cat, COUNT(*) FROM photos p
    JOIN results r ON r.content_hash = p.content_hash AND r.created_at =
        (SELECT MAX(created_at) FROM results r2 WHERE r2.content_hash = p.content_hash)
    LEFT JOIN corrections c ON c.content_hash = p.content_hash
    WHERE p.status = 'ok' GROUP BY cat
"""


def reference_counts(cat: Catalog, include_hidden: bool = True) -> dict[str, int]:
    sql = (
        REFERENCE
        if include_hidden
        else REFERENCE.replace("WHERE p.status = 'ok'", "WHERE p.status = 'ok' AND p.hidden = 0")
    )
    return {str(c): int(n) for c, n in cat.db.execute(sql)}


def result(h: str, category: str | None) -> ResultRecord:
    probs = np.full(len(LABELS), 0.1, dtype=np.float32)
    return ResultRecord(h, probs, None, category, 0.5 if category else None)


def test_counts_follow_every_kind_of_write(tmp_path: Path) -> None:
    rng = random.Random(7)
    cat = Catalog(tmp_path / "c.db")
    models = ["a" * 64, "b" * 64]
    for m in models:
        cat.register_model(m, m[:1], LABELS)
    hashes = [f"h{i}" for i in range(12)]
    paths = [f"/lib/p{i}.jpg" for i in range(30)]
    for step in range(120):
        op = rng.choice(
            ["batch", "batch", "correct", "uncorrect", "recategorize", "personal", "missing", "error", "hide"]
        )
        if op == "batch":  # a run: some results (either model, newer each time) and photos pointing at them
            chosen = rng.sample(hashes, 3)
            cat.write_batch(
                [PhotoRecord(rng.choice(paths), 1, step, h) for h in chosen],
                [result(h, rng.choice(CATEGORIES)) for h in chosen],
                rng.choice(models),
                LABELS,
            )
        elif op == "correct":
            cat.set_correction(rng.choice(hashes), rng.choice(["people", "food"]))
        elif op == "uncorrect":
            cat.set_correction(rng.choice(hashes), None)
        elif op == "recategorize":
            h = rng.choice(hashes)
            rows = cat.db.execute("SELECT rowid FROM results WHERE content_hash = ?", (h,)).fetchall()
            cat.update_categories(
                [(r[0], rng.choice(["landscape", "other"]), 0.9, None, None) for r in rows], "fp"
            )
        elif op == "personal":  # the personal head follows a correction near this content, or abstains again
            h, m = rng.choice(hashes), rng.choice(models)
            decision = (
                PersonalDecision(rng.choice(["our cat", "food"]), 0.8, "h0") if rng.random() < 0.7 else None
            )
            cat.set_personal(m, [(h, decision)])
        elif op == "hide":
            ids = [r[0] for r in cat.db.execute("SELECT id FROM photos ORDER BY random() LIMIT 2")]
            cat.set_hidden(ids, rng.random() < 0.6)
        elif op == "missing":
            cat.mark_missing([rng.choice(paths)])
        else:
            cat.write_batch([PhotoRecord(rng.choice(paths), 1, step, None, "corrupt")], [], models[0], LABELS)
        assert cat.counts() == reference_counts(cat), (step, op)
        assert cat.counts(include_hidden=False) == reference_counts(cat, include_hidden=False), (step, op)
    statuses = dict(cat.db.execute("SELECT status, COUNT(*) FROM photos GROUP BY status").fetchall())
    assert cat.status_counts() == {s: int(n) for s, n in statuses.items()}
    for name, n in cat.counts().items():
        rows = cat.results(
            status="ok", uncategorized=name == "None", category=None if name == "None" else name
        )
        assert (
            len(rows)
            == n
            == cat.count_results(
                status="ok", category=None if name == "None" else name, uncategorized=name == "None"
            )
        )
        assert all((r.effective_category or "None") == name for r in rows)
    cat.close()


def test_an_older_catalog_gets_its_counts_on_upgrade(tmp_path: Path) -> None:
    from photosift.core import schema

    path = tmp_path / "old.db"
    full = list(schema.MIGRATIONS)
    before = full.index(schema._m4_category_index)
    schema.MIGRATIONS[:] = full[:before]  # as photosift wrote catalogs before the kept counts
    try:
        old = Catalog(path)
        old.register_model("a" * 64, "a", LABELS)
        # Rows as that photosift wrote them (today's write_batch also fills columns of later migrations).
        for i, c in enumerate(["food", None, "plants"]):
            old.db.execute(
                "INSERT INTO results (content_hash, model_sha256, category, created_at) VALUES (?, ?, ?, 1)",
                (f"h{i}", "a" * 64, c),
            )
        for i in range(7):
            old.db.execute(
                "INSERT INTO photos (path, size, mtime_ns, content_hash, status, updated_at) "
                "VALUES (?, 1, 1, ?, 'ok', 1)",
                (f"/p{i}.jpg", f"h{i % 3}"),
            )
        old.db.execute("INSERT INTO corrections VALUES ('h2', 'people', 1)")
        before_personal = REFERENCE.replace("r.personal_category, ", "")  # that schema had no personal head
        expected = {str(c): int(n) for c, n in old.db.execute(before_personal)}
        old.close()
    finally:
        schema.MIGRATIONS[:] = full
    with Catalog(path) as upgraded:
        assert upgraded.counts() == expected == {"food": 3, "None": 2, "people": 2}


@pytest.mark.parametrize(
    "query",
    [
        "SELECT category, photos FROM category_counts",
        "SELECT p.id FROM photos p WHERE p.status != 'missing' AND p.category = 'food' AND p.status = 'ok' "
        "AND p.hidden = 0 ORDER BY p.path LIMIT 48 OFFSET 4800",
        "SELECT p.id FROM photos p WHERE p.status != 'missing' AND p.category IS NULL AND p.status = 'ok' "
        "AND p.hidden = 0 ORDER BY p.path LIMIT 4",
        "SELECT COUNT(*) FROM photos WHERE status = 'error'",
    ],
)
def test_overview_queries_use_indexes(tmp_path: Path, query: str) -> None:
    with Catalog(tmp_path / "c.db") as cat:
        plan = " | ".join(row[3] for row in cat.db.execute("EXPLAIN QUERY PLAN " + query))
    assert "SCAN photos" not in plan and "SCAN p " not in plan and "TEMP B-TREE" not in plan, plan
