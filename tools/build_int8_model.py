"""Reproduce the packaged INT8 EfficientNet-Lite0 from the packaged FP32 one and the album-dev photos.

    python tools/build_int8_model.py                      # full accuracy-aware search, as `photosift quantize` does
    python tools/build_int8_model.py --float-prefix 3     # pin the recipe the packaged file was built with

Writes src/photosift/models/efficientnet-lite0-int8.onnx, its builtin.json entry and (with --report) the search
report; then checks top-1 agreement with FP32 on the real photos in tests/data. Writes nothing if no candidate
reaches --min-agreement on the held-out half of the calibration folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from photosift.models.card import read_card  # noqa: E402
from photosift.models.registry import BUILTIN_INDEX, card_summary, resolve_model, sha256_file  # noqa: E402
from photosift.toolchain.evaluate import evaluate  # noqa: E402
from photosift.toolchain.quantize import quantize  # noqa: E402

NAME = "efficientnet-lite0-int8"
ALBUM_DEV = ROOT.parent / "shared" / "datasets" / "album-dev" / "images"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calibrate", type=Path, default=ALBUM_DEV, help="calibration photos (album-dev)")
    parser.add_argument("--min-agreement", type=float, default=0.97)
    parser.add_argument("--float-prefix", type=int, default=None, help="pin the recipe (skip the search)")
    parser.add_argument("--report", type=Path, default=None, help="write the search report (JSON) here")
    args = parser.parse_args()
    src = resolve_model("efficientnet-lite0")
    out = BUILTIN_INDEX.parent / f"{NAME}.onnx"
    started = time.perf_counter()
    result = quantize(
        src.path,
        args.calibrate,
        out,
        min_agreement=args.min_agreement,
        report=args.report,
        float_prefix=args.float_prefix,
        progress=lambda m: print(f"[{time.perf_counter() - started:5.0f}s] {m}", flush=True),
    )
    index = json.loads(BUILTIN_INDEX.read_text())
    index["models"][NAME] = {
        "file": out.name,
        "sha256": sha256_file(out),
        "card": card_summary(read_card(out)),
    }
    BUILTIN_INDEX.write_text(json.dumps(index, indent=2) + "\n")
    speed = result.speed.to_dict() if result.speed else {}
    print(
        f"{NAME}: {out} ({result.size_bytes / 1e6:.2f} MB), held-out agreement {result.agreement:.1%} on "
        f"{result.images} photos, top-5 {result.top5_containment:.1%}, {speed.get('speedup', 0):.2f}x FP32, "
        f"config {result.config}"
    )
    check = evaluate(out, images=ROOT / "tests" / "data", reference=src.path)
    print(
        f"tests/data: agreement {check.agreement:.1%} on {check.images} photos, top-5 {check.top5_containment:.1%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
