"""Surgery on a QDQ model that ONNX Runtime's quantizer wrote: photosift's own weight rounding in place of
round-to-nearest, float graph outputs, and the compute nodes in graph order (for the float prefix)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from photosift.toolchain import calibration as cal


def dq_inputs(proto: Any, tensor: str) -> list[str] | None:
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] == tensor:
            return list(node.input)
    return None


def apply_rounding(
    proto: Any,
    float_model: Any,
    layers: Sequence[cal.Layer],
    rounded: dict[str, cal.RoundedLayer],
    skip: Sequence[str],
) -> int:
    """Replace ORT's round-to-nearest INT8 weights (and INT32 biases) with the GPTQ + bias-corrected ones."""
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    float_inits = {i.name: i for i in float_model.graph.initializer}
    nodes = {n.name: n for n in proto.graph.node}
    done = 0
    for layer in layers:
        node = nodes.get(layer.name)
        r = rounded.get(layer.name)
        if node is None or r is None or layer.name in skip:
            continue
        w_dq = dq_inputs(proto, node.input[1])
        if w_dq is None or w_dq[0] not in inits or w_dq[1] not in inits:
            continue
        old_q = numpy_helper.to_array(inits[w_dq[0]])
        old_s = numpy_helper.to_array(inits[w_dq[1]]).astype(np.float64).reshape(-1)
        if old_q.shape != r.q.shape or old_q.dtype != np.int8 or old_s.size != r.scale.size:
            continue  # not per-channel INT8 (e.g. a per-tensor candidate): leave ORT's weights
        new_q = r.q.astype(np.int8)
        inits[w_dq[0]].CopyFrom(numpy_helper.from_array(new_q, w_dq[0]))
        inits[w_dq[1]].CopyFrom(numpy_helper.from_array(r.scale.astype(np.float32), w_dq[1]))
        if layer.bias is not None and len(node.input) > 2:
            b_dq = dq_inputs(proto, node.input[2])
            if b_dq is not None and b_dq[0] in inits and b_dq[1] in inits:
                old_bs = numpy_helper.to_array(inits[b_dq[1]]).astype(np.float64).reshape(-1)
                ok = old_s > 0
                s_in = float(np.median(old_bs[ok] / old_s[ok])) if ok.any() else 0.0
                bias = numpy_helper.to_array(float_inits[layer.bias]).astype(np.float64) + r.bias_shift
                new_bs = s_in * r.scale
                if s_in > 0:
                    bq = np.clip(np.round(bias / new_bs), -(2**31), 2**31 - 1).astype(np.int32)
                    inits[b_dq[1]].CopyFrom(numpy_helper.from_array(new_bs.astype(np.float32), b_dq[1]))
                    inits[b_dq[0]].CopyFrom(numpy_helper.from_array(bq, b_dq[0]))
        done += 1
    return done


def float_graph_outputs(proto: Any) -> None:
    """Graph outputs that ORT's quantizer made Q -> DQ round trips (the embedding) are given the float tensor."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    for out in proto.graph.output:
        dq = producer.get(out.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        pre, post = q.input[0], out.name + "_dequantized"
        dq.output[0] = post
        for node in proto.graph.node:
            for i, name in enumerate(node.input):
                if name == out.name:
                    node.input[i] = post
                if name == pre:
                    node.input[i] = out.name
            for i, name in enumerate(node.output):
                if name == pre:
                    node.output[i] = out.name


def compute_nodes(proto: Any) -> list[str]:
    return [n.name for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose")]
