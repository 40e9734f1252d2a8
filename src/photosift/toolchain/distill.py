"""Knowledge distillation (``photosift train --teacher MODEL``): a small student learns from a big teacher.

The teacher is any photosift classifier whose labels include the classes of the training data (typically one
``photosift train`` made with a bigger backbone). It runs in ONNX Runtime on the same views the student trains
on — the same crops and flips, each rendered at the teacher's own input size — over the labelled photos and the
*unlabelled* ones (``--unlabelled DIR``, or CSV rows without a category): a teacher can label photos nobody did.
Its logits, restricted to the data's classes and divided by a temperature T (4 by default), give soft targets;
the student minimises (Hinton et al., 2015)

    T² · KL(teacher_T ‖ student_T)  +  cross-entropy(student, class)   (the second term on labelled photos only)

where the KL term carries what the teacher knows about how classes resemble each other (the T² keeps its
gradients comparable as T changes). The report puts student and teacher side by side: validation accuracy,
file size, images per second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from photosift.core.errors import PhotosiftError, ToolchainError
from photosift.models.card import ModelCard
from photosift.models.registry import resolve_model
from photosift.models.tasks import softmax
from photosift.toolchain.modelfile import run_logits, session
from photosift.toolchain.train import Progress, Run, Targets, TrainOptions
from photosift.toolchain.trainset import Views


@dataclass
class Teacher:
    path: Path
    card: ModelCard
    columns: np.ndarray  # the teacher's logit index of each class of the data, in class order

    @classmethod
    def load(cls, name_or_path: str, classes: list[str]) -> Teacher:
        try:
            resolved = resolve_model(name_or_path)
            card = resolved.card
        except PhotosiftError as exc:
            raise ToolchainError(f"teacher: {exc}") from None
        if card.task != "classify":
            raise ToolchainError(f"teacher {resolved.path}: an {card.task} model has no classes to teach")
        index = {label.casefold(): i for i, label in enumerate(card.labels)}
        missing = [c for c in classes if c.casefold() not in index]
        if missing:
            raise ToolchainError(
                f"teacher {resolved.path}: its labels lack {', '.join(map(repr, missing))}; a teacher must "
                "know every class of the training data"
            )
        return cls(resolved.path, card, np.array([index[c.casefold()] for c in classes], dtype=np.int64))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The teacher's logits for the data's classes, for a batch preprocessed as its card says."""
        return run_logits(self._session(), self.card, x)[:, self.columns]

    def _session(self) -> Any:
        if not hasattr(self, "_sess"):
            self._sess = session(self.path)
        return self._sess


def kd_loss(weights: np.ndarray, temperature: float) -> Any:
    """The distillation loss of the module docstring; targets are rows [teacher probabilities…, class or -1]."""
    w = torch.from_numpy(weights)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        soft, label = target[:, :-1], target[:, -1].long()
        log_student = nn.functional.log_softmax(logits / temperature, dim=1)
        kd = nn.functional.kl_div(log_student, soft, reduction="batchmean") * temperature**2
        labelled = label >= 0
        if not bool(labelled.any()):
            return kd
        ce = nn.functional.cross_entropy(logits[labelled], label[labelled], weight=w)
        return kd + ce

    return loss


def distil(run: Run, teacher: Teacher, options: TrainOptions) -> tuple[Any, dict[str, Any]]:
    """Train the student (``options.arch``) on the teacher's softened outputs; returns it and the report."""
    photos = run.train_photos() + run.photos.unlabelled
    teacher_views = Views(teacher.card.preprocess, 1, run.views.seed, run.views.crop, run.views.jitter)

    def soft_targets(batch: list[Any], views: list[int]) -> np.ndarray:
        probs: np.ndarray = softmax(teacher.logits(teacher_views.batch(batch, views)) / options.temperature)
        return probs.astype(np.float32)

    if options.arch == "unet-classifier":
        # The UNet student sees a fresh view of every photo each epoch and the teacher labels that very view.
        # Soft targets of 5 cached views instead left the student at 0.62-0.70 on the plates whatever the
        # temperature, no better than without a teacher (docs/TRAINING.md).
        from photosift.toolchain.unet import train_unet

        targets = Targets(photos, 0, None, options.temperature, teacher=soft_targets)
        student: Any = train_unet(run, targets)
    else:
        # A transfer student trains on cached trunk features of fixed views: the teacher labels those once.
        from photosift.toolchain.transfer import train_transfer

        views = options.views
        soft = np.zeros((len(photos), views + 1, run.classes), dtype=np.float32)
        pairs = [(i, v) for i in range(len(photos)) for v in range(views + 1)]
        step = 16
        for start in range(0, len(pairs), step):
            chunk = pairs[start : start + step]
            for (i, v), p in zip(
                chunk, soft_targets([photos[i] for i, _ in chunk], [v for _, v in chunk]), strict=True
            ):
                soft[i, v] = p
            run.report(Progress("teacher", min(start + step, len(pairs)), len(pairs), "soft targets"))
        student = train_transfer(run, Targets(photos, views, soft, options.temperature))
    val = run.val_photos()
    teacher_accuracy = None
    if val:
        x = teacher_views.batch(val, [0] * len(val))
        truth = np.array([p.label for p in val])
        teacher_accuracy = round(float((teacher.logits(x).argmax(1) == truth).mean()), 4)
    report = {
        "teacher": str(teacher.path),
        "teacher_arch": teacher.card.arch,
        "temperature": options.temperature,
        "labelled_photos": len(run.train_idx),
        "unlabelled_photos": len(run.photos.unlabelled),
        "teacher_val_accuracy": teacher_accuracy,
        "note": "the teacher may have been trained on these validation photos; its score is then optimistic",
    }
    return student, report
