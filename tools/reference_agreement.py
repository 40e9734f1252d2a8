"""Does photosift's decode path give the same top-1 as a plain reference preprocessing?

Reference: full decode (no DCT scaling), EXIF transpose, alpha composited on white, shorter side to 256
(bilinear), centre crop 224, (x - 127) / 128, one ORT session on the same model file.

    python tools/reference_agreement.py DIR [DIR ...]

Transparent cut-outs are framed whole by photosift on purpose (docs/CATEGORIES.md, "Cut-outs"), not centre-cropped
as the reference does; disagreements on them measure that choice, not the decode path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from photosift.core.imaging import load_tensor
from photosift.models.registry import resolve_model
from photosift.models.session import open_session

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp"}


def reference_tensor(path: Path) -> np.ndarray:
    im = ImageOps.exif_transpose(Image.open(path))
    if im.mode in ("RGBA", "LA", "P"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    im = im.convert("RGB")
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.Resampling.BILINEAR)
    left, top = round((im.width - 224) / 2), round((im.height - 224) / 2)
    im = im.crop((left, top, left + 224, top + 224))
    return ((np.asarray(im, dtype=np.float32) - 127.0) / 128.0).transpose(2, 0, 1)


def main(dirs: list[str]) -> int:
    model = resolve_model("efficientnet-lite0")
    sess = open_session(model.path)
    files = sorted(p for d in dirs for p in Path(d).rglob("*") if p.suffix.lower() in SUFFIXES)
    agree = 0
    for f in files:
        ours = sess.run(["logits"], {"input": load_tensor(f, model.card.preprocess)[None]})[0].argmax()
        ref = sess.run(["logits"], {"input": reference_tensor(f)[None]})[0].argmax()
        agree += int(ours == ref)
        if ours != ref:
            print(
                f"differs: {f.name}: ours {model.card.labels[ours]!r}, reference {model.card.labels[ref]!r}"
            )
    print(
        f"top-1 agreement with the reference preprocessing: {agree}/{len(files)} = {agree / len(files):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
