"""Offline graph optimization (ONNX Runtime + onnxslim) with a parity check, and the graph conversions the
quantizer uses (float16 with float32 I/O, multiply-accumulates per op type).

``optimize`` never leaves a partial file: it works in a temporary file beside the output and moves it into
place only after the parity check passed (max |Δlogit| <= 1e-4 and the same top-1 on every probe input).
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from photosift.core.errors import ToolchainError
from photosift.models.card import ModelCard
from photosift.toolchain.modelfile import (
    Speed,
    atomic_output,
    check_parity,
    compare_speed,
    first_line,
    load_checked,
    ort_optimize,
    probe_inputs,
    run_logits,
    save,
    session,
    set_card,
)

LEVELS = ("basic", "extended", "all")

# ------------------------------------------------------------------------------------ graph conversions

_KEEP_FP32_INPUTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}


def _rename_tensor(model: Any, old: str, new: str) -> str:
    """Every node input and output named ``old`` becomes ``new`` (the graph's own I/O keeps its name)."""
    for node in model.graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new
    return new


def to_fp16(proto: Any) -> Any:
    """Float16 weights and compute with float32 inputs and outputs (onnxconverter-common's keep_io_types)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = copy.deepcopy(proto)
    keep = {
        node.input[i]
        for node in m.graph.node
        for (op, i) in _KEEP_FP32_INPUTS
        if node.op_type == op and len(node.input) > i
    }
    for init in m.graph.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in keep:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for node in m.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(
                    numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name)
                )
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
    inits = {i.name for i in m.graph.initializer}
    casts_in, casts_out = [], []
    for inp in m.graph.input:
        if inp.name not in inits and inp.type.tensor_type.elem_type == TensorProto.FLOAT:
            half = _rename_tensor(m, inp.name, inp.name + "_fp16")
            casts_in.append(
                helper.make_node("Cast", [inp.name], [half], to=TensorProto.FLOAT16, name=half + "_cast")
            )
    for out in m.graph.output:
        if out.type.tensor_type.elem_type == TensorProto.FLOAT:
            half = _rename_tensor(m, out.name, out.name + "_fp16")
            casts_out.append(
                helper.make_node("Cast", [half], [out.name], to=TensorProto.FLOAT, name=out.name + "_cast")
            )
    nodes = casts_in + list(m.graph.node) + casts_out
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    del m.graph.value_info[:]
    return m


def compute_share(proto: Any, card: ModelCard) -> dict[str, int]:
    """Multiply-accumulates per op type for one image (Conv, ConvTranspose, MatMul, Gemm)."""
    import onnx

    m = copy.deepcopy(proto)
    for inp in m.graph.input:
        if inp.name == card.input_name:
            inp.type.tensor_type.shape.dim[0].dim_value = 1
    try:
        m = onnx.shape_inference.infer_shapes(m)
    except Exception as exc:
        raise ToolchainError(f"cannot infer the model's shapes ({str(exc).splitlines()[0][:200]})") from None
    shapes: dict[str, list[int]] = {}
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs: dict[str, int] = {}
    for node in m.graph.node:
        out_shape = shapes.get(node.output[0])
        if out_shape is None:
            continue
        n_out = int(np.prod(out_shape)) if out_shape else 1
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] in shapes:
            w = shapes[node.input[1]]
            macs[node.op_type] = macs.get(node.op_type, 0) + n_out * int(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "Gemm") and node.input[0] in shapes:
            a = shapes[node.input[0]]
            k = (
                a[0]
                if node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)
                else a[-1]
            )
            macs[node.op_type] = macs.get(node.op_type, 0) + n_out * int(k)
    return macs


# ---------------------------------------------------------------------------------------------- optimize


@dataclass
class OptimizeReport:
    model: str
    output: str
    level: str
    slim: bool
    size_before: int
    size_after: int
    nodes_before: int
    nodes_after: int
    speed: Speed
    parity_inputs: int
    max_abs_diff: float
    top1_agree: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["speed"] = self.speed.to_dict()
        return d


def optimize(model: Path, out: Path, level: str = "basic", slim: bool = True) -> OptimizeReport:
    """ORT offline graph optimization (``basic`` is portable across providers) then onnxslim, parity-checked.

    ``extended`` and ``all`` write CPU-specific fused ops (NCHWc layouts, contrib ops): faster on this CPU
    provider, not loadable everywhere. The model card is kept.
    """
    import onnx

    if level not in LEVELS:
        raise ToolchainError(f"unknown optimization level {level!r} (choose {', '.join(LEVELS)})")
    src = load_checked(model)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(
        prefix=".photosift-optimize-", dir=Path(out).parent if Path(out).parent.is_dir() else None
    ) as tmpdir:
        step = Path(tmpdir) / "ort.onnx"
        try:
            ort_optimize(src.path, step, level)
        except Exception as exc:
            raise ToolchainError(
                f"{src.path}: ONNX Runtime could not optimize it ({first_line(exc)})"
            ) from None
        proto = onnx.load(str(step))
        if slim:
            try:
                import onnxslim

                proto = onnxslim.slim(proto)
            except ImportError:
                raise ToolchainError("onnxslim is not installed (pip install 'photosift[export]')") from None
            except Exception as exc:
                notes.append(f"onnxslim skipped: {first_line(exc)}")
        set_card(proto, src.card, src.proto.metadata_props)
        with atomic_output(out) as tmp:
            save(proto, tmp)
            ref = session(src.path)
            new = session(tmp)
            x = probe_inputs(src.card, 6)
            parity = check_parity(
                run_logits(ref, src.card, x), run_logits(new, src.card, x), f"{src.path}: optimized model"
            )
            speed = compare_speed(ref, new, src.card)
            size_after = tmp.stat().st_size
            nodes_after = len(proto.graph.node)
    return OptimizeReport(
        model=str(src.path),
        output=str(out),
        level=level,
        slim=slim,
        size_before=src.path.stat().st_size,
        size_after=size_after,
        nodes_before=len(src.proto.graph.node),
        nodes_after=nodes_after,
        speed=speed,
        parity_inputs=len(x),
        max_abs_diff=parity.max_abs_diff,
        top1_agree=parity.top1_agree,
        notes=notes,
    )
