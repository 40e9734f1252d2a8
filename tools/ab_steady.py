"""Steady-state `photosift classify` of two checkouts, interleaved: before/after a change to the hot path.

    PYTHONPATH=src .venv/bin/python tools/ab_steady.py --before /work/old/src --photos 144 --rounds 4

Each round runs each checkout (the order alternating) on a third of the corpus and on all of it; the difference
cancels start-up, as the `classify_cli` rows of `photosift bench` do. Reported per checkout and mode (with and
without faces): the median steady rate (photos/s, wall) and steady core-ms per photo (CPU of the child: the
figure a busy, shared machine does not distort). The corpus is `photosift bench`'s generated phone JPEGs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from photosift.bench.corpus import make_phone_corpus
from photosift.bench.meter import run_child_rusage, wait_quiet


def classify(src: str, folder: Path, people: bool) -> tuple[float, float]:
    """(wall s, CPU s) of one `photosift classify` run of the checkout at `src` into a fresh catalog."""
    with tempfile.TemporaryDirectory(prefix="photosift-ab-") as tmp:
        cmd = [sys.executable, "-m", "photosift", "classify", str(folder), "--db", f"{tmp}/c.db", "--json"]
        if not people:
            cmd.append("--no-people")
        env = {"PYTHONPATH": src, "PHOTOSIFT_DATA_DIR": f"{tmp}/data", "PHOTOSIFT_CONFIG_DIR": f"{tmp}/cfg"}
        wall, cpu, _, _ = run_child_rusage(cmd, env=env)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="src/ folder of the checkout before the change")
    ap.add_argument("--after", default=str(Path(__file__).resolve().parents[1] / "src"))
    ap.add_argument("--photos", type=int, default=144)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--workroot", type=Path, default=Path(".bench"))
    ap.add_argument("--settle", type=float, default=10.0, help="wait up to S s for a quiet machine per run")
    args = ap.parse_args()
    full = make_phone_corpus(args.workroot / f"ab{args.photos}", args.photos)
    third = args.workroot / f"ab{args.photos}-third"
    shutil.rmtree(third, ignore_errors=True)
    third.mkdir(parents=True)
    for path in sorted(full)[: args.photos // 3]:
        os.link(path, third / path.name)
    folder_full = full[0].parent
    extra = args.photos - args.photos // 3
    checkouts = {"before": args.before, "after": args.after}
    rates: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for round_no in range(args.rounds):
        order = list(checkouts) if round_no % 2 == 0 else list(reversed(checkouts))
        for people in (False, True):
            for name in order:
                wait_quiet(args.settle)
                w1, c1 = classify(checkouts[name], third, people)
                wait_quiet(args.settle)
                w2, c2 = classify(checkouts[name], folder_full, people)
                rates.setdefault((name, people), []).append((extra / (w2 - w1), 1000 * (c2 - c1) / extra))
    report = []
    for (name, people), values in sorted(rates.items()):
        report.append(
            {
                "checkout": name,
                "faces": people,
                "steady_photos_per_s": round(statistics.median(v[0] for v in values), 1),
                "steady_core_ms_per_photo": round(statistics.median(v[1] for v in values), 1),
                "rounds": [[round(a, 1), round(b, 1)] for a, b in values],
            }
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
