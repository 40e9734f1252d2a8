"""The training report (``photosift train --report FILE.json``): the metrics as JSON, the curves and the
confusion matrix as PNG (matplotlib, imported here only).

``FILE.json`` holds everything :meth:`TrainResult.to_dict` gives (classes and counts, skipped photos, the
validation accuracy per class, the confusion matrix, every epoch of every stage, distillation and pruning
numbers); ``FILE-curves.png`` plots the loss and the validation accuracy epoch by epoch across the stages;
``FILE-confusion.png`` the validation confusion matrix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from photosift.core.errors import ToolchainError


def write_report(result: Any, path: Path) -> list[Path]:
    """Write ``path`` (JSON) and the two plots beside it; returns the files written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    except OSError as exc:
        raise ToolchainError(f"{path}: cannot write the report ({exc.strerror or exc})") from None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ToolchainError(
            f"wrote {path}; the plots need matplotlib (pip install 'photosift[export]')"
        ) from None
    stem = path.with_suffix("")
    curves = stem.parent / f"{stem.name}-curves.png"
    confusion = stem.parent / f"{stem.name}-confusion.png"
    _curves(plt, result.history, curves, result.card.name)
    _confusion(plt, result.classes, result.validation.confusion, confusion, result.validation.accuracy)
    return [path, curves, confusion]


def _curves(plt: Any, history: list[Any], out: Path, name: str) -> None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    x = list(range(1, len(history) + 1))
    ax_loss.plot(x, [h.train_loss for h in history], "o-", ms=3, label="train loss")
    val_loss = [(i, h.val_loss) for i, h in zip(x, history, strict=True) if h.val_loss is not None]
    if val_loss:
        ax_loss.plot(*zip(*val_loss, strict=True), "o-", ms=3, label="validation loss")
    for label, key in (("train accuracy", "train_accuracy"), ("validation accuracy", "val_accuracy")):
        points = [
            (i, getattr(h, key)) for i, h in zip(x, history, strict=True) if getattr(h, key) is not None
        ]
        if points:
            ax_acc.plot(*zip(*points, strict=True), "o-", ms=3, label=label)
    starts = [i for i, h in zip(x, history, strict=True) if h.epoch == 1]
    for ax in (ax_loss, ax_acc):
        for i, h in zip(x, history, strict=True):
            if i in starts:
                ax.axvline(i - 0.5, color="grey", lw=0.6, ls=":")
                ax.text(i - 0.4, 0.98, h.stage, transform=ax.get_xaxis_transform(), va="top", fontsize=8)
        ax.set_xlabel("epoch (all stages)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left" if ax is ax_acc else "upper right")
    ax_loss.set_title(f"{name}: loss")
    ax_acc.set_title("accuracy")
    ax_acc.set_ylim(0, 1.02)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _confusion(
    plt: Any, classes: list[str], matrix: list[list[int]], out: Path, accuracy: float | None
) -> None:
    n = len(classes)
    size = max(4.0, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                colour = "white" if count > top / 2 else "black"
                ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=9)
    shown = f"{accuracy:.1%}" if accuracy is not None else "no validation photos"
    ax.set_title(f"validation confusion ({shown})")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
