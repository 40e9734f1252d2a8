"""Run photosift through fault injection at scale and print the table of docs/RELIABILITY.md.

    PYTHONPATH=src .venv/bin/python tools/fault_suite.py --scale 3 --seed 1
    PYTHONPATH=src .venv/bin/python tools/fault_suite.py --target-src /path/to/other/checkout/src   # "before"

Every scenario runs the real CLI in subprocesses (see photosift.bench.faults); --scale multiplies the files,
swap time and kills. --target-src runs another checkout's photosift with this checkout's harness, which is how
the "before" numbers were measured. Exit 1 when any file was lost, any wrong result kept or any traceback seen.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from photosift.bench.faults import Suite, run_all, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=1, help="multiplies files, swap seconds and kills")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-src", type=Path, help="run the photosift found here (a checkout's src/)")
    ap.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    env = {"PYTHONPATH": str(args.target_src.resolve())} if args.target_src else {}
    with tempfile.TemporaryDirectory(prefix="photosift-faults-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env |= {"PHOTOSIFT_DATA_DIR": str(work / "data"), "PHOTOSIFT_CONFIG_DIR": str(work / "config")}
        started = time.monotonic()
        results = run_all(Suite(work, env), scale=args.scale, seed=args.seed)
    print(table(results))
    print(
        f"\n{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"euid {os.geteuid()}, scale {args.scale}, seed {args.seed}, {time.monotonic() - started:.0f} s"
    )
    bad = [r for r in results if not r.skipped and (r.files_lost or r.wrong_kept or r.tracebacks)]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
