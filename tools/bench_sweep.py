"""Sweep pipeline settings (loader threads, ORT intra-op threads, spinning, batch size, queue depth) on a corpus.

    .venv/bin/python tools/bench_sweep.py .bench/phone [--model NAME] [--rounds 2]

Configurations are interleaved round by round so a background load hits them alike; the best round is kept.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from photosift.bench.meter import Meter, wait_quiet
from photosift.core.catalog import Catalog
from photosift.models.registry import resolve_model
from photosift.models.session import OrtEngine
from photosift.run.driver import ClassifyOptions, Pipeline

CONFIGS = [
    # (workers, intra, spinning, batch, depth)
    (2, 2, False, 16, None),
    (2, 1, False, 16, None),
    (3, 1, False, 16, None),
    (2, 2, True, 16, None),
    (2, 2, False, 8, None),
    (2, 2, False, 32, None),
    (2, 2, False, 16, 64),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", type=int, nargs="*", help="indexes into CONFIGS")
    args = ap.parse_args()
    model = resolve_model(args.model)
    configs = [CONFIGS[i] for i in args.only] if args.only else CONFIGS
    engines = {}
    best: dict[tuple, tuple[float, float, float]] = {}
    for _ in range(args.rounds):
        for cfg in configs:
            workers, intra, spin, batch, depth = cfg
            key = (intra, spin)
            if key not in engines:
                engines[key] = OrtEngine(model, provider="cpu", intra_op_threads=intra, spinning=spin)
            with tempfile.TemporaryDirectory() as tmp:
                cat = Catalog(Path(tmp) / "c.db")
                opts = ClassifyOptions(batch_size=batch, workers=workers, queue_depth=depth)
                pipe = Pipeline(engines[key], cat, options=opts)
                wait_quiet(60)
                m = Meter()
                with m.measure():
                    s = pipe.run([str(args.folder)])
                cat.close()
            rate = s.classified / m.wall
            print(
                f"{cfg}: {rate:.1f} photos/s, {1000 * m.cpu / s.classified:.1f} core-ms, others {m.other_cores:.2f}",
                flush=True,
            )
            if cfg not in best or rate > best[cfg][0]:
                best[cfg] = (rate, 1000 * m.cpu / s.classified, m.other_cores)
    print("best per config:")
    for cfg, (rate, core, other) in best.items():
        print(
            f"  workers={cfg[0]} intra={cfg[1]} spin={cfg[2]} batch={cfg[3]} depth={cfg[4]}: {rate:.1f} photos/s ({core:.1f} core-ms, others {other:.2f})"
        )


if __name__ == "__main__":
    main()
