"""Structured pruning (``photosift train --prune F``): remove whole channels, then fine-tune.

Removing channels (not single weights) makes the network itself smaller: fewer filters, thinner tensors, an ONNX
file and a run time that shrink with it — unstructured sparsity would need sparse kernels ONNX Runtime does not
have. The channels pruned are the *inner* ones of each block, those one convolution produces and only the next
consumes, so no residual sum or concatenation has to change shape:

* an inverted-residual block (EfficientNet-Lite's MBConv, MobileNetV2's InvertedResidual) among those a
  transfer model fine-tunes (its frozen trunk is left whole: it cannot relearn what it loses): the expanded
  channels — expansion conv outputs, their batch-norm, the depthwise conv, squeeze-excitation if any, the
  projection's inputs;
* a UNet double convolution: the channels between its two convolutions.

In each such group the fraction ``F`` of channels whose producing filters have the smallest L1 norm go (Li et
al., 2017, "Pruning Filters for Efficient ConvNets"), rounded so that the channels kept stay a multiple of 8
(:func:`kept_channels`). The pruned model is then fine-tuned for a few epochs
and the report gives accuracy before, right after pruning, and after fine-tuning, with size and speed.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from photosift.toolchain.train import Run, Targets, validate


@dataclass
class Group:
    """Channels produced by ``producer`` (+ ``bn``), optionally through a depthwise conv (+ its bn) and a
    squeeze-excitation pair, and consumed by ``consumer``'s inputs."""

    producer: nn.Conv2d
    bn: nn.BatchNorm2d
    consumer: nn.Conv2d
    depthwise: tuple[nn.Conv2d, nn.BatchNorm2d] | None = None
    se: tuple[nn.Conv2d, nn.Conv2d] | None = None  # reduce (inputs pruned), expand (outputs pruned)


def groups_of(module: nn.Module) -> list[Group]:
    """Every prunable group in ``module`` (each module counted once, shared or not)."""
    from photosift.toolchain.mobilenet import InvertedResidual

    found = []
    m: Any
    for m in module.modules():
        if type(m).__name__ == "MBConvBlock" and m._block_args.expand_ratio != 1:
            se = (m._se_reduce, m._se_expand) if m.has_se else None
            found.append(Group(m._expand_conv, m._bn0, m._project_conv, (m._depthwise_conv, m._bn1), se))
        elif isinstance(m, InvertedResidual) and len(m.conv) == 4:
            layers: Any = m.conv  # expansion (conv, bn, relu6), depthwise (conv, bn, relu6), projection, bn
            expand, depthwise = layers[0], layers[1]
            found.append(Group(expand[0], expand[1], layers[2], (depthwise[0], depthwise[1])))
        elif _is_double_conv(m):
            found.append(Group(m[0], m[1], m[3]))
    return found


def _is_double_conv(m: nn.Module) -> bool:
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU)
    return bool(
        isinstance(m, nn.Sequential)
        and len(m) == len(kinds)
        and all(isinstance(layer, kind) for layer, kind in zip(m, kinds, strict=True))
        and m[0].groups == 1
    )


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone())


def _keep_outputs(conv: nn.Conv2d, keep: torch.Tensor) -> None:
    conv.weight = _param(conv.weight[keep])
    if conv.bias is not None:
        conv.bias = _param(conv.bias[keep])
    conv.out_channels = len(keep)


def _keep_inputs(conv: nn.Conv2d, keep: torch.Tensor) -> None:
    conv.weight = _param(conv.weight[:, keep])
    conv.in_channels = len(keep)


def _keep_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> None:
    bn.weight = _param(bn.weight[keep])
    bn.bias = _param(bn.bias[keep])
    bn.running_mean = bn.running_mean[keep].clone()  # type: ignore[index]
    bn.running_var = bn.running_var[keep].clone()  # type: ignore[index]
    bn.num_features = len(keep)


# Kept channel counts stay multiples of this: ONNX Runtime's blocked (NCHWc) convolution kernels take only such
# counts, and a model pruned to odd counts ran 4x *slower* than the unpruned one (Lite0, 30%; docs/TRAINING.md).
CHANNEL_ALIGN = 8


def kept_channels(channels: int, fraction: float) -> int:
    """How many of ``channels`` survive pruning ``fraction``: the nearest multiple of CHANNEL_ALIGN (at least
    one block) when ``channels`` is one, else simply the rest; never more than ``channels``, at least 1."""
    if channels % CHANNEL_ALIGN == 0:
        blocks = max(1, round(channels * (1 - fraction) / CHANNEL_ALIGN))
        return min(channels, blocks * CHANNEL_ALIGN)
    return max(1, channels - round(channels * fraction))


