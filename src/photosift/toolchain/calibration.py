"""What static quantization learns from the user's photos, and the numpy that turns it into better INT8 weights.

Three parts, each a pure function of a float ONNX model and calibration tensors (CHW float32, preprocessed exactly
as at inference through the model card):

* **The photo set.** :func:`load_photos` lists a folder, splits it deterministically (by a hash of each file's
  relative path, so adding photos never reshuffles the others) into a calibration part and a held-out part, and
  decodes both; unreadable files are skipped and reported.
* **Statistics.** :func:`layer_stats` runs the float model once over the calibration tensors and accumulates, for
  every Conv/Gemm, the second moment ``E[x xᵀ]`` and mean ``E[x]`` of its input patches, in two folds (odd and
  even images) so that choices made from one fold can be checked on the other.
* **Weight math.** :func:`round_weights` quantizes each layer's weights per output channel with GPTQ (Frantar et
  al., 2023: round one input column at a time and push the rounding error onto the columns not yet rounded,
  weighted by the inverse input covariance) and then corrects the bias for the mean output error (Nagel et al.,
  2019, "bias correction"). The GPTQ damping is picked per layer by cross-validation between the two folds, and
  plain rounding wins where the layer sees too few samples (the last 7x7 layers of a small calibration set),
  which is where unvalidated GPTQ over-fits. :func:`equalize_streams` is cross-layer equalization for the linear
  (residual) tensors: it rescales their channels so each uses the shared per-tensor INT8 range, folding the scale
  into the producing and consuming convolutions, which leaves the float model's outputs unchanged.
  :func:`optimal_ranges` picks, per linear tensor, the clipping range that minimises the INT8 rounding +
  clipping error instead of the raw min/max.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from photosift.core.errors import PhotosiftError, ToolchainError
from photosift.core.imaging import Preprocess, load_tensor
from photosift.models.session import open_session
from photosift.toolchain.modelfile import list_images

QMAX = 127  # symmetric INT8 weights use [-127, 127], as ONNX Runtime's quantizer does
GPTQ_DAMPING = (None, 0.01, 0.1, 1.0)  # None = plain rounding
BIG_SPATIAL = 56  # layers whose input is at least this tall are sampled on every other row and column

Progress = Callable[[str], None]


# ---------------------------------------------------------------------------------------------- photo set


@dataclass
class PhotoSet:
    """Calibration and held-out tensors, with the files they came from."""

    calibration: np.ndarray
    held_out: np.ndarray
    calibration_files: list[str]
    held_out_files: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _hash_order(folder: Path, files: Sequence[Path]) -> list[Path]:
    def key(p: Path) -> str:
        return hashlib.sha1(p.relative_to(folder).as_posix().encode()).hexdigest()

    return sorted(files, key=key)


def load_photos(
    folder: Path,
    pre: Preprocess,
    *,
    held_out_fraction: float = 0.5,
    max_calibration: int = 200,
    max_held_out: int = 400,
    progress: Progress | None = None,
) -> PhotoSet:
    """Decode ``folder``'s photos and split them: the first ``held_out_fraction`` in hash order is held out.

    Half and half by default: the held-out half decides whether a quantized model is good enough, and a
    decision of "97% agree" needs as many photos as fitting the ranges does.
    """
    say = progress or (lambda _msg: None)
    if not folder.is_dir():
        raise ToolchainError(f"{folder}: calibration folder not found")
    files = list_images(folder)
    if not files:
        raise ToolchainError(f"{folder}: no images to calibrate on")
    tensors: list[np.ndarray] = []
    used: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for path in _hash_order(folder, files):
        try:
            tensors.append(load_tensor(path, pre))
            used.append(path)
        except PhotosiftError as exc:
            reason = getattr(exc, "reason", str(exc))
            skipped.append((str(path), reason))
            say(f"skipping {path}: {reason}")
    if not used:
        raise ToolchainError(f"{folder}: none of the {len(files)} images could be decoded")
    if len(used) < 2:
        raise ToolchainError(
            f"{folder}: only 1 usable image; need at least 2 (one to calibrate, one to check)"
        )
    n_held = min(max(1, round(len(used) * held_out_fraction)), len(used) - 1)
    held = list(range(n_held))[:max_held_out]
    cal = list(range(n_held, len(used)))[:max_calibration]
    rel = [p.relative_to(folder).as_posix() for p in used]
    say(
        f"{len(used)} photos: {len(cal)} to calibrate, {len(held)} held out"
        + (f", {len(skipped)} skipped" if skipped else "")
    )
    return PhotoSet(
        calibration=np.stack([tensors[i] for i in cal]),
        held_out=np.stack([tensors[i] for i in held]),
        calibration_files=[rel[i] for i in cal],
        held_out_files=[rel[i] for i in held],
        skipped=skipped,
    )


# ------------------------------------------------------------------------------------------------ layers


@dataclass
class Layer:
    """A Conv or Gemm whose weight (and bias, if any) are initializers: what GPTQ can re-round."""

    name: str
    input: str
    weight: str
    bias: str | None
    w: np.ndarray  # float64, as stored
    group: int = 1
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    gemm: bool = False
    trans_b: bool = False

    def matrix(self) -> np.ndarray:
        """Weights as (groups, rows, cols): rows are output channels, cols the input patch (c, kh, kw)."""
        if self.gemm:
            w = self.w if self.trans_b else self.w.T
            return w.reshape(1, w.shape[0], -1)
        return self.w.reshape(self.group, self.w.shape[0] // self.group, -1)

    def from_matrix(self, m: np.ndarray) -> np.ndarray:
        if self.gemm:
            return m[0] if self.trans_b else m[0].T
        return m.reshape(self.w.shape)


def layers(model: Any) -> list[Layer]:
    """The re-roundable Conv/Gemm layers of an ONNX ModelProto, in graph order."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    uses = Counter(name for node in model.graph.node for name in node.input)
    out = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if (bias is not None and bias not in inits) or uses[node.input[1]] > 1:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        common = (node.name, node.input[0], node.input[1], bias, w)
        if node.op_type == "Gemm":
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                continue
            out.append(Layer(*common, gemm=True, trans_b=bool(attrs.get("transB", 0))))
            continue
        if (
            w.ndim != 4
            or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
            or any(d != 1 for d in attrs.get("dilations", [1, 1]))
        ):
            continue
        kh, kw = w.shape[2:]
        strides, pads = list(attrs.get("strides", [1, 1])), list(attrs.get("pads", [0, 0, 0, 0]))
        out.append(
            Layer(
                *common,
                group=int(attrs.get("group", 1)),
                kernel=(int(kh), int(kw)),
                strides=(int(strides[0]), int(strides[1])),
                pads=(int(pads[0]), int(pads[1]), int(pads[2]), int(pads[3])),
            )
        )
    return out


