"""Accuracy-aware post-training quantization: static INT8 (QDQ) calibrated on the user's photos, FP16 for GPUs,
and dynamic INT8 for MatMul-heavy models only.

Static INT8 (:func:`quantize`) holds out half of the calibration folder (a deterministic split), builds several
candidates, measures each against the FP32 model on the held-out photos (top-1 agreement, top-5 containment,
max |Δlogit|) and on ready tensors (speed, same thread settings), and keeps the *fastest* candidate whose
agreement reaches ``min_agreement``. Candidates, cheapest first:

* ONNX Runtime's textbook recipes: per-tensor and per-channel weights, U8S8 / S8S8 activations, reduce_range;
* photosift's recipe on top of per-channel U8S8: cross-layer equalization of the linear (residual) streams,
  GPTQ weight rounding validated per layer plus bias correction, least-squares activation ranges for the linear
  tensors, float logits, and the first *k* compute nodes kept in float (k = 0, 1, 2, ...).

Why a float *prefix* rather than arbitrary float nodes: ONNX Runtime (>= 1.20, ``WeightBiasQuantization``)
re-quantizes the float weights of any Conv/Gemm whose input comes from a DequantizeLinear, per tensor, at session
load — a node "kept in float" in the middle of a QDQ graph silently runs with per-tensor INT8 weights, which is
worse than quantizing it per channel. A prefix is fed float tensors, so it stays float. On EfficientNet-Lite the
quantization error also concentrates there (the stem and first depthwise conv), and ORT's INT8 stem (three input
channels) is slower than the float one, so a short prefix costs no speed.

Nothing is written unless a candidate passes: work happens in a temporary directory and the result is moved into
place at the end.
"""

from __future__ import annotations

import inspect
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from photosift.core.errors import ToolchainError
from photosift.models.card import ModelCard
from photosift.toolchain import calibration as cal
from photosift.toolchain import qdq
from photosift.toolchain.modelfile import (
    Agreement,
    CheckedModel,
    Speed,
    atomic_output,
    compare_speed,
    first_line,
    load_checked,
    probe_inputs,
    quiet_logging,
    run_logits,
    save,
    session,
    set_card,
)
from photosift.toolchain.optimize import compute_share, to_fp16

PRECISIONS = ("int8", "fp16")
MAX_FLOAT_PREFIX = 8
SPEED_NOISE = 0.05
NEAR_TIE = 0.5  # logits
Progress = Callable[[str], None]


@dataclass
class Candidate:
    name: str
    config: dict[str, Any]
    float_nodes: list[str]
    agreement: float
    top5_containment: float
    max_abs_diff: float
    speedup: float
    size_bytes: int
    passed: bool
    sqnr_db: float | None = None  # held-out logit SQNR: steadier than agreement on a few dozen photos
    agreement_ci: tuple[float, float] = (0.0, 1.0)  # 95% Wilson interval of the held-out agreement

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QuantizeReport:
    model: str
    output: str
    precision: str
    method: str  # "static", "dynamic" or "fp16"
    size_bytes_fp32: int
    size_bytes: int
    speed: Speed | None
    images: int  # photos the agreement was measured on (held-out part for static INT8)
    agreement: float | None
    top5_containment: float | None
    max_abs_diff: float | None
    min_agreement: float | None
    agreement_ci: tuple[float, float] = (0.0, 1.0)  # 95% Wilson interval of the agreement
    sqnr_db: float | None = None  # logit signal-to-noise ratio against FP32
    near_ties: int = 0  # photos whose FP32 top-1 beats its top-2 by less than NEAR_TIE logits
    agreement_clear: float | None = None  # agreement on the other photos
    config: dict[str, Any] = field(default_factory=dict)
    float_nodes: list[str] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    calibration_images: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    weight_rounding: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["speed"] = self.speed.to_dict() if self.speed else None
        d["candidates"] = [c.to_dict() for c in self.candidates]
        d["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        return d


def _quiet(_msg: str) -> None:
    pass


def _clear_agreement(ref: np.ndarray, got: np.ndarray) -> tuple[int, float | None]:
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) >= NEAR_TIE
    if not clear.any():
        return int((~clear).sum()), None
    return int((~clear).sum()), round(float((ref[clear].argmax(1) == got[clear].argmax(1)).mean()), 4)


