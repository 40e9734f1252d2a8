"""Where does INT8 EfficientNet-Lite0 lose its fidelity? An error budget of `photosift quantize`'s recipe.

    PYTHONPATH=src .venv/bin/python tools/int8_error_budget.py                      # album-dev, float prefix 2
    PYTHONPATH=src .venv/bin/python tools/int8_error_budget.py --images DIR --float-prefix 3 --top 20

Quantizes the model exactly as `photosift quantize --calibrate DIR` does for one float prefix, then runs the QDQ
graph with ONNX Runtime's graph optimizations off (so every QuantizeLinear/DequantizeLinear pair is executed as
written: the exact INT8 arithmetic, in float) in variants:

* everything quantized;
* weights only (every activation Q/DQ pair bypassed; the ReLU6 clips that the quantizer folded into them put back);
* activations only (the float, equalized weights put back);
* one activation tensor at a time quantized, the rest float: each tensor's own share of the noise.

For each it prints the logit SQNR against FP32 (10 log10 of logit power over error power) on the photos in
--images (default: the held-out half of the calibration folder). Noise powers roughly add, so the per-tensor rows
say which tensors a better scheme would have to fix.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper
from onnxruntime.quantization.onnx_model import ONNXModel

from photosift.core.imaging import load_tensor
from photosift.models.registry import resolve_model
from photosift.toolchain import calibration as cal
from photosift.toolchain.modelfile import list_images, load_checked, run_logits, session
from photosift.toolchain.quantize import quantize

ALBUM_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "album-dev" / "images"


def variant(qdq: Any, float_model: Any, quantized_acts: set[str], float_weights: bool) -> Any:
    """``qdq`` with every activation Q/DQ pair bypassed except those on ``quantized_acts``."""
    m = onnx.ModelProto()
    m.CopyFrom(qdq)
    inits = {i.name for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    float_nodes = {n.name: n for n in float_model.graph.node}
    float_consumers: dict[str, list[Any]] = {}
    for n in float_model.graph.node:
        for t in n.input:
            float_consumers.setdefault(t, []).append(n)
    bypass: dict[str, str] = {}
    extra = []
    for n in m.graph.node:
        if n.op_type != "DequantizeLinear" or n.input[0] in inits:
            continue
        q = producer.get(n.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in quantized_acts:
            continue
        t = q.input[0]
        bypass[n.output[0]] = t
        # The quantizer folds a Conv's ReLU6 into the following Q's [0, 6] range: put the clip back.
        p = producer.get(t)
        fp = float_nodes.get(p.name) if p is not None else None
        clips = (
            [c for c in float_consumers.get(fp.output[0], []) if c.op_type == "Clip"]
            if fp is not None
            else []
        )
        if p is not None and p.op_type == "Conv" and clips:
            extra.append(helper.make_node("Clip", [t, *clips[0].input[1:]], [t + "_clipped"]))
            bypass[n.output[0]] = t + "_clipped"
            for i in float_model.graph.initializer:
                if i.name in clips[0].input[1:] and i.name not in inits:
                    m.graph.initializer.append(i)
                    inits.add(i.name)
    if float_weights:
        for n in m.graph.node:
            f = float_nodes.get(n.name)
            if n.op_type in ("Conv", "Gemm") and f is not None:
                for i in range(1, len(n.input)):
                    n.input[i] = "float:" + f.input[i]
        used = {t for n in m.graph.node for t in n.input if t.startswith("float:")}
        for i in float_model.graph.initializer:
            if "float:" + i.name in used:
                j = onnx.TensorProto()
                j.CopyFrom(i)
                j.name = "float:" + i.name
                m.graph.initializer.append(j)
    for n in m.graph.node:
        for i, t in enumerate(n.input):
            if t in bypass:
                n.input[i] = bypass[t]
    if extra:
        m.graph.node.extend(extra)
        ONNXModel(m).topological_sort()
    return m


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--calibrate", type=Path, default=ALBUM_DEV)
    parser.add_argument(
        "--images", type=Path, default=None, help="photos to measure on (default: held-out half)"
    )
    parser.add_argument("--float-prefix", type=int, default=2)
    parser.add_argument(
        "--top", type=int, default=15, help="how many per-tensor rows to print (largest first)"
    )
    args = parser.parse_args()

    src = load_checked(resolve_model(args.model).path)
    card = src.card
    photos = cal.load_photos(args.calibrate, card.preprocess)
    if args.images is not None:
        x = np.stack([load_tensor(p, card.preprocess) for p in list_images(args.images)])
    else:
        x = photos.held_out
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize(src.path, args.calibrate, out, min_agreement=0.0, float_prefix=args.float_prefix)
        qdq = onnx.load(str(out))
    # The same equalization `photosift quantize` applied (deterministic given the photos): its float weights.
    eq = onnx.ModelProto()
    eq.CopyFrom(src.proto)
    cal.equalize_streams(eq, card.input_name, photos.calibration)

    def logits(model: Any) -> np.ndarray:
        # Graph optimizations off: every Q/DQ pair runs as written, the exact INT8 arithmetic.
        return run_logits(session(model.SerializeToString(), level="none"), card, x, batch=16)

    ref = logits(src.proto)

    def sqnr(model: Any) -> float:
        got = logits(model)
        return float(10 * np.log10((ref**2).mean() / ((ref - got) ** 2).mean()))

    inits = {i.name for i in qdq.graph.initializer}
    acts = [n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    print(f"{len(x)} photos, float prefix {args.float_prefix}, {len(acts)} quantized activation tensors")
    print(f"everything quantized:  {sqnr(qdq):5.1f} dB")
    print(f"weights only:          {sqnr(variant(qdq, eq, set(), False)):5.1f} dB")
    print(f"activations only:      {sqnr(variant(qdq, eq, set(acts), True)):5.1f} dB")
    rows = [(sqnr(variant(qdq, eq, {t}, True)), t) for t in acts]
    total = sum(10 ** (-s / 10) for s, _ in rows)
    print(f"sum of the single-tensor noises: {-10 * np.log10(total):5.1f} dB; largest shares:")
    for s, t in sorted(rows)[: args.top]:
        print(f"  {s:5.1f} dB  {100 * 10 ** (-s / 10) / total:4.1f}%  {t}")
    blocks: dict[str, float] = {}
    for s, t in rows:
        m = re.search(r"_blocks\.(\d+)/", t)
        key = f"block {int(m.group(1)):2d}" if m else "stem/head"
        blocks[key] = blocks.get(key, 0.0) + 10 ** (-s / 10) / total
    print("share by block: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(blocks.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
