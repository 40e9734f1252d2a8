"""``photosift train``: a classifier for the user's own classes, exported and run like the built-in models.

One run: read and decode the photos once (:mod:`~photosift.toolchain.trainset`), split off a stratified
validation set, train, optionally distil from a teacher and prune, then export through the path every model
takes (:func:`~photosift.toolchain.export.export_module`: dynamic batch axis, model card, parity check) — the
result is a ``classify`` model whose labels are the class names, so ``classify --model``, ``eval``,
``optimize``, ``quantize`` and the gallery use it unchanged.

Architectures (docs/TRAINING.md has the measurements):

* ``lite0`` (default), ``lite2``, ``mobilenetv2``: transfer learning from the ImageNet weights the export extra
  ships (:mod:`~photosift.toolchain.transfer`): a head on cached embeddings, then ``epochs`` of fine-tuning the
  last blocks on cached features of augmented views;
* ``unet-classifier``: :mod:`~photosift.toolchain.unet`, trained from scratch (or on Lite0's encoder), on fresh
  augmented views every epoch.

Torch is imported when a run starts; a missing export extra is a one-line error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from photosift.core.errors import ToolchainError
from photosift.core.imaging import Preprocess
from photosift.models.card import ModelCard
from photosift.toolchain.archs import require_torch, resize_for
from photosift.toolchain.trainset import PhotoSet, TrainingData, Views, load_photos, split

TRANSFER_ARCHS = ("lite0", "lite2", "mobilenetv2")
ARCHS = (*TRANSFER_ARCHS, "unet-classifier")
DEFAULT_EPOCHS = {"transfer": 0, "unet-classifier": 20}
UNET_SIZE = 64  # scratch UNet input (raise --img-size for finer defects; 64 px keeps 2-core training short)
UNET_MEAN = (127.5, 127.5, 127.5)
UNET_STD = (64.0, 64.0, 64.0)
# Inspection: a wide crop must not cut the defect out of the view, and the light is part of the signal: colour
# jitter took the UNet-classifier from 0.97 to 0.80 on the plates (docs/TRAINING.md).
UNET_CROP = (0.85, 1.0)


@dataclass
class TrainOptions:
    arch: str = "lite0"
    epochs: int | None = None  # None: the architecture's default; 0: transfer head only
    img_size: int | None = (
        None  # None: the architecture's own (Lite0 224, Lite2 260, MobileNetV2 224, UNet 64)
    )
    teacher: str | None = None  # model name or .onnx file to distil from
    temperature: float = 4.0
    prune: float = 0.0  # share of each prunable layer's channels to remove
    val_split: float = 0.2
    seed: int = 0
    name: str | None = None
    skips: int = 2  # unet-classifier: how many of the shallowest skip connections to keep (0..3)
    pretrained_encoder: bool = False  # unet-classifier: Lite0's ImageNet encoder
    views: int = 4  # augmented views cached per photo (transfer fine-tuning, distillation)
    batch_size: int = 32
    # transfer: ImageNet classes x concepts (0/1), groups whose pooled probability the head also sees
    # (services.imagenet_concepts: WordNet's); None: the embedding alone
    concepts: np.ndarray | None = None

    def check(self) -> None:
        if self.arch not in ARCHS:
            raise ToolchainError(f"unknown architecture {self.arch!r} (known: {', '.join(ARCHS)})")
        if not 0 <= self.val_split < 1:
            raise ToolchainError(f"--val-split must be in [0, 1), not {self.val_split}")
        if not 0 <= self.prune < 1:
            raise ToolchainError(f"--prune must be in [0, 1), not {self.prune}")
        if self.epochs is not None and self.epochs < 0:
            raise ToolchainError("--epochs must be 0 or more")
        if self.img_size is not None and (self.img_size < 32 or self.img_size % 32):
            raise ToolchainError(f"--img-size must be a multiple of 32 (at least 32), not {self.img_size}")
        if self.arch == "unet-classifier" and self.epochs == 0:
            raise ToolchainError("the unet-classifier trains from scratch: --epochs must be at least 1")


@dataclass
class Progress:
    stage: str  # "reading photos", "caching features", "head", "fine-tune", "train", "prune", "export"
    done: int
    total: int
    note: str = ""


@dataclass
class Validation:
    photos: int
    accuracy: float | None
    per_class: dict[str, float | None]
    confusion: list[list[int]]  # rows: true class, columns: predicted, in label order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    output: Path
    sha256: str
    card: ModelCard
    classes: list[str]
    counts: dict[str, int]
    train_photos: int
    val_photos: int
    unlabelled_photos: int
    skipped: list[tuple[str, str]]
    duplicates: int
    fingerprint: str
    validation: Validation
    history: list[Any]  # fit.EpochLog
    seconds: float
    interrupted: bool
    parity: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    distillation: dict[str, Any] | None = None
    pruning: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "sha256": self.sha256,
            "name": self.card.name,
            "arch": self.card.arch,
            "classes": self.classes,
            "counts": self.counts,
            "train_photos": self.train_photos,
            "val_photos": self.val_photos,
            "unlabelled_photos": self.unlabelled_photos,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "duplicates": self.duplicates,
            "fingerprint": self.fingerprint,
            "validation": self.validation.to_dict(),
            "history": [h.to_dict() for h in self.history],
            "seconds": round(self.seconds, 1),
            "interrupted": self.interrupted,
            "parity": self.parity,
            "distillation": self.distillation,
            "pruning": self.pruning,
            "notes": self.notes,
        }


ProgressFn = Callable[[Progress], None]


@dataclass
class Run:
    """What the stages of one run share."""

    options: TrainOptions
    photos: PhotoSet
    train_idx: np.ndarray
    val_idx: np.ndarray
    views: Views  # the student's views
    report: ProgressFn
    history: list[Any] = field(default_factory=list)
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)  # ONNX Runtime's, when it runs a part

    @property
    def classes(self) -> int:
        return len(self.photos.classes)

    def train_photos(self) -> list[Any]:
        return [self.photos.photos[i] for i in self.train_idx]

    def val_photos(self) -> list[Any]:
        return [self.photos.photos[i] for i in self.val_idx]

    def val_batch(self) -> tuple[Any, Any]:
        import torch

        val = self.val_photos()
        x = torch.from_numpy(self.views.batch(val, [0] * len(val))) if val else torch.zeros(0)
        y = torch.tensor([p.label for p in val], dtype=torch.int64)
        return x, y

    def epochs(self, default_key: str) -> int:
        return self.options.epochs if self.options.epochs is not None else DEFAULT_EPOCHS[default_key]

    def fitted(self, fitted: Any) -> None:
        self.history += fitted.history
        self.interrupted = self.interrupted or fitted.interrupted

    def epoch_reporter(
        self, stage: str, epochs: int
    ) -> tuple[Callable[[Any], None], Callable[[int, int], None]]:
        """(on_epoch, on_batch) callbacks that report progress as epochs x batches."""
        done_epochs = [0]
        note = [""]

        def on_batch(done: int, total: int) -> None:
            self.report(Progress(stage, done_epochs[0] * total + done, epochs * total, note[0]))

        def on_epoch(log: Any) -> None:
            done_epochs[0] = log.epoch
            acc = (
                f"val {log.val_accuracy:.3f}"
                if log.val_accuracy is not None
                else f"loss {log.train_loss:.3f}"
            )
            note[0] = f"epoch {log.epoch}/{epochs}, {acc}"

        return on_epoch, on_batch


@dataclass
class Targets:
    """What a model learns from: views ``0..views`` of each photo (view 0: the inference view) and, for each
    view, the photo's class or (distillation) the teacher's softened probabilities for that very view — cached
    for views ``0..views`` (``soft``), or computed when a batch asks for them (``teacher``: any view)."""

    photos: list[Any]  # trainset.Photo; label -1: unlabelled (distillation only)
    views: int
    soft: np.ndarray | None = None  # (photos, views + 1, classes)
    temperature: float = 1.0
    # (photos, views) -> the teacher's softened probabilities for those views, (N, classes)
    teacher: Callable[[list[Any], list[int]], np.ndarray] | None = None

    @property
    def distilled(self) -> bool:
        return self.soft is not None or self.teacher is not None

    @classmethod
    def labelled(cls, run: Run) -> Targets:
        return cls(run.train_photos(), run.options.views)

    def pool(self) -> list[tuple[int, int]]:
        """Every (photo index, view) pair."""
        return [(i, v) for i in range(len(self.photos)) for v in range(self.views + 1)]

    def rows(self, idx: Any, views: Any) -> Any:
        """Targets for (photo idx[k], view views[k]): class indices (int64), or for distillation rows of the
        teacher's probabilities followed by the class (-1: unlabelled) as float32."""
        import torch

        labels = np.array([self.photos[i].label for i in idx], dtype=np.int64)
        if self.soft is not None:
            soft = self.soft[np.asarray(idx, dtype=np.int64), np.asarray(views, dtype=np.int64)]
        elif self.teacher is not None:
            soft = self.teacher([self.photos[i] for i in idx], [int(v) for v in views])
        else:
            return torch.from_numpy(labels)
        return torch.from_numpy(np.concatenate([soft, labels[:, None]], axis=1).astype(np.float32))

    def loss(self, run: Run) -> Any:
        """Class-balanced cross-entropy; for distillation, the distillation loss (distill.kd_loss)."""
        from photosift.toolchain.fit import balanced_loss
        from photosift.toolchain.trainset import class_weights

        labels = np.array([p.label for p in self.photos if p.label >= 0], dtype=np.int64)
        weights = class_weights(labels, run.classes)
        if not self.distilled:
            return balanced_loss(weights)
        from photosift.toolchain.distill import kd_loss

        return kd_loss(weights, self.temperature)


