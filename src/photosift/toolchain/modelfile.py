"""The model-file plumbing the toolchain steps share: loading and checking a carded ONNX model, writing it
atomically, sessions, logits, agreement with a reference, timing on ready tensors.

Every failure is a one-line :class:`~photosift.core.errors.ToolchainError` naming the file and the reason; every
output goes through :func:`atomic_output`, so a failed step never leaves a partial file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from photosift.core.errors import ModelError, PhotosiftError, ToolchainError
from photosift.core.scanner import walk
from photosift.models.card import CARD_KEY, ModelCard
from photosift.models.registry import resolve_model
from photosift.models.session import one_line as first_line
from photosift.models.session import open_session

SPEED_BATCH = 8
SPEED_THREADS = 2
PARITY_TOLERANCE = 1e-4  # max |Δ| between a model's outputs and its source's (export, optimize)


@dataclass
class CheckedModel:
    """An ONNX file that parsed, carries a model card, and whose input matches it."""

    path: Path
    proto: Any  # onnx.ModelProto
    card: ModelCard


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` by the rules ``photosift classify`` uses (:func:`scanner.walk`), sorted."""
    return sorted(Path(e.path) for e in walk([folder]))


def load_checked(path: Path) -> CheckedModel:
    """Load ``path`` (or a registered model's name) and check it against its card.

    Every failure is a one-line ToolchainError naming the file and the reason.
    """
    import onnx

    path = Path(path)
    if not path.is_file() and path.suffix != ".onnx" and len(path.parts) == 1:
        try:  # a registered model's name ("efficientnet-lite0")
            path = resolve_model(str(path)).path
        except PhotosiftError as exc:
            raise ToolchainError(str(exc)) from None
    if not path.is_file():
        raise ToolchainError(f"{path}: model file not found")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ToolchainError(f"{path}: not an ONNX model ({first_line(exc)})") from None
    if not proto.graph.node:
        raise ToolchainError(f"{path}: not an ONNX model (no graph)")
    meta = {p.key: p.value for p in proto.metadata_props}
    if CARD_KEY not in meta:
        raise ToolchainError(
            f"{path}: the model has no photosift model card (export it with `photosift export`)"
        )
    try:
        card = ModelCard.from_json(meta[CARD_KEY], str(path))
    except ModelError as exc:
        raise ToolchainError(str(exc)) from None
    inits = {i.name for i in proto.graph.initializer}
    inputs = {i.name: i for i in proto.graph.input if i.name not in inits}
    want = f"[batch, 3, {card.preprocess.input_size}, {card.preprocess.input_size}]"
    if card.input_name not in inputs:
        raise ToolchainError(
            f"{path}: no input named {card.input_name!r} as its model card says (has {', '.join(inputs)})"
        )
    dims = inputs[card.input_name].type.tensor_type.shape.dim
    got = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    expected = [None, 3, card.preprocess.input_size, card.preprocess.input_size]
    if len(got) != 4 or any(
        g is not None and e is not None and g != e for g, e in zip(got, expected, strict=True)
    ):
        shown = "[" + ", ".join("?" if g is None else str(g) for g in got) + "]"
        raise ToolchainError(
            f"{path}: input {card.input_name!r} has shape {shown} but the model card says {want}"
        )
    if card.logits_name not in {o.name for o in proto.graph.output}:
        raise ToolchainError(f"{path}: no output named {card.logits_name!r} as its model card says")
    return CheckedModel(path, proto, card)


def set_card(proto: Any, card: ModelCard, keep: Sequence[Any] = ()) -> None:
    """Store ``card`` in ``proto``'s metadata (other metadata in ``keep`` is carried over)."""
    del proto.metadata_props[:]
    for prop in keep:
        if prop.key != CARD_KEY:
            proto.metadata_props.add(key=prop.key, value=prop.value)
    proto.metadata_props.add(key=CARD_KEY, value=card.to_json())
    proto.doc_string = f"photosift model {card.name}: {card.arch}, {card.precision}"
    proto.producer_name = "photosift"


@contextmanager
def quiet_logging() -> Iterator[None]:
    """ONNX Runtime's quantizer logs warnings (pre-processing advice) on the root logger on every call, and its
    histogram calibrators print progress on stdout (which carries ``--json``)."""
    previous = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.getLogger().setLevel(previous)