def _checked_write(
    proto: Any,
    src: CheckedModel,
    out: Path,
    x: np.ndarray,
    *,
    method: str,
    precision: str,
    min_agreement: float | None,
    ref_sess: Any | None = None,
    **extra: Any,
) -> QuantizeReport:
    """Write ``proto`` to ``out`` atomically, measured against ``src`` on ``x``: agreement, speed, size.

    With ``min_agreement``, a model below it is refused and nothing is written.
    """
    ref_sess = ref_sess or session(src.path)
    ref = run_logits(ref_sess, src.card, x)
    set_card(proto, src.card.model_copy(update={"precision": precision}), src.proto.metadata_props)
    with atomic_output(out) as tmp:
        save(proto, tmp)
        sess = session(tmp)
        got = run_logits(sess, src.card, x)
        agreement = Agreement.of(ref, got)
        if min_agreement is not None and agreement.top1 < min_agreement:
            raise ToolchainError(
                f"{src.path}: the {precision.upper()} model agrees with FP32 on only {agreement.top1:.1%} of "
                f"{len(x)} photos (need {min_agreement:.1%}); nothing written"
            )
        near_ties, clear = _clear_agreement(ref, got)
        return QuantizeReport(
            model=str(src.path),
            output=str(out),
            precision=precision,
            method=method,
            size_bytes_fp32=src.path.stat().st_size,
            size_bytes=tmp.stat().st_size,
            speed=compare_speed(ref_sess, sess, src.card, x),
            images=len(x),
            agreement=agreement.top1,
            top5_containment=agreement.top5_containment,
            max_abs_diff=agreement.max_abs_diff,
            min_agreement=min_agreement,
            agreement_ci=agreement.ci95,
            sqnr_db=agreement.sqnr_db,
            near_ties=near_ties,
            agreement_clear=clear,
            **extra,
        )


def _write_report(report: QuantizeReport, path: Path | None) -> None:
    if path is None:
        return
    with atomic_output(Path(path)) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n")


# ------------------------------------------------------------------------------- ONNX Runtime's quantizer


