"""Time the web gallery's search page on a large catalog: SQL filter + page + count vs filtering every row in Python.

    .venv/bin/photosift classify tests/data --db /tmp/small.db
    PYTHONPATH=src .venv/bin/python tools/search_bench.py /tmp/small.db --rows 100000 --text hel

Copies the catalog and repeats its photos rows (new paths, same content hashes, so they share the stored results)
until it has --rows photos, then times one search page both ways (mean of two runs).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from photosift.core.catalog import Catalog


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db", type=Path, help="a classified catalog")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--text", default="hel")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "big.db"
        shutil.copy(args.db, db)
        con = sqlite3.connect(db)
        cols = [r[1] for r in con.execute("PRAGMA table_info(photos)")]
        rows = con.execute("SELECT * FROM photos").fetchall()
        new = []
        for i in range(args.rows - len(rows)):
            r = list(rows[i % len(rows)])
            r[cols.index("id")] = None
            r[cols.index("path")] = f"/library/{i:07d}.jpg"
            new.append(r)
        con.executemany(f"INSERT INTO photos VALUES ({','.join('?' * len(cols))})", new)
        con.commit()
        con.close()
        needle = args.text.casefold()
        with Catalog(db) as cat:
            for name, fn in [
                (
                    "every row through Python (before)",
                    lambda: [
                        r
                        for r in cat.results(status="ok")
                        if (r.label and needle in r.label.casefold())
                        or (r.effective_category and needle in r.effective_category.casefold())
                    ][:60],
                ),
                ("SQL: one page of 60", lambda: cat.results(status="ok", text=needle, limit=60)),
                ("SQL: the count for the pager", lambda: cat.count_results(status="ok", text=needle)),
            ]:
                t = time.perf_counter()
                fn()
                fn()
                print(f"{name}: {(time.perf_counter() - t) / 2 * 1000:.0f} ms")


if __name__ == "__main__":
    main()