@contextmanager
def atomic_output(out: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``out``; it replaces ``out`` only if the block finishes without error."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; the output is an ordinary file
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def save(proto: Any, path: Path) -> None:
    import onnx

    onnx.save(proto, str(path))


def session(model: Path | bytes, threads: int = SPEED_THREADS, level: str = "all") -> Any:
    """A CPU session for a toolchain step (load failures are ToolchainErrors naming the model)."""
    try:
        return open_session(model, threads=threads, level=level)
    except ModelError as exc:
        raise ToolchainError(str(exc)) from None


def ort_optimize(src: Path, dst: Path, level: str = "basic") -> None:
    """Offline ORT graph optimization. 'basic' is portable (provider-independent rewrites only)."""
    open_session(src, level=level, optimized_path=dst)


def run_logits(sess: Any, card: ModelCard, x: np.ndarray, batch: int = 32) -> np.ndarray:
    return run_outputs(sess, card, x, batch)[0]


def run_outputs(
    sess: Any, card: ModelCard, x: np.ndarray, batch: int = 32, embedding: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits and (with ``embedding``, when the card names one) the embedding for every row of ``x``."""
    names = [card.logits_name] + ([card.embedding_name] if embedding and card.embedding_name else [])
    parts = [sess.run(names, {card.input_name: x[i : i + batch]}) for i in range(0, len(x), batch)]
    logits = np.concatenate([p[0] for p in parts])
    return logits, (np.concatenate([p[1] for p in parts]) if len(names) > 1 else None)


@dataclass
class ParityReport:
    images: int
    max_abs_diff: float
    top1_agree: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_parity(
    ref: np.ndarray, got: np.ndarray, what: str, tolerance: float = PARITY_TOLERANCE
) -> ParityReport:
    """``got`` must reproduce ``ref`` (outputs on the same inputs): max |Δ| <= ``tolerance`` and the same top-1
    on every row; otherwise a ToolchainError that says ``what`` failed and by how much."""
    diff = float(np.abs(ref - got).max())
    agree = int((ref.argmax(1) == got.argmax(1)).sum())
    if diff > tolerance or agree != len(ref):
        raise ToolchainError(
            f"{what} fails parity: max |Δlogit| = {diff:.2e} (limit {tolerance:.0e}), "
            f"top-1 agrees on {agree}/{len(ref)} inputs"
        )
    return ParityReport(len(ref), diff, agree)


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion: how far ``hits / n`` can be from the rate on photos not seen."""
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


@dataclass
class Agreement:
    """How well ``got`` logits reproduce ``ref`` logits, photo by photo.

    Top-1 agreement on a few hundred photos is a noisy number: most disagreements are photos whose reference
    top two classes are within a few hundredths of a logit, so it moves by whole points between photo sets of
    the same kind. ``ci95`` says how far it can move; ``sqnr_db`` (reference logit power over the power of the
    difference) is the steadier measure of how faithful the model is.
    """

    top1: float  # share of photos with the same top-1
    top5_containment: float  # share whose reference top-1 is within the model's top 5
    max_abs_diff: float  # largest |Δlogit|
    photos: int = 0
    ci95: tuple[float, float] = (0.0, 1.0)  # Wilson interval of top1
    sqnr_db: float | None = None  # logit signal-to-quantization-noise ratio

    @classmethod
    def of(cls, ref: np.ndarray, got: np.ndarray) -> Agreement:
        top1 = ref.argmax(1)
        top5 = np.argsort(-got, axis=1)[:, :5]
        same = int((top1 == got.argmax(1)).sum())
        noise = float(((ref.astype(np.float64) - got) ** 2).mean())
        signal = float((ref.astype(np.float64) ** 2).mean())
        return cls(
            round(same / len(ref), 4),
            round(float((top5 == top1[:, None]).any(1).mean()), 4),
            round(float(np.abs(ref - got).max()), 4),
            len(ref),
            wilson_interval(same, len(ref)),
            round(10 * math.log10(signal / noise), 1) if noise > 0 and signal > 0 else None,
        )


def probe_inputs(card: ModelCard, n: int = 4, seed: int = 0) -> np.ndarray:
    """Deterministic inputs in the range real preprocessed photos take (smooth noise, then normalised)."""
    rng = np.random.default_rng(seed)
    s = card.preprocess.input_size
    coarse = rng.uniform(0, 255, size=(n, 3, max(2, s // 16), max(2, s // 16))).astype(np.float32)
    img = coarse.repeat(16, axis=2).repeat(16, axis=3)[:, :, :s, :s]
    if img.shape[2] < s:
        img = np.pad(img, ((0, 0), (0, 0), (0, s - img.shape[2]), (0, s - img.shape[3])), mode="edge")
    img = img + rng.normal(0, 8, size=img.shape).astype(np.float32)
    mean = np.asarray(card.preprocess.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(card.preprocess.std, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((np.clip(img, 0, 255) - mean) / std, dtype=np.float32)


@dataclass
class Speed:
    """Images per second on ready tensors, same thread settings for both models, interleaved rounds."""

    reference_ips: float
    model_ips: float
    batch: int = SPEED_BATCH
    threads: int = SPEED_THREADS

    @property
    def speedup(self) -> float:
        return self.model_ips / self.reference_ips if self.reference_ips else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": round(self.speedup, 3)}


def _time_runs(sess: Any, feed: dict[str, np.ndarray], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def compare_speed(
    reference: Any, model: Any, card: ModelCard, x: np.ndarray | None = None, rounds: int = 5, reps: int = 8
) -> Speed:
    """Throughput of two sessions on the same batch, alternating rounds so a noisy machine hits both alike."""
    if x is None or len(x) < SPEED_BATCH:
        x = probe_inputs(card, SPEED_BATCH, seed=1)
    feed = {card.input_name: np.ascontiguousarray(x[:SPEED_BATCH])}
    for sess in (reference, model):
        for _ in range(3):
            sess.run(None, feed)
    ref_t, mod_t = [], []
    for _ in range(rounds):
        ref_t.append(_time_runs(reference, feed, reps))
        mod_t.append(_time_runs(model, feed, reps))
    return Speed(SPEED_BATCH / float(np.median(ref_t)), SPEED_BATCH / float(np.median(mod_t)))


def throughput(sess: Any, card: ModelCard, rounds: int = 5, reps: int = 8) -> float:
    """Images per second of one session on ready tensors (batch SPEED_BATCH), for models that take different
    inputs (a distilled student and its teacher); :func:`compare_speed` compares two that take the same."""
    feed = {card.input_name: probe_inputs(card, SPEED_BATCH, seed=1)}
    for _ in range(3):
        sess.run(None, feed)
    return SPEED_BATCH / float(np.median([_time_runs(sess, feed, reps) for _ in range(rounds)]))