class _Reader:
    """ONNX Runtime CalibrationDataReader over ready tensors."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int = 8) -> None:
        self.input_name, self.x, self.batch, self.i = input_name, x, batch, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.x):
            return None
        xb = self.x[self.i : self.i + self.batch]
        self.i += self.batch
        return {self.input_name: xb}

    def rewind(self) -> None:
        self.i = 0

    def __len__(self) -> int:
        return len(self.x)

    def __iter__(self) -> Any:
        self.rewind()
        return iter(self.get_next, None)


def _qtype(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}[name]


def _run_static(
    src: Path,
    out: Path,
    card: ModelCard,
    x: np.ndarray,
    cache: Path,
    config: dict[str, Any],
    exclude: Sequence[str] = (),
    overrides: dict[str, Any] | None = None,
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    extra: dict[str, Any] = {}
    if config.get("float_logits"):
        extra["OpTypesToExcludeOutputQuantization"] = ["Gemm", "MatMul"]
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    kwargs: dict[str, Any] = {}
    if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        kwargs["calibration_cache_path"] = str(cache)
    try:
        with quiet_logging():
            quantize_static(
                str(src),
                str(out),
                # Histogram calibrators stack per-batch arrays: every batch must have the same size.
                _Reader(
                    card.input_name, x, batch=8 if config.get("calibration", "minmax") == "minmax" else 1
                ),
                quant_format=QuantFormat.QDQ,
                per_channel=config["per_channel"],
                reduce_range=config.get("reduce_range", False),
                activation_type=_qtype(config["activations"]),
                weight_type=_qtype(config["weights"]),
                nodes_to_exclude=list(exclude),
                calibrate_method=getattr(CalibrationMethod, CALIBRATION[config.get("calibration", "minmax")]),
                extra_options=extra,
                **kwargs,
            )
    except Exception as exc:
        raise ToolchainError(f"{src.name}: ONNX Runtime's quantizer failed ({first_line(exc)})") from None


# --------------------------------------------------------------------------------------------- static


PLAIN = [
    ("ort per-tensor U8S8", {"per_channel": False, "activations": "u8", "weights": "s8"}),
    ("ort per-channel U8S8", {"per_channel": True, "activations": "u8", "weights": "s8"}),
    ("ort per-channel S8S8", {"per_channel": True, "activations": "s8", "weights": "s8"}),
    (
        "ort per-channel U8S8 reduce_range",
        {"per_channel": True, "activations": "u8", "weights": "s8", "reduce_range": True},
    ),
    (
        "ort per-channel U8S8 percentile",
        {"per_channel": True, "activations": "u8", "weights": "s8", "calibration": "percentile"},
    ),
    (
        "ort per-channel U8S8 entropy",
        {"per_channel": True, "activations": "u8", "weights": "s8", "calibration": "entropy"},
    ),
]
CALIBRATION = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def quantize(
    model: Path,
    calibrate: Path,
    out: Path,
    *,
    min_agreement: float = 0.97,
    precision: str = "int8",
    report: Path | None = None,
    progress: Callable[[str], None] | None = None,
    float_prefix: int | None = None,
) -> QuantizeReport:
    """Quantize ``model`` for CPUs (``int8``, calibrated on the photos in ``calibrate``) or GPUs (``fp16``).

    ``float_prefix`` pins the search to photosift's recipe with that many leading compute nodes in float (for
    reproducible builds of a known-good configuration); the held-out check still applies.
    """
    say = progress or _quiet
    if precision not in PRECISIONS:
        raise ToolchainError(f"unknown precision {precision!r} (choose {', '.join(PRECISIONS)})")
    if not 0.0 <= min_agreement <= 1.0:
        raise ToolchainError(f"min_agreement must be between 0 and 1 (got {min_agreement})")
    started = time.perf_counter()
    src = load_checked(Path(model))
    photos = cal.load_photos(Path(calibrate), src.card.preprocess, progress=say)
    if precision == "fp16":
        result = _quantize_fp16(src, photos, Path(out), min_agreement, say)
    else:
        result = _quantize_int8(src, photos, Path(out), min_agreement, say, float_prefix)
    result.seconds = round(time.perf_counter() - started, 1)
    _write_report(result, report)
    return result


def _quantize_int8(
    src: CheckedModel,
    photos: cal.PhotoSet,
    out: Path,
    min_agreement: float,
    say: Progress,
    float_prefix: int | None = None,
) -> QuantizeReport:
    import onnx

    card = src.card
    ref_sess = session(src.path)
    ref = run_logits(ref_sess, card, photos.held_out)
    candidates: list[Candidate] = []
    files: dict[str, Path] = {}
    rounding_summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="photosift-quantize-") as tmpdir:
        tmp = Path(tmpdir)
        float_path = tmp / "float.onnx"
        plain = onnx.ModelProto()
        plain.CopyFrom(src.proto)
        del plain.metadata_props[:]
        save(plain, float_path)

        def consider(name: str, config: dict[str, Any], path: Path, float_nodes: list[str]) -> Candidate:
            sess = session(path)
            a = Agreement.of(ref, run_logits(sess, card, photos.held_out))
            speed = compare_speed(ref_sess, sess, card, photos.held_out)
            c = Candidate(
                name,
                config,
                float_nodes,
                a.top1,
                a.top5_containment,
                a.max_abs_diff,
                round(speed.speedup, 3),
                path.stat().st_size,
                a.top1 >= min_agreement,
                a.sqnr_db,
                a.ci95,
            )
            candidates.append(c)
            files[name] = path
            say(
                f"{name}: agreement {a.top1:.1%}, top-5 {a.top5_containment:.1%}, logit SQNR {a.sqnr_db} dB, "
                f"{speed.speedup:.2f}x FP32, "
                f"{c.size_bytes / 1e6:.1f} MB{'  <- meets the bar' if c.passed else ''}"
            )
            return c

        say(f"calibrating on {len(photos.calibration)} photos")
        for i, (name, config) in enumerate(PLAIN if float_prefix is None else []):
            path = tmp / f"plain{i}.onnx"
            _run_static(
                float_path,
                path,
                card,
                photos.calibration,
                tmp / f"ranges-{config.get('calibration', 'minmax')}.json",
                config,
            )
            consider(name, config, path, [])

        say("equalizing the linear streams, measuring layer inputs, rounding weights (GPTQ, cross-validated)")
        eq = onnx.ModelProto()
        eq.CopyFrom(plain)
        streams = cal.equalize_streams(eq, card.input_name, photos.calibration)
        eq_path = tmp / "float-equalized.onnx"
        save(eq, eq_path)
        layer_list = cal.layers(eq)
        folds = cal.layer_stats(eq, card.input_name, layer_list, photos.calibration)
        rounded = cal.round_weights(layer_list, folds)
        methods: dict[str, int] = {}
        for r in rounded.values():
            methods[r.method] = methods.get(r.method, 0) + 1
        rounding_summary = {"equalized_streams": streams, "layers": len(rounded), "methods": methods}
        ranges = cal.optimal_ranges(eq, card.input_name, photos.calibration)
        overrides = {t: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for t, (lo, hi) in ranges.items()}
        compute = qdq.compute_nodes(eq)
        if float_prefix is not None and not 0 <= float_prefix < len(compute):
            raise ToolchainError(f"float_prefix must be between 0 and {len(compute) - 1} for {src.path.name}")
        recipe = {
            "per_channel": True,
            "activations": "u8",
            "weights": "s8",
            "float_logits": True,
            "equalization": True,
            "gptq": True,
            "bias_correction": True,
            "ranges": "least-squares",
        }
        best_speed = 0.0
        prefixes = (
            range(min(MAX_FLOAT_PREFIX, len(compute) - 1) + 1) if float_prefix is None else [float_prefix]
        )
        for k in prefixes:
            prefix = compute[:k]
            name = f"photosift, float prefix {k}"
            path = tmp / f"recipe{k}.onnx"
            _run_static(
                eq_path, path, card, photos.calibration, tmp / "ranges-eq.json", recipe, prefix, overrides
            )
            q = onnx.load(str(path))
            qdq.apply_rounding(q, eq, layer_list, rounded, prefix)
            qdq.float_graph_outputs(q)
            save(q, path)
            c = consider(name, {**recipe, "float_prefix": k}, path, prefix)
            if c.passed:
                best_speed = max(best_speed, c.speedup)
            # Keep looking while nothing passes; once something has, stop when float nodes only cost speed.
            if k >= 3 and best_speed and c.speedup < best_speed:
                break
            if k >= 3 and c.speedup < 1.0:
                break

        passing = [c for c in candidates if c.passed]
        if not passing:
            best = max(candidates, key=lambda c: (c.agreement, c.speedup))
            raise ToolchainError(
                f"{src.path}: no INT8 candidate reached {min_agreement:.1%} top-1 agreement with FP32 on the "
                f"{len(photos.held_out)} held-out photos (best {best.agreement:.1%}, {best.name}); nothing written"
            )
        # Fastest wins; speeds within SPEED_NOISE of the fastest are a tie (timing noise), broken by agreement,
        # then by logit SQNR.
        fastest = max(c.speedup for c in passing)
        chosen = max(
            (c for c in passing if c.speedup >= fastest * (1 - SPEED_NOISE)),
            key=lambda c: (c.agreement, c.sqnr_db or 0.0, c.speedup),
        )
        say(f"chose {chosen.name}")
        return _checked_write(
            onnx.load(str(files[chosen.name])),
            src,
            out,
            photos.held_out,
            method="static",
            precision="int8",
            min_agreement=min_agreement,
            ref_sess=ref_sess,
            config=chosen.config,
            float_nodes=chosen.float_nodes,
            candidates=candidates,
            calibration_images=len(photos.calibration),
            skipped=photos.skipped,
            weight_rounding=rounding_summary,
        )


# ------------------------------------------------------------------------------------------------ fp16


def _quantize_fp16(
    src: CheckedModel, photos: cal.PhotoSet, out: Path, min_agreement: float, say: Progress
) -> QuantizeReport:
    say("converting to float16 (inputs and outputs stay float32)")
    return _checked_write(
        to_fp16(src.proto),
        src,
        out,
        np.concatenate([photos.held_out, photos.calibration]),  # nothing is fitted: every photo is a check
        method="fp16",
        precision="fp16",
        min_agreement=min_agreement,
        config={"keep_io_types": True},
        skipped=photos.skipped,
        notes=[
            "FP16 is for GPU providers (CUDA, TensorRT, DirectML, CoreML); the CPU provider runs it slower than FP32"
        ],
    )


# --------------------------------------------------------------------------------------------- dynamic


def quantize_dynamic_model(
    model: Path, out: Path, *, report: Path | None = None, progress: Callable[[str], None] | None = None
) -> QuantizeReport:
    """Dynamic INT8 (weights INT8, activations quantized per batch at run time) for MatMul-heavy models.

    Refused for convolution-dominated models: ORT turns their Convs into ConvInteger, which on
    EfficientNet-Lite0 ran ~5x slower than FP32 (0.2x) and agreed with FP32's top-1 on 34% of photos.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    say = progress or _quiet
    started = time.perf_counter()
    src = load_checked(Path(model))
    macs = compute_share(src.proto, src.card)
    total = sum(macs.values())
    conv = macs.get("Conv", 0) + macs.get("ConvTranspose", 0)
    if total == 0:
        raise ToolchainError(f"{src.path}: no Conv, MatMul or Gemm to quantize")
    if conv / total > 0.5:
        raise ToolchainError(
            f"{src.path}: dynamic quantization refused: convolutions are {conv / total:.0%} of its compute and become "
            "ConvInteger, which ONNX Runtime runs ~5x slower than float (EfficientNet-Lite0: 0.2x speed, 34% top-1 "
            "agreement); use static quantization (photosift quantize MODEL --calibrate DIR)"
        )
    say(f"MatMul/Gemm are {1 - conv / total:.0%} of the compute: quantizing their weights to INT8")
    with tempfile.TemporaryDirectory(prefix="photosift-dynamic-") as tmpdir:
        raw = Path(tmpdir) / "dynamic.onnx"
        try:
            with quiet_logging():
                quantize_dynamic(
                    str(src.path),
                    str(raw),
                    op_types_to_quantize=["MatMul", "Gemm"],
                    weight_type=QuantType.QInt8,
                )
        except Exception as exc:
            raise ToolchainError(f"{src.path}: dynamic quantization failed ({first_line(exc)})") from None
        import onnx

        result = _checked_write(
            onnx.load(str(raw)),
            src,
            Path(out),
            probe_inputs(src.card, 16),
            method="dynamic",
            precision="int8",
            min_agreement=None,
            config={"op_types": ["MatMul", "Gemm"], "weights": "s8", "macs": macs},
            notes=["agreement measured on synthetic probe inputs; check real photos with photosift eval"],
        )
    result.seconds = round(time.perf_counter() - started, 1)
    _write_report(result, report)
    return result