def patches(x: np.ndarray, layer: Layer, sub: int = 1) -> np.ndarray:
    """The layer's input patches as (groups, cols, positions); ``sub`` > 1 keeps every sub-th output row/col."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if layer.gemm:
        return x.reshape(x.shape[0], -1).T[None]
    (kh, kw), (sh, sw), (t, left, b, r), g = layer.kernel, layer.strides, layer.pads, layer.group
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (left, r))) if any(layer.pads) else x
    ho, wo = (h + t + b - kh) // sh + 1, (w + left + r - kw) // sw + 1
    hs, ws = len(range(0, ho, sub)), len(range(0, wo, sub))
    v = np.empty((c, kh * kw, n, hs, ws), np.float32)
    for dy in range(kh):
        for dx in range(kw):
            v[:, dy * kw + dx] = xp[
                :, :, dy : dy + sh * (ho - 1) + 1 : sh * sub, dx : dx + sw * (wo - 1) + 1 : sw * sub
            ].transpose(1, 0, 2, 3)
    return v.reshape(g, (c // g) * kh * kw, n * hs * ws)


@dataclass
class Moments:
    """Per-layer input statistics: second moment (groups, cols, cols), mean (groups, cols), sample count."""

    h: np.ndarray
    mu: np.ndarray
    n: int

    def __add__(self, other: Moments) -> Moments:
        total = self.n + other.n
        return Moments(
            (self.h * self.n + other.h * other.n) / total,
            (self.mu * self.n + other.mu * other.n) / total,
            total,
        )

    def covariance(self) -> np.ndarray:
        return self.h - np.einsum("gi,gj->gij", self.mu, self.mu)


def _session_with_outputs(model: Any, names: Sequence[str], threads: int = 2) -> Any:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output} | {i.name for i in m.graph.input}
    for name in dict.fromkeys(names):
        if name not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return open_session(m.SerializeToString(), threads=threads)


def _batches(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def layer_stats(
    model: Any, input_name: str, all_layers: Sequence[Layer], x: np.ndarray, batch: int = 8
) -> tuple[list[Moments], list[Moments]]:
    """Input moments of every layer over ``x``, in two folds: even-numbered and odd-numbered batches."""
    feeds = [la.input for la in all_layers]
    fetch = [n for n in dict.fromkeys(feeds) if n != input_name]
    sess = _session_with_outputs(model, fetch)
    acc: list[list[list[Any] | None]] = [[None] * len(all_layers), [None] * len(all_layers)]
    for k, xb in enumerate(_batches(x, batch)):
        got = dict(zip(fetch, sess.run(fetch, {input_name: xb}), strict=True))
        got[input_name] = xb
        fold = acc[k % 2]
        for j, layer in enumerate(all_layers):
            a = got[layer.input]
            sub = 2 if a.ndim == 4 and a.shape[2] >= BIG_SPATIAL else 1
            v = patches(a, layer, sub)
            h = np.matmul(v, v.transpose(0, 2, 1)).astype(np.float64)
            s = v.sum(2, dtype=np.float64)
            cur = fold[j]
            fold[j] = [h, s, v.shape[2]] if cur is None else [cur[0] + h, cur[1] + s, cur[2] + v.shape[2]]
    if (
        len(_batches(x, batch)) < 2
    ):  # one batch: both folds see it (no validation possible, GPTQ is still sound)
        acc[1] = acc[0]
    out: tuple[list[Moments], list[Moments]] = ([], [])
    for f in (0, 1):
        for item in acc[f]:
            assert item is not None
            h, s, n = item
            out[f].append(Moments(h / n, s / n, n))
    return out


# ------------------------------------------------------------------------------------------ weight math


def weight_scale(w: np.ndarray) -> np.ndarray:
    """Per-row symmetric scale (groups, rows), as ONNX Runtime computes it; all-zero rows get scale 1."""
    s = np.abs(w).max(2) / QMAX
    s[s == 0] = 1.0
    return s


def round_nearest(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.clip(np.round(w / scale[..., None]), -QMAX, QMAX)


def gptq(w: np.ndarray, cov: np.ndarray, scale: np.ndarray, damp: float, block: int = 128) -> np.ndarray:
    """Integer weights (groups, rows, cols) minimising E‖(W - Q·s) x‖² for inputs with covariance ``cov``."""
    w = w.copy()
    k = w.shape[2]
    cov = cov.copy()
    diag = np.diagonal(cov, axis1=1, axis2=2).copy()
    dead = diag <= 0
    idx = np.arange(k)
    cov[:, idx, idx] += dead  # a constant-zero input: any weight is as good; keep the matrix invertible
    w[np.broadcast_to(dead[:, None, :], w.shape)] = 0
    cov[:, idx, idx] += damp * np.maximum(diag.mean(1), 1e-12)[:, None]
    try:
        u = np.linalg.cholesky(np.linalg.inv(cov)).transpose(0, 2, 1)  # upper factor of the inverse
    except np.linalg.LinAlgError:
        return round_nearest(w, scale)
    q = np.zeros_like(w)
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, :, i1:i2].copy()
        err = np.zeros_like(w1)
        for i in range(i2 - i1):
            col = w1[:, :, i]
            qi = np.clip(np.round(col / scale), -QMAX, QMAX)
            q[:, :, i1 + i] = qi
            e = (col - qi * scale) / u[:, i1 + i, i1 + i][:, None]
            w1[:, :, i:] -= e[:, :, None] * u[:, i1 + i, i1 + i : i2][:, None, :]
            err[:, :, i] = e
        if i2 < k:
            w[:, :, i2:] -= np.matmul(err, u[:, i1:i2, i2:])
    return q


@dataclass
class RoundedLayer:
    q: np.ndarray  # integer-valued weights, layer's own layout
    scale: np.ndarray  # per output channel
    bias_shift: np.ndarray  # add to the float bias: the mean output error the rounding made (bias correction)
    method: str  # "nearest" or "gptq(damp)"


def _output_error(w: np.ndarray, q: np.ndarray, scale: np.ndarray, cov: np.ndarray) -> float:
    d = w - q * scale[..., None]
    return float((np.matmul(d, cov) * d).sum())


def round_weights(
    all_layers: Sequence[Layer], folds: tuple[list[Moments], list[Moments]]
) -> dict[str, RoundedLayer]:
    """Per-layer cross-validated GPTQ + bias correction."""
    out = {}
    for layer, fa, fb in zip(all_layers, folds[0], folds[1], strict=True):
        w = layer.matrix()
        scale = weight_scale(w)
        ca, cb = fa.covariance(), fb.covariance()
        errs = {}
        # Fewer samples than inputs (the classifier of a small calibration set): the covariance is singular
        # and GPTQ would fit noise, so plain rounding is the only honest choice.
        for damp in GPTQ_DAMPING if min(fa.n, fb.n) >= w.shape[2] else (None,):
            if damp is None:
                qa = qb = round_nearest(w, scale)
            else:
                qa, qb = gptq(w, ca, scale, damp), gptq(w, cb, scale, damp)
            errs[damp] = _output_error(w, qa, scale, cb) + _output_error(w, qb, scale, ca)
        best = min(errs, key=lambda d: errs[d])
        both = fa + fb
        q = round_nearest(w, scale) if best is None else gptq(w, both.covariance(), scale, best)
        shift = np.einsum("grk,gk->gr", w - q * scale[..., None], both.mu).reshape(-1)
        out[layer.name] = RoundedLayer(
            q=layer.from_matrix(q),
            scale=scale.reshape(-1),
            bias_shift=shift if layer.bias is not None else np.zeros_like(shift),
            method="nearest" if best is None else f"gptq({best:g})",
        )
    return out


# ---------------------------------------------------------------------------------- activation ranges


def _linear_stream_groups(model: Any) -> list[tuple[list[str], list[Any], list[Any]]]:
    """Groups of linear tensors joined by Add (a residual stream) with the Convs that write and read them."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for n in model.graph.node:
        for i, t in enumerate(n.input):
            consumers.setdefault(t, []).append((n, i))
    graph_outputs = {o.name for o in model.graph.output}
    seen: set[str] = set()
    groups = []
    for node in model.graph.node:
        start = node.output[0]
        if start in seen or node.op_type not in ("Conv", "Add"):
            continue
        if node.op_type == "Conv" and not all(
            c.op_type in ("Conv", "Add") for c, _ in consumers.get(start, [])
        ):
            continue  # followed by an activation: not linear
        comp: set[str] = set()
        stack, ok = [start], True
        while stack:
            t = stack.pop()
            if t in comp:
                continue
            comp.add(t)
            p = producer.get(t)
            if p is None or t in graph_outputs or p.op_type not in ("Conv", "Add"):
                ok = False
                continue
            if p.op_type == "Add":
                stack.extend(p.input)
            for c, i in consumers.get(t, []):
                if c.op_type == "Add":
                    stack.append(c.output[0])
                elif c.op_type != "Conv" or i != 0:
                    ok = False
        seen |= comp
        if ok:
            prods = [producer[t] for t in comp if producer[t].op_type == "Conv"]
            cons = [c for t in comp for c, _ in consumers.get(t, []) if c.op_type == "Conv"]
            groups.append((sorted(comp), prods, cons))
    return groups


