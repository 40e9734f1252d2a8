"""Is a photo about people? A face signal that runs offline, on the image the decode threads already have.

ImageNet has no "person" class (only "scuba diver", "bridegroom" and "baseball player"), so the classifier alone
files a portrait under whatever the person wears ("suit", "academic gown", "military uniform"). This module adds
the missing signal: a face detector, run on the decoded image before it is resized for the classifier.

The detector is MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
Networks", 2016): three small CNNs (P-Net proposes 12 px windows over an image pyramid, R-Net and O-Net re-score
24 and 48 px crops). The three ONNX files (2 MB, MIT licence) ship in ``photosift/data/faces`` (see the README
there for their origin): P-Net, which is most of the cost, on OpenCV's DNN module (faster on a net this small, see
``PeopleDetector._pnet``), R-Net and O-Net on ONNX Runtime. We chose MTCNN over OpenCV's Haar
cascades after measuring both on the same photos (docs/CATEGORIES.md): Haar found fewer faces and fired on
brick walls, animals and fire trucks; MTCNN found more and fired on none of 531 photos without people.

What it misses (measured and by construction): faces smaller than ``min_face`` of the shorter side (a crowd far
away, a person small in a landscape), people seen from behind or with the face covered (helmets, gas masks),
strong profiles, faces rotated more than ~45° (a photo whose EXIF orientation is wrong), drawings and cartoons.

Where it runs: the pipeline keeps each decoded photo (:meth:`PeopleDetector.held_image`) and detects after the
classifier, only where its decision leaves faces worth looking for (:meth:`PeopleDetector.wanted`) and the
embedding passes the face gate (facegate.py).

Thread safety: one :class:`PeopleDetector` may be shared by many threads. ONNX Runtime sessions are safe to call
concurrently and are created on first use under a lock; the OpenCV P-Nets are per thread. Everything runs on one
thread per call because the parallelism comes from the pipeline's threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from photosift.core.errors import ModelError

# OpenCV comes with the `people` extra and is imported when a detector is made, so that everything else (and
# `classify --no-people`) runs without it.
cv2: Any = None


def require_cv2() -> Any:
    global cv2
    if cv2 is None:
        try:
            import cv2 as module
        except ImportError:
            raise ModelError(
                "face detection needs OpenCV: pip install 'photosift[people]' (or classify with --no-people)"
            ) from None
        # OpenCV's own thread pool would compete with the pipeline's threads, which already use every core.
        module.setNumThreads(1)
        cv2 = module
    return cv2


FACE_MODEL_DIR = Path(str(resources.files("photosift.data"))) / "faces"

# Cascade thresholds for P-Net, R-Net and O-Net. MTCNN's paper uses 0.6 for P-Net; 0.9 leaves R-Net a fraction
# of the proposals to re-score (on textured photos R-Net cost as much as P-Net) and lost no people photo on our
# sets (tools/eval_faces.py: 0.7, 0.8, 0.85, 0.9 and 0.95 all found the same 49 of 75).
_STAGE_THRESHOLDS = (0.9, 0.7, 0.7)
# Most of the time goes into re-scoring proposals; a photo never needs more than this many looked at (taken best
# first, after non-maximum suppression). A group photo has rarely more than 8 faces big enough to matter.
_MAX_PROPOSALS = (32, 8)
# Each pyramid level is half the size of the one before. MTCNN's paper steps by 0.709 (half the pixels); 0.5
# costs a third less and found the same faces with each photo zoomed by 1 to 1.41 (tools/eval_faces.py and
# docs/CATEGORIES.md): P-Net's 12 px window is trained on jittered scales.
_PYRAMID_FACTOR = 0.5
_PNET_CELL, _PNET_STRIDE = 12, 2
_PNET_SHAPES = 64  # P-Net input shapes kept per thread (a photo size needs ~5, one per pyramid level)
_PAD_TO = 32  # the work image is padded to a multiple of this, so photos of similar sizes share P-Net shapes


@dataclass(frozen=True)
class Face:
    """One detected face, in pixels of the image that was passed to :meth:`PeopleDetector.faces`."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


