"""Measure a model on labelled photos: agreement with a reference model, ImageNet accuracy, album accuracy.

The labels CSV has a header and the columns ``file,category[,source][,split]``; ``file`` is relative to the
images folder (default: ``images/`` beside the CSV if it exists, else the CSV's own folder); ``split`` lets one
CSV hold several sets (``--split test`` keeps the rows whose split is ``test``). A ``category`` that is one
of the model's class labels (case-insensitive) counts towards ImageNet accuracy; when a ``categorize`` function
is given (see :data:`Categorize`; the CLI passes what classify uses: the rules, the abstract-art detector and the
face detector), every labelled row counts towards album
accuracy and a confusion table. Without a CSV, every image under ``images`` is used for agreement only.

The reference defaults to the FP32 model the card names when ``model`` is a quantized one (the packaged INT8
Lite0's card names ``efficientnet-lite0``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from photosift.core.errors import PhotosiftError, ToolchainError
from photosift.core.imaging import load_tensor
from photosift.models.card import ModelCard
from photosift.models.registry import registry, resolve_model
from photosift.models.tasks import softmax
from photosift.toolchain.modelfile import (
    Agreement,
    list_images,
    load_checked,
    run_outputs,
    session,
    wilson_interval,
)

# (model file, probabilities (N, classes), embeddings (N, D) or None, the N photo files) -> N album categories
Categorize = Callable[[Path, np.ndarray, np.ndarray | None, list[Path]], list[str]]


@dataclass
class Accuracy:
    labelled: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return round(self.correct / self.labelled, 4) if self.labelled else None

    def to_dict(self) -> dict[str, Any]:
        return {"labelled": self.labelled, "correct": self.correct, "accuracy": self.accuracy}


@dataclass
class EvalReport:
    model: str
    reference: str | None
    images: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    agreement: float | None = None  # top-1 of model == top-1 of reference
    agreement_ci: tuple[float, float] | None = None  # its 95% Wilson interval
    sqnr_db: float | None = None  # reference logit power over the power of the difference
    top5_containment: float | None = None  # reference top-1 within model top-5
    max_abs_diff: float | None = None  # max |Δlogit|
    imagenet: Accuracy | None = None
    reference_imagenet: Accuracy | None = None
    album: Accuracy | None = None
    reference_album: Accuracy | None = None
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # true category -> predicted -> count
    per_category: dict[str, CategoryScore] = field(default_factory=dict)  # from ``confusion``
    disagreements: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("imagenet", "reference_imagenet", "album", "reference_album"):
            value = getattr(self, key)
            d[key] = value.to_dict() if value else None
        d["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        d["per_category"] = {c: v.to_dict() for c, v in self.per_category.items()}
        return d


@dataclass
class CategoryScore:
    """Recall and precision of one album category, each with its 95% Wilson interval (a recall of 7/7 on seven
    photos only says the true rate is probably above 0.65)."""

    labelled: int  # photos labelled with the category
    predicted: int  # photos given the category
    correct: int

    @property
    def recall(self) -> float | None:
        return round(self.correct / self.labelled, 4) if self.labelled else None

    @property
    def precision(self) -> float | None:
        return round(self.correct / self.predicted, 4) if self.predicted else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "labelled": self.labelled,
            "predicted": self.predicted,
            "correct": self.correct,
            "recall": self.recall,
            "recall_ci": wilson_interval(self.correct, self.labelled) if self.labelled else None,
            "precision": self.precision,
            "precision_ci": wilson_interval(self.correct, self.predicted) if self.predicted else None,
        }


def per_category(confusion: dict[str, dict[str, int]]) -> dict[str, CategoryScore]:
    """Recall and precision per category (labelled or predicted) from a confusion table."""
    names = sorted({*confusion, *(p for row in confusion.values() for p in row)})
    return {
        c: CategoryScore(
            labelled=sum(confusion.get(c, {}).values()),
            predicted=sum(row.get(c, 0) for row in confusion.values()),
            correct=confusion.get(c, {}).get(c, 0),
        )
        for c in names
    }


def plot_confusion(report: EvalReport, out: Path) -> None:
    """The album confusion matrix as a PNG: rows labelled, columns predicted, each cell its count, shaded by the
    share of its row; recall and precision on the margins."""
    if not report.confusion:
        raise ToolchainError("no album categories to plot (give --labels with categories)")
    try:
        import matplotlib
    except ImportError:
        raise ToolchainError("--plot needs matplotlib: pip install 'photosift[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(report.per_category)
    counts = np.array([[report.confusion.get(t, {}).get(p, 0) for p in names] for t in names], dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(names), 1.5 + 0.6 * len(names)))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            if counts[i, j]:
                colour = "white" if share[i, j] > 0.6 else "black"
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=colour, fontsize=9)
    scores = report.per_category
    ax.set_yticks(range(len(names)), [f"{n} (recall {_pct(scores[n].recall)})" for n in names], fontsize=8)
    ax.set_xticks(
        range(len(names)), [f"{n}\n{_pct(scores[n].precision)}" for n in names], fontsize=8, rotation=90
    )
    ax.set_xlabel("predicted (precision)")
    ax.set_ylabel("labelled")
    acc = report.album
    title = f"{Path(report.model).name}: album accuracy {_pct(acc.accuracy if acc else None)}"
    ax.set_title(title + (f" ({acc.correct}/{acc.labelled})" if acc else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


@dataclass
class _Row:
    file: str
    category: str | None
    split: str = ""
    source: str = ""


def read_labels(labels_csv: Path, split: str | None = None) -> list[_Row]:
    """Rows of a labels CSV (or, named ``*.tsv``, tab-separated); lines starting with ``#`` are comments."""
    try:
        with labels_csv.open(newline="", encoding="utf-8") as f:
            lines = (line for line in f if not line.startswith("#"))
            reader = csv.DictReader(lines, delimiter="\t" if labels_csv.suffix.lower() == ".tsv" else ",")
            fields = [c.strip().lower() for c in (reader.fieldnames or [])]
            if "file" not in fields:
                raise ToolchainError(
                    f"{labels_csv}: needs a header with a 'file' column (file,category[,source])"
                )
            rows = []
            for raw in reader:
                item = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
                if item.get("file") and (split is None or item.get("split", "") == split):
                    rows.append(
                        _Row(
                            item["file"],
                            item.get("category") or None,
                            item.get("split", ""),
                            item.get("source", ""),
                        )
                    )
    except OSError as exc:
        raise ToolchainError(f"{labels_csv}: cannot read labels ({exc.strerror or exc})") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ToolchainError(f"{labels_csv}: not a CSV file ({exc})") from None
    if not rows:
        raise ToolchainError(
            f"{labels_csv}: no rows" + (f" with split {split!r}" if split is not None else "")
        )
    return rows


