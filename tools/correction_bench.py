"""What a correction and a re-derivation cost in a big library (docs/BENCHMARKS.md, "Corrections and
re-derivation at 100,000 photos"): ``photosift.bench.corrections`` on one catalog size, standalone.

    PYTHONPATH=src .venv/bin/python tools/correction_bench.py [--photos 100000] [--repeats 9] [--settle 30] [--json]

``photosift bench --scale`` runs the same at 10,000 and 100,000 photos. The "before" column of that section
(corrections before the redesign) came from this tool as of commit 893e4d3, whose ``--before`` mode timed the
pre-redesign API: ``git show 893e4d3:tools/correction_bench.py`` with ``PYTHONPATH=<src of cbc49d8>``.
"""

from __future__ import annotations

import argparse
import json
import time

from photosift.bench.corrections import corrections_at_scale
from photosift.bench.report import machine_info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument(
        "--settle", type=float, default=30.0, help="seconds to wait for a quiet machine per timing"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    report = corrections_at_scale(args.photos, args.repeats, args.settle)
    report.update(machine=machine_info(), date=time.strftime("%Y-%m-%d"))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:32} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