@dataclass(frozen=True)
class PeopleSignal:
    """How much a photo is about people.

    ``faces``: faces found. ``largest_face``: area of the largest face box / image area. ``face_area``: summed area
    of all face boxes / image area (a head-and-shoulders portrait is about 0.05-0.2, a group photo 0.02-0.05, a
    person small in a landscape well under 0.01). ``person_score``: detector confidence of the best face, 0 if none.
    """

    faces: int = 0
    largest_face: float = 0.0
    face_area: float = 0.0
    person_score: float = 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "faces": self.faces,
            "largest_face": round(self.largest_face, 5),
            "face_area": round(self.face_area, 5),
            "person_score": round(self.person_score, 4),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PeopleSignal:
        return cls(
            faces=int(d.get("faces", 0)),
            largest_face=float(d.get("largest_face", 0.0)),
            face_area=float(d.get("face_area", 0.0)),
            person_score=float(d.get("person_score", 0.0)),
        )


class PeopleDetector:
    """Face detector for album categorisation; see the module docstring.

    ``work_size``: the image is shrunk so its shorter side is at most this many pixels before detection (the
    pipeline already decodes JPEGs DCT-scaled to a shorter side of at least 256 px, so 256 costs no extra decode).
    ``min_face``: the smallest face searched for, as a fraction of the shorter side (at 256 px: 26 px, about 0.75 %
    of a 4:3 photo's area). Smaller faces are rarely what a photo is about, and P-Net's cost grows with the
    square of 1/min_face: 1/12 cost 25 % more and found no more people photos on our sets (tools/eval_faces.py).
    ``threshold``: final O-Net confidence a face needs (real faces score 0.98-1.0; the false detections we saw on
    cut-outs of buttons and cameras scored 0.92-0.99, which is why the caller also looks at face size).
    ``skip_categories``, ``skip_confidence``: the gate of :meth:`wanted` (an empty tuple looks at every photo).
    """

    def __init__(
        self,
        *,
        work_size: int = 256,
        min_face: float = 1 / 10,
        threshold: float = 0.95,
        model_dir: Path | None = None,
        skip_categories: tuple[str, ...] = ("animals", "plants"),
        skip_confidence: float = 0.5,
    ) -> None:
        if work_size < 48:
            raise ValueError("work_size must be at least 48 pixels")
        if not 0 < min_face <= 1:
            raise ValueError("min_face is a fraction of the shorter side, in (0, 1]")
        require_cv2()
        self.work_size = work_size
        self.min_face = min_face
        self.threshold = threshold
        self.skip_categories = frozenset(skip_categories)
        self.skip_confidence = skip_confidence
        self._model_dir = model_dir or FACE_MODEL_DIR
        self._sessions: tuple[Any, Any, Any] | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    # -- public API --------------------------------------------------------------------------------------------

    def work_image(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """``image`` as the detector sees it: RGB uint8 (H, W, 3), shorter side at most ``work_size``.

        :meth:`detect` searches this; the signal is in fractions of the image area, so it is the same for the
        photo at any size.
        """
        if isinstance(image, np.ndarray):
            arr = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
            h, w = arr.shape[:2]
            if min(w, h) <= self.work_size:
                return arr
            image = Image.fromarray(arr)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        w, h = rgb.size
        scale = self.work_size / min(w, h) if min(w, h) else 1.0
        if scale >= 1.0:
            return np.asarray(rgb)
        # reduce() is a cheap box filter for the integer part (no aliasing); bilinear finishes a step < 2x.
        factor = int(1 / scale)
        small = rgb.reduce(factor) if factor >= 2 else rgb
        target = (max(1, round(w * scale)), max(1, round(h * scale)))
        arr = np.asarray(small)
        return arr if small.size == target else cv2.resize(arr, target, interpolation=cv2.INTER_LINEAR)

    def held_image(self, image: Image.Image) -> Image.Image | np.ndarray:
        """What the pipeline keeps of a decoded photo until the classifier and the face gate have spoken: the
        photo itself while it is small — a JPEG decoded DCT-scaled for the classifier is (504, 378) for a 12 MP
        photo, ~570 KB — else its :meth:`work_image`, so a big PNG is never held whole. Shrinking every photo
        at load cost ~0.3 core-ms each, and most photos are never searched (facegate.py)."""
        w, h = image.size
        if min(w, h) <= 2 * self.work_size and w * h <= 6 * self.work_size**2:
            return image
        return self.work_image(image)

    def wanted(self, category: str, score: float) -> bool:
        """Whether to look for faces in a photo the classifier put in ``category`` with ``score``.

        Why a gate: face detection costs about as much as classifying a photo, and on none of our people sets
        (docs/CATEGORIES.md) did a photo with faces come out as ``animals`` or ``plants``; a photo whose
        classifier is sure of those is not searched. The price: a pet or garden portrait the classifier is
        sure of keeps its animal or plant category (its stored signal says "not looked", ``people`` NULL).
        """
        return not (category in self.skip_categories and score >= self.skip_confidence)

    def to_search(self, decided: Sequence[Any], possible: np.ndarray | None) -> list[bool]:
        """Which photos of a batch to search for faces: those the classifier's first decision (each with a
        ``category`` and a ``score``) leaves faces worth looking for in (:meth:`wanted`) and the face gate lets
        through (``possible``: per photo, from facegate.py; None: no gate for this model)."""
        return [
            self.wanted(d.category, d.score) and (possible is None or bool(possible[i]))
            for i, d in enumerate(decided)
        ]

    def detect(self, image: Image.Image | np.ndarray) -> PeopleSignal:
        """Faces in ``image`` (an upright image of any size, PIL or (H, W, 3) uint8) as a :class:`PeopleSignal`."""
        arr = self.work_image(image)
        h, w = arr.shape[:2]
        if w == 0 or h == 0:
            return PeopleSignal()
        faces = self._faces(arr)
        if not faces:
            return PeopleSignal()
        total = float(w * h)
        areas = [_clipped_area(f, w, h) / total for f in faces]
        return PeopleSignal(
            faces=len(faces),
            largest_face=max(areas),
            face_area=min(1.0, sum(areas)),
            person_score=max(f.score for f in faces),
        )

    def faces(self, image: Image.Image | np.ndarray) -> list[Face]:
        """Face boxes in pixels of ``image``, most confident first."""
        width = image.shape[1] if isinstance(image, np.ndarray) else image.size[0]
        arr = self.work_image(image)
        inv = width / arr.shape[1] if arr.shape[1] else 1.0
        return [Face(f.x0 * inv, f.y0 * inv, f.x1 * inv, f.y1 * inv, f.score) for f in self._faces(arr)]

    def _faces(self, arr: np.ndarray) -> list[Face]:
        boxes = self._detect_array(arr)
        found = [Face(*(float(v) for v in b[:5])) for b in boxes if b[4] >= self.threshold]
        return sorted(found, key=lambda f: -f.score)

    # -- MTCNN cascade -----------------------------------------------------------------------------------------

    def _session_triplet(self) -> tuple[Any, Any, Any]:
        if self._sessions is None:
            with self._lock:
                if self._sessions is None:
                    self._sessions = _load_sessions(self._model_dir)
        return self._sessions

    def _pnet(self, shape: tuple[int, ...]) -> Any:
        """P-Net on OpenCV's DNN module, one net per input shape and thread.

        Why: on these tiny convolutions (3 to 32 channels) OpenCV's kernels are faster than ONNX Runtime's
        (2.9 vs 4.0 core-ms for a phone photo's pyramid, same outputs to 1e-5), but only while a net keeps its
        input shape: reshaping one net for every level costs most of the gain (3.7). A library has few photo
        sizes, so the pyramid's shapes repeat; the cache is bounded for one that has many. An OpenCV Net also
        holds its input between calls, hence per thread."""
        nets: dict[tuple[int, ...], Any] | None = getattr(self._local, "pnets", None)
        if nets is None:
            nets = self._local.pnets = {}
        net = nets.pop(shape, None)
        if net is None:
            if len(nets) >= _PNET_SHAPES:
                nets.pop(next(iter(nets)))  # the least recently used shape
            net = _load_pnet(self._model_dir)
        nets[shape] = net  # most recently used last
        return net

    def _detect_array(self, img: np.ndarray) -> np.ndarray:
        """(N, 5) boxes x0, y0, x1, y1, score for an HxWx3 uint8 RGB array."""
        _, rnet, onet = self._session_triplet()
        height, width = img.shape[:2]
        min_px = max(float(_PNET_CELL), self.min_face * min(height, width))
        scales = _pyramid(min(height, width), min_px)
        # Black padding at the right and bottom (no face there; boxes keep their coordinates): a few photo
        # sizes then share the P-Net shapes (see _pnet), whatever their exact pixel counts.
        ph, pw = -height % _PAD_TO, -width % _PAD_TO
        padded = np.pad(img, ((0, ph), (0, pw), (0, 0))) if ph or pw else img
        boxes = self._stage1(self._pnet, padded, scales)
        if len(boxes):
            boxes = self._refine(
                rnet, img, _best(boxes, _MAX_PROPOSALS[0]), 24, _STAGE_THRESHOLDS[1], final=False
            )
        if len(boxes):
            boxes = self._refine(
                onet, img, _best(boxes, _MAX_PROPOSALS[1]), 48, _STAGE_THRESHOLDS[2], final=True
            )
        return boxes

    @staticmethod
    def _stage1(
        pnet_for: Callable[[tuple[int, ...]], Any], img: np.ndarray, scales: list[float]
    ) -> np.ndarray:
        height, width = img.shape[:2]
        found = []
        level = img
        for s in scales:
            ws, hs = int(np.ceil(width * s)), int(np.ceil(height * s))
            # Each level is resampled from the one before (a step of 0.709, where bilinear does not alias), not
            # from the full image: INTER_AREA at arbitrary ratios costs ~10x a bilinear step on uint8.
            mode = cv2.INTER_AREA if level is img else cv2.INTER_LINEAR
            level = cv2.resize(level, (ws, hs), interpolation=mode)
            # The networks were converted from Caffe weights trained on transposed (W, H) images.
            x = _normalise(level.transpose(1, 0, 2))[None]
            pnet = pnet_for(x.shape)
            pnet.setInput(x)
            outs = {o.shape[-1]: o for o in pnet.forward(pnet.getUnconnectedOutLayersNames())}
            reg, prob = outs[4], outs[2]  # box offsets, face/not-face
            score = prob[0, :, :, 1]  # indexed [column, row]
            cols, rows = np.nonzero(score >= _STAGE_THRESHOLDS[0])
            if cols.size == 0:
                continue
            cand = np.empty((cols.size, 9), dtype=np.float32)
            cand[:, 0] = np.fix((_PNET_STRIDE * cols + 1) / s)
            cand[:, 1] = np.fix((_PNET_STRIDE * rows + 1) / s)
            cand[:, 2] = np.fix((_PNET_STRIDE * cols + _PNET_CELL) / s)
            cand[:, 3] = np.fix((_PNET_STRIDE * rows + _PNET_CELL) / s)
            cand[:, 4] = score[cols, rows]
            cand[:, 5:9] = reg[0, cols, rows, :]
            found.append(cand[_nms(cand, 0.5, "union")])
        if not found:
            return np.empty((0, 5), dtype=np.float32)
        boxes = np.concatenate(found)
        boxes = boxes[_nms(boxes, 0.7, "union")]
        bw = boxes[:, 2] - boxes[:, 0]
        bh = boxes[:, 3] - boxes[:, 1]
        out = np.stack(
            [
                boxes[:, 0] + boxes[:, 5] * bw,
                boxes[:, 1] + boxes[:, 6] * bh,
                boxes[:, 2] + boxes[:, 7] * bw,
                boxes[:, 3] + boxes[:, 8] * bh,
                boxes[:, 4],
            ],
            axis=1,
        )
        out = _square(out)
        out[:, :4] = np.fix(out[:, :4])
        return out

    @staticmethod
    def _refine(
        net: Any, img: np.ndarray, boxes: np.ndarray, size: int, threshold: float, final: bool
    ) -> np.ndarray:
        boxes = boxes.copy()
        boxes[:, :4] = np.fix(boxes[:, :4])
        crops = np.stack([_crop(img, b, size) for b in boxes])
        x = _normalise(crops).transpose(0, 2, 1, 3)
        if final:
            reg, _landmarks, prob = net.run(None, {net.get_inputs()[0].name: x})
        else:
            reg, prob = net.run(None, {net.get_inputs()[0].name: x})
        keep = prob[:, 1] > threshold
        boxes, reg = boxes[keep], reg[keep]
        if not len(boxes):
            return boxes
        boxes[:, 4] = prob[keep, 1]
        if not final:
            pick = _nms(boxes, 0.7, "union")
            boxes, reg = boxes[pick], reg[pick]
        bw = boxes[:, 2] - boxes[:, 0] + 1
        bh = boxes[:, 3] - boxes[:, 1] + 1
        boxes[:, 0:4] = boxes[:, 0:4] + reg * np.stack([bw, bh, bw, bh], axis=1)
        if final:
            return boxes[_nms(boxes, 0.7, "min")]
        return _square(boxes)


# -- helpers --------------------------------------------------------------------------------------------------


def _load_pnet(model_dir: Path) -> Any:
    path = model_dir / "pnet.onnx"
    try:
        return cv2.dnn.readNetFromONNX(str(path))
    except cv2.error as exc:
        reason = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else "unreadable"
        raise ModelError(f"{path}: not a loadable ONNX model ({reason})") from None


def _load_sessions(model_dir: Path) -> tuple[Any, Any, Any]:
    from photosift.models.session import open_session

    # One intra-op thread each: the parallelism comes from the decode threads that call the detector.
    # A missing or corrupt packaged file raises ModelError naming it: reinstalling fixes it.
    pnet, rnet, onet = (open_session(model_dir / f"{n}.onnx", threads=1) for n in ("pnet", "rnet", "onet"))
    return pnet, rnet, onet


def _pyramid(short_side: int, min_face_px: float) -> list[float]:
    """Scales at which P-Net's 12 px window covers faces from ``min_face_px`` up to the whole image."""
    scales = []
    s = _PNET_CELL / min_face_px
    while short_side * s >= _PNET_CELL:
        scales.append(s)
        s *= _PYRAMID_FACTOR
    return scales


def _best(boxes: np.ndarray, n: int) -> np.ndarray:
    return boxes if len(boxes) <= n else boxes[np.argsort(-boxes[:, 4])[:n]]


def _normalise(a: np.ndarray) -> np.ndarray:
    return ((a - 127.5) * 0.0078125).astype(np.float32)


def _crop(img: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The box (which may reach outside the image) as a size x size crop, zero outside the image."""
    height, width = img.shape[:2]
    x0, y0, x1, y1 = int(box[0]), int(box[1]), int(box[2]), int(box[3])
    bw, bh = max(1, x1 - x0 + 1), max(1, y1 - y0 + 1)
    patch = np.zeros((bh, bw, 3), dtype=img.dtype)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(width, x1 + 1), min(height, y1 + 1)
    if sx1 > sx0 and sy1 > sy0:
        patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (the next stage expects square crops)."""
    out = boxes.copy()
    bw = boxes[:, 2] - boxes[:, 0]
    bh = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(bw, bh)
    out[:, 0] = boxes[:, 0] + bw * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + bh * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _nms(boxes: np.ndarray, overlap: float, method: str) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression (IoU, or overlap / smaller area for "min")."""
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    x0, y0, x1, y1, s = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(s)[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = iw * ih
        denom = np.minimum(area[i], area[rest]) if method == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= overlap]
    return np.asarray(keep, dtype=np.int64)


def _clipped_area(face: Face, width: int, height: int) -> float:
    x0, y0 = max(0.0, face.x0), max(0.0, face.y0)
    x1, y1 = min(float(width), face.x1), min(float(height), face.y1)
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)