def _resolve(name_or_path: Path | str) -> Path:
    try:
        return resolve_model(str(name_or_path)).path
    except PhotosiftError as exc:
        raise ToolchainError(str(exc)) from None


def _default_reference(card: ModelCard, model_path: Path) -> Path | None:
    if card.precision == "fp32":
        return None
    entry = registry().get(card.name)
    if entry is None or not entry.path.is_file() or entry.summary.get("precision") != "fp32":
        return None
    return entry.path if entry.path.resolve() != model_path.resolve() else None


def _imagenet_accuracy(logits: np.ndarray, rows: list[_Row], labels: list[str]) -> Accuracy | None:
    index = {label.lower(): i for i, label in enumerate(labels)}
    hits = [
        (i, index[r.category.lower()])
        for i, r in enumerate(rows)
        if r.category and r.category.lower() in index
    ]
    if not hits:
        return None
    correct = sum(int(logits[i].argmax() == want) for i, want in hits)
    return Accuracy(len(hits), correct)


def _album(predicted: list[str], rows: list[_Row]) -> tuple[Accuracy, dict[str, dict[str, int]]]:
    confusion: dict[str, dict[str, int]] = {}
    labelled = correct = 0
    for row, pred in zip(rows, predicted, strict=True):
        if not row.category:
            continue
        labelled += 1
        correct += int(pred == row.category)
        confusion.setdefault(row.category, {})
        confusion[row.category][pred] = confusion[row.category].get(pred, 0) + 1
    return Accuracy(labelled, correct), confusion