def preprocess_for(options: TrainOptions) -> tuple[Preprocess, str, str]:
    """The student's preprocessing, with the source and licence of its starting weights."""
    if options.arch in TRANSFER_ARCHS:
        from photosift.toolchain.transfer import backbone_defaults

        pre, source, licence = backbone_defaults(options.arch)
    elif options.pretrained_encoder:
        from photosift.toolchain.transfer import backbone_defaults

        pre, source, licence = backbone_defaults("lite0")
        pre = Preprocess(UNET_SIZE, UNET_SIZE, pre.mean, pre.std)
    else:
        pre, source, licence = Preprocess(UNET_SIZE, UNET_SIZE, UNET_MEAN, UNET_STD), "", ""
    if options.img_size is not None:
        resize = options.img_size if options.arch == "unet-classifier" else resize_for(options.img_size)
        pre = Preprocess(options.img_size, resize, pre.mean, pre.std)
    return pre, source, licence


def train(
    data: TrainingData, out: Path, options: TrainOptions, on_progress: ProgressFn | None = None
) -> TrainResult:
    """Train, distil, prune and export a classifier for ``data``'s classes to ``out``."""
    options.check()
    # PyTorch's OpenMP threads spin while they wait; on a machine other work shares that made training up to
    # 3x slower (docs/TRAINING.md). Passive waiting costs nothing measurable on an idle one. Set before torch
    # loads OpenMP, i.e. before its first import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    require_torch()
    import torch

    from photosift.toolchain import fit as fitting

    started = time.perf_counter()
    report = on_progress or (lambda _p: None)
    fitting.seed_everything(options.seed)
    pre, source, licence = preprocess_for(options)
    teacher = None
    pres = [pre]
    if options.teacher is not None:
        from photosift.toolchain.distill import Teacher

        teacher = Teacher.load(options.teacher, data.classes)
        pres.append(teacher.card.preprocess)
    elif data.unlabelled:
        data.notes.append(
            f"{len(data.unlabelled)} unlabelled photos ignored (they are used only with --teacher)"
        )
        data.unlabelled = []
    photos = load_photos(data, pres, on_photo=lambda n, t: report(Progress("reading photos", n, t)))
    train_idx, val_idx = split(photos.labels(), options.val_split, options.seed)
    views = (
        Views(pre, 0, options.seed, UNET_CROP, jitter=0.0)
        if options.arch == "unet-classifier"
        else Views(pre, 0, options.seed)
    )
    run = Run(options, photos, train_idx, val_idx, views, report, notes=list(photos.notes))
    if val_idx.size == 0:
        run.notes.append("no validation split: the last epoch is kept and no accuracy is measured")

    distillation = None
    if teacher is not None:
        from photosift.toolchain.distill import distil

        module, distillation = distil(run, teacher, options)
    elif options.arch in TRANSFER_ARCHS:
        from photosift.toolchain.transfer import train_transfer

        module = train_transfer(run, None)
    else:
        from photosift.toolchain.unet import train_unet

        module = train_unet(run, None)

    pruning = None
    if options.prune > 0:
        from photosift.toolchain.prune import prune_and_fine_tune

        module, pruning = prune_and_fine_tune(run, module)

    validation = validate(run, module)
    name = options.name or Path(out).stem
    card = ModelCard(
        name=name,
        arch=arch_label(options),
        preprocess=pre,
        embedding_name="embedding",
        labels=list(photos.classes),
        source=f"photosift train on {photos.origin}" + (f"; starting from {source}" if source else ""),
        license=licence and f"weights derived from {licence} ones",
        training=training_record(run, validation, time.perf_counter() - started),
    )
    report(Progress("export", 0, 1))
    from photosift.toolchain.export import export_module

    parity_photos = run.val_photos()[:16] or run.train_photos()[:16]
    with torch.no_grad():
        parity = run.views.batch(parity_photos, [0] * len(parity_photos))
    result = export_module(module, Path(out), card, parity)
    report(Progress("export", 1, 1))
    if distillation is not None:
        distillation.update(distillation_sizes(result.path, teacher, card))
    return TrainResult(
        output=result.path,
        sha256=result.sha256,
        card=card,
        classes=list(photos.classes),
        counts=photos.counts(),
        train_photos=len(train_idx),
        val_photos=len(val_idx),
        unlabelled_photos=len(photos.unlabelled),
        skipped=photos.skipped,
        duplicates=photos.duplicates,
        fingerprint=photos.fingerprint(),
        validation=validation,
        history=run.history,
        seconds=time.perf_counter() - started,
        interrupted=run.interrupted,
        parity=result.parity.to_dict(),
        notes=run.notes,
        distillation=distillation,
        pruning=pruning,
    )