def prune_group(group: Group, fraction: float) -> tuple[int, int]:
    """Remove ``fraction`` of the group's channels, smallest L1 norm of the producing filter first; returns
    (channels before, after)."""
    weight = group.producer.weight.detach()
    channels = weight.shape[0]
    kept = kept_channels(channels, fraction)
    drop = channels - kept
    if drop <= 0:
        return channels, channels
    norms = weight.abs().sum(dim=(1, 2, 3))
    keep = torch.sort(torch.argsort(norms, descending=True)[: channels - drop]).values
    _keep_outputs(group.producer, keep)
    _keep_bn(group.bn, keep)
    if group.depthwise is not None:
        conv, bn = group.depthwise
        conv.weight = _param(conv.weight[keep])
        conv.in_channels = conv.out_channels = conv.groups = len(keep)
        _keep_bn(bn, keep)
    if group.se is not None:
        reduce, expand = group.se
        _keep_inputs(reduce, keep)
        _keep_outputs(expand, keep)
    _keep_inputs(group.consumer, keep)
    return channels, len(keep)


def prune_channels(module: nn.Module, fraction: float) -> dict[str, int]:
    """Prune every group of ``module`` in place; returns channel and parameter counts before and after."""
    params_before = sum(p.numel() for p in module.parameters())
    before = after = 0
    groups = groups_of(module)
    for group in groups:
        b, a = prune_group(group, fraction)
        before, after = before + b, after + a
    return {
        "groups": len(groups),
        "channels_before": before,
        "channels_after": after,
        "params_before": params_before,
        "params_after": sum(p.numel() for p in module.parameters()),
    }


def prune_and_fine_tune(run: Run, module: Any) -> tuple[Any, dict[str, Any]]:
    """Prune ``run.options.prune`` of the channels of the trained ``module``, fine-tune, and measure."""
    fraction = run.options.prune
    original = copy.deepcopy(module)
    accuracy_before = validate(run, module).accuracy
    if run.options.arch == "unet-classifier":
        counts = prune_channels(module, fraction)
    else:
        # Transfer: only the top blocks, those fine-tuning trains. The frozen trunk's features cannot recover
        # from losing channels without retraining the whole backbone: pruning it too took album-dev's
        # validation accuracy from 0.84 to 0.16 after fine-tuning (docs/TRAINING.md).
        counts = prune_channels(module.top, fraction)
        counts["params_before"] = sum(p.numel() for p in original.parameters())
        counts["params_after"] = sum(p.numel() for p in module.parameters())
        run.notes.append(
            "--prune: a transfer model's trunk stays whole; the fine-tuned top blocks are pruned"
        )
    if counts["groups"] == 0:
        run.notes.append("--prune: this model has no prunable channel groups; nothing pruned")
    accuracy_pruned = validate(run, module).accuracy
    if run.options.arch == "unet-classifier":
        from photosift.toolchain.unet import fit_unet

        epochs = max(3, run.epochs("unet-classifier") // 3)
        loss = Targets.labelled(run).loss(run)
        fit_unet(run, module, run.train_photos(), None, loss, epochs, "prune fine-tune", lr=3e-4)
    else:
        from photosift.toolchain.transfer import fine_tune_transfer

        fine_tune_transfer(run, module, max(3, run.epochs("transfer")), "prune fine-tune")
    accuracy_after = validate(run, module).accuracy
    report: dict[str, Any] = {
        "fraction": fraction,
        **counts,
        "val_accuracy_before": accuracy_before,
        "val_accuracy_pruned": accuracy_pruned,
        "val_accuracy_after": accuracy_after,
        "accuracy_kept": (
            round(accuracy_after / accuracy_before, 4)
            if accuracy_before and accuracy_after is not None
            else None
        ),
    }
    report.update(_size_and_speed(run, original, module))
    return module, report


def _size_and_speed(run: Run, original: nn.Module, pruned: nn.Module) -> dict[str, Any]:
    """Both models exported to ONNX: file sizes and ONNX Runtime images/s (same threads, interleaved rounds)."""
    from photosift.models.card import ModelCard
    from photosift.toolchain.export import export_module
    from photosift.toolchain.modelfile import compare_speed, session

    card = ModelCard(
        name="pruning", arch="pruning", preprocess=run.views.pre, labels=list(run.photos.classes)
    )
    with tempfile.TemporaryDirectory(prefix="photosift-prune-") as tmp:
        a = export_module(original, Path(tmp) / "before.onnx", card).path
        b = export_module(pruned, Path(tmp) / "after.onnx", card).path
        speed = compare_speed(session(a), session(b), card)
        return {
            "bytes_before": a.stat().st_size,
            "bytes_after": b.stat().st_size,
            "images_per_s_before": round(speed.reference_ips, 1),
            "images_per_s_after": round(speed.model_ips, 1),
            "speedup": round(speed.speedup, 3),
        }