def _categorize(
    categorize: Categorize, model: Path, logits: np.ndarray, embeddings: np.ndarray | None, files: list[Path]
) -> list[str]:
    predicted = list(categorize(model, softmax(logits), embeddings, files))
    if len(predicted) != len(logits):
        raise ToolchainError(f"categorize returned {len(predicted)} categories for {len(logits)} photos")
    return [str(p) for p in predicted]


def evaluate(
    model: Path,
    labels_csv: Path | None = None,
    images: Path | None = None,
    reference: Path | None = None,
    categorize: Categorize | None = None,
    *,
    split: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    """Evaluate ``model`` (a path or a registered name) on labelled or unlabelled photos (``split``: only the
    labelled rows of that split)."""
    say = progress or (lambda _msg: None)
    checked = load_checked(_resolve(model))
    card = checked.card
    if labels_csv is not None:
        labels_csv = Path(labels_csv)
        rows = read_labels(labels_csv, split)
        if images is None:
            images = (
                labels_csv.parent / "images" if (labels_csv.parent / "images").is_dir() else labels_csv.parent
            )
    elif images is not None:
        if not Path(images).is_dir():
            raise ToolchainError(f"{images}: images folder not found")
        root = Path(images).absolute()
        rows = [_Row(p.relative_to(root).as_posix(), None) for p in list_images(root)]
        if not rows:
            raise ToolchainError(f"{images}: no images")
    else:
        raise ToolchainError("evaluate needs a labels CSV or an images folder")
    images = Path(images)
    ref_path = _resolve(reference) if reference is not None else _default_reference(card, checked.path)
    ref_checked = load_checked(ref_path) if ref_path is not None else None
    if ref_checked is not None and ref_checked.card.preprocess != card.preprocess:
        raise ToolchainError(
            f"{ref_path}: preprocesses photos differently from {checked.path}; not comparable"
        )

    tensors, kept, skipped = [], [], []
    for row in rows:
        path = images / row.file
        try:
            tensors.append(load_tensor(path, card.preprocess))
            kept.append(row)
        except PhotosiftError as exc:
            skipped.append((str(path), getattr(exc, "reason", str(exc))))
    if not tensors:
        raise ToolchainError(f"{images}: none of the {len(rows)} listed photos could be read")
    say(f"{len(kept)} photos" + (f", {len(skipped)} skipped" if skipped else ""))
    x = np.stack(tensors)
    logits, embeddings = run_outputs(session(checked.path), card, x, embedding=categorize is not None)
    result = EvalReport(
        model=str(checked.path),
        reference=str(ref_path) if ref_path else None,
        images=len(kept),
        skipped=skipped,
        imagenet=_imagenet_accuracy(logits, kept, card.labels),
    )
    ref_logits = None
    if ref_checked is not None:
        ref_logits, ref_embeddings = run_outputs(
            session(ref_checked.path), ref_checked.card, x, embedding=categorize is not None
        )
        top1 = ref_logits.argmax(1)
        a = Agreement.of(ref_logits, logits)
        result.agreement, result.top5_containment, result.max_abs_diff = (
            a.top1,
            a.top5_containment,
            a.max_abs_diff,
        )
        result.agreement_ci, result.sqnr_db = a.ci95, a.sqnr_db
        result.reference_imagenet = _imagenet_accuracy(ref_logits, kept, ref_checked.card.labels)
        result.disagreements = [
            {
                "file": row.file,
                "label": card.labels[int(logits[i].argmax())],
                "reference": ref_checked.card.labels[int(top1[i])],
            }
            for i, row in enumerate(kept)
            if logits[i].argmax() != top1[i]
        ]
    if categorize is not None and any(r.category for r in kept):
        files = [images / row.file for row in kept]
        result.album, result.confusion = _album(
            _categorize(categorize, checked.path, logits, embeddings, files), kept
        )
        result.per_category = per_category(result.confusion)
        if ref_checked is not None and ref_logits is not None:
            result.reference_album, _ = _album(
                _categorize(categorize, ref_checked.path, ref_logits, ref_embeddings, files), kept
            )
    return result