def arch_label(options: TrainOptions) -> str:
    if options.arch == "unet-classifier":
        encoder = "lite0 encoder" if options.pretrained_encoder else "scratch"
        label = f"unet-classifier ({encoder}, {options.skips} skips)"
    else:
        label = f"{options.arch} transfer"
    return label + (f", pruned {options.prune:.0%}" if options.prune else "")


def validate(run: Run, module: Any) -> Validation:
    """Accuracy, per-class accuracy and the confusion matrix of ``module`` on the validation photos."""
    from photosift.toolchain.fit import predict

    x, y = run.val_batch()
    confusion = np.zeros((run.classes, run.classes), dtype=np.int64)
    if len(y):
        predicted = predict(module, x).argmax(1).numpy()
        np.add.at(confusion, (y.numpy(), predicted), 1)
    rows = confusion.sum(1)
    per_class = {
        c: (round(float(confusion[i, i] / rows[i]), 4) if rows[i] else None)
        for i, c in enumerate(run.photos.classes)
    }
    accuracy = round(float(np.trace(confusion) / rows.sum()), 4) if rows.sum() else None
    return Validation(int(rows.sum()), accuracy, per_class, confusion.tolist())


def training_record(run: Run, validation: Validation, seconds: float) -> dict[str, Any]:
    """What the model card keeps about training: the data's fingerprint, the options, the validation metrics."""
    o = run.options
    return {
        "data": run.photos.origin,
        "fingerprint": run.photos.fingerprint(),
        "counts": run.photos.counts(),
        "train_photos": int(run.train_idx.size),
        "val_photos": int(run.val_idx.size),
        "val_accuracy": validation.accuracy,
        "val_per_class": validation.per_class,
        "options": {
            "arch": o.arch,
            "epochs": o.epochs,
            "img_size": run.views.pre.input_size,
            "teacher": o.teacher,
            "prune": o.prune,
            "val_split": o.val_split,
            "seed": o.seed,
            "skips": o.skips if o.arch == "unet-classifier" else None,
            "pretrained_encoder": o.pretrained_encoder if o.arch == "unet-classifier" else None,
            # how many WordNet concept groups the transfer head pooled ImageNet's probabilities into (0: none)
            "concepts": int(o.concepts.shape[1])
            if o.concepts is not None and o.arch in TRANSFER_ARCHS
            else 0,
        },
        "seconds": round(seconds, 1),
        "interrupted": run.interrupted,
    }


def distillation_sizes(student: Path, teacher: Any, card: ModelCard) -> dict[str, Any]:
    """Size and speed of the exported student next to the teacher's (ONNX Runtime, same threads)."""
    from photosift.toolchain.modelfile import session, throughput

    return {
        "student_bytes": student.stat().st_size,
        "teacher_bytes": teacher.path.stat().st_size,
        "student_images_per_s": round(throughput(session(student), card), 1),
        "teacher_images_per_s": round(throughput(session(teacher.path), teacher.card), 1),
    }