def channel_absmax(
    model: Any, input_name: str, tensors: Sequence[str], x: np.ndarray, batch: int = 16
) -> dict[str, np.ndarray]:
    names = [t for t in dict.fromkeys(tensors) if t != input_name]
    sess = _session_with_outputs(model, names)
    out: dict[str, np.ndarray] = {}
    for xb in _batches(x, batch):
        for name, a in zip(names, sess.run(names, {input_name: xb}), strict=True):
            m = np.abs(a).max(axis=(0, 2, 3)) if a.ndim == 4 else np.abs(a).max(axis=0)
            out[name] = m if name not in out else np.maximum(out[name], m)
    return out


def equalize_streams(model: Any, input_name: str, x: np.ndarray, max_gain: float = 8.0) -> int:
    """Cross-layer equalization of the linear streams, in place; returns how many streams were rescaled.

    Channel c of a stream is multiplied by a_c = R / r_c (R: the stream's largest channel range, r_c: channel
    c's), capped at ``max_gain``; producers' output rows and biases are multiplied by a_c, consumers' input
    columns divided by it. Exact in float; in INT8 every channel then spans the shared per-tensor range.
    """
    from onnx import helper, numpy_helper

    groups = _linear_stream_groups(model)
    if not groups:
        return 0
    ranges = channel_absmax(model, input_name, [t for comp, _, _ in groups for t in comp], x)
    inits = {i.name: i for i in model.graph.initializer}
    uses = Counter(name for node in model.graph.node for name in node.input)
    done = 0
    for comp, prods, cons in groups:
        convs = prods + cons
        if any(
            {a.name: helper.get_attribute_value(a) for a in c.attribute}.get("group", 1) != 1 for c in cons
        ) or any(n.input[1] not in inits or uses[n.input[1]] > 1 for n in convs):
            continue
        if any(len(p.input) > 2 and (p.input[2] not in inits or uses[p.input[2]] > 1) for p in prods):
            continue
        r = np.max([ranges[t] for t in comp], axis=0)
        big = float(r.max())
        if big <= 0:
            continue
        a = np.clip(big / np.maximum(r, big / max_gain), 1.0, max_gain)
        for p in prods:
            w = numpy_helper.to_array(inits[p.input[1]]) * a.reshape(-1, 1, 1, 1)
            inits[p.input[1]].CopyFrom(numpy_helper.from_array(w.astype(np.float32), p.input[1]))
            if len(p.input) > 2:
                b = numpy_helper.to_array(inits[p.input[2]]) * a
                inits[p.input[2]].CopyFrom(numpy_helper.from_array(b.astype(np.float32), p.input[2]))
        for c in cons:
            w = numpy_helper.to_array(inits[c.input[1]]) / a.reshape(1, -1, 1, 1)
            inits[c.input[1]].CopyFrom(numpy_helper.from_array(w.astype(np.float32), c.input[1]))
        done += 1
    return done


