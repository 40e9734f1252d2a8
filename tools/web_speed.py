"""Time a model in Chromium (ONNX Runtime Web, WASM) against native ONNX Runtime, interleaved, for docs/WEB.md.

    PYTHONPATH=src .venv/bin/python tools/web_speed.py [--models efficientnet-lite0 efficientnet-lite0-int8]
        [--threads 1 2] [--rounds 5] [--runs 10]

Inference: one photo's tensor, batch 1, after a warm-up; each round runs the model --runs times in the page, then
--runs times natively with as many threads, so a background load hits both alike; min and median per run are
printed. Preprocessing: a 12 MP (4032x3024) JPEG made from a test photo, decoded and preprocessed in the page
(Pillow-exact resize and the browser's drawImage) and natively (DCT-scaled decode). `photosift webcheck` reports
the same quantities on real folders; this tool exists because a shared machine makes one pass noisy.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from photosift.core import imaging
from photosift.toolchain import webcheck as wc
from photosift.toolchain.modelfile import load_checked, run_logits, session

DATA = Path(__file__).parents[1] / "tests" / "data"

_TIME = """async ({runs}) => {
  const s = window.model.card.preprocess.input_size, x = new Float32Array(3 * s * s).fill(0.5), out = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now(); await window.photosift.logits(window.model, x); out.push(performance.now() - t0);
  }
  return out;
}"""

_PREPROCESS = """async ({runs, framing, resampler}) => {
  const blob = await (await fetch("/photo/0")).blob(), out = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const d = await window.photosift.decode(blob, framing);
    window.photosift.inputPixels(d, window.model.card.preprocess, framing, resampler);
    d.bitmap.close();
    out.push(performance.now() - t0);
  }
  return out;
}"""


def phone_jpeg() -> bytes:
    im = Image.open(DATA / "chelsea.jpg").convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def stats(ms: list[float]) -> str:
    return f"min {min(ms):6.1f}  median {statistics.median(ms):6.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["efficientnet-lite0", "efficientnet-lite0-int8"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    jpeg = phone_jpeg()
    for name in args.models:
        checked = load_checked(Path(name))
        card = checked.card
        x = imaging.load_tensor(DATA / "chelsea.jpg", card.preprocess)[None]
        for threads in args.threads:
            routes: dict[str, Path | bytes] = {"/": wc.HARNESS, "/model.onnx": checked.path, "/photo/0": jpeg}
            with wc._serve(routes) as url, wc.chromium_page() as page:
                page.goto(url + "/")
                page.wait_for_function("() => window.photosift !== undefined")
                info = page.evaluate(wc._LOAD, {"card": json.loads(card.to_json()), "threads": threads})
                sess = session(checked.path, threads=threads)
                run_logits(sess, card, np.repeat(x, 5, axis=0), batch=1)
                web: list[float] = []
                native: list[float] = []
                for _ in range(args.rounds):
                    web += page.evaluate(_TIME, {"runs": args.runs})
                    for _ in range(args.runs):
                        t0 = time.perf_counter()
                        run_logits(sess, card, x, batch=1)
                        native.append(1000 * (time.perf_counter() - t0))
                print(f"{name} threads={info['threads']} isolated={info['isolated']}")
                print(f"  inference  browser {stats(web)}   native {stats(native)}  ms")
                if threads == args.threads[0]:
                    framing = imaging.cutout_framing()
                    for resampler in wc.RESAMPLERS:
                        ms = page.evaluate(
                            _PREPROCESS, {"runs": 5, "framing": framing, "resampler": resampler}
                        )
                        print(f"  12 MP JPEG decode+preprocess, page ({resampler}): {stats(ms)} ms")
                    nat = []
                    for _ in range(5):
                        t0 = time.perf_counter()
                        imaging.load_tensor("phone.jpg", card.preprocess, jpeg)
                        nat.append(1000 * (time.perf_counter() - t0))
                    print(f"  12 MP JPEG decode+preprocess, native (DCT-scaled): {stats(nat)} ms")


if __name__ == "__main__":
    main()