def _uint8_error(a: np.ndarray, lo: float, hi: float) -> float:
    scale = (hi - lo) / 255.0
    zp = np.round(-lo / scale)
    q = (np.clip(np.round(a / scale) + zp, 0, 255) - zp) * scale
    return float(((a - q) ** 2).mean())


def optimal_ranges(
    model: Any, input_name: str, x: np.ndarray, batch: int = 16
) -> dict[str, tuple[float, float]]:
    """Per linear tensor (Conv without activation, Add), the UINT8 range with the least squared error."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n.op_type)
    tensors = [
        t
        for t, n in producer.items()
        if n.op_type in ("Conv", "Add") and not any(op in ("Clip", "Relu") for op in consumers.get(t, []))
    ]
    if not tensors:
        return {}
    sess = _session_with_outputs(model, tensors)
    samples: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for xb in _batches(x, batch):
        for t, a in zip(tensors, sess.run(tensors, {input_name: xb}), strict=True):
            samples[t].append(a.ravel()[::7])
    out = {}
    for t in tensors:
        a = np.concatenate(samples[t])
        lo, hi = min(float(a.min()), 0.0), max(float(a.max()), 0.0)
        if hi - lo <= 0:
            continue
        f = min(np.linspace(0.4, 1.0, 25), key=lambda f: _uint8_error(a, lo * f, hi * f))
        out[t] = (lo * float(f), hi * float(f))
    return out
