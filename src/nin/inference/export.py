"""Export a checkpoint as one self-contained model: uint8-range images in, logits out.

The checkpoint's fitted preprocessing is rebuilt from torch operations in front of the network
(:class:`PreprocessedModel`), so a deployment cannot forget it or apply a different ZCA. Every step
nin has is a fixed array operation and is exported: ``unit`` (x/255), ``gcn`` (per-image centring
and scaling, in float64 as in training), ``zca`` (subtract a stored mean, multiply by the stored
matrix), ``lcn`` (fixed Gaussian convolutions) and ``standardize`` (per-channel affine). The input
is a float32 (N, C, H, W) tensor of pixel values in 0..255 at the checkpoint's input size; the
caller only decodes and resizes images (``nin.inference.predict`` documents a rule for that).
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nin.errors import NinError
from nin.utils.atomic import atomic_write
from nin.data import GCN, LCN, ZCA, Pipeline, Standardize, ToUnitRange, Transform
from nin.data.preprocess import gaussian_kernel
from nin.inference.trained import TrainedModel

FORMATS = ("onnx", "torchscript", "safetensors")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}
ONNX_OPSET = 17


class ExportError(NinError, ValueError):
    """A checkpoint or format that cannot be exported; the message says what and what to do."""


class UnitRange(nn.Module):
    """``unit``: pixels / 255."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0


class GlobalContrast(nn.Module):
    """``gcn``: per image, subtract its mean, divide by its L2 norm (1 below ``min_norm``), times ``scale``."""

    def __init__(self, step: GCN) -> None:
        super().__init__()
        self.scale, self.min_norm = step.scale, step.min_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1).double()
        flat = flat - flat.mean(dim=1, keepdim=True)
        norm = (flat * flat).sum(dim=1, keepdim=True).sqrt()
        norm = torch.where(norm < self.min_norm, torch.ones_like(norm), norm)
        return (flat * (self.scale / norm)).float().reshape(x.shape)


class Whitening(nn.Module):
    """``zca``: (x − mean) · P with the fitted mean and whitening matrix."""

    def __init__(self, step: ZCA) -> None:
        super().__init__()
        self.register_buffer("mean", step.mean.float().clone())
        self.register_buffer("whitening", step.whitening.float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.flatten(1).float() - self.mean) @ self.whitening).reshape(x.shape)


class LocalContrast(nn.Module):
    """``lcn``: LeCun local contrast normalisation per channel with the fixed Gaussian kernel."""

    def __init__(self, step: LCN, channels: int) -> None:
        super().__init__()
        kernel = gaussian_kernel(step.kernel_size).float()
        self.register_buffer("weight", kernel.expand(channels, 1, -1, -1).clone())
        self.padding, self.threshold, self.channels = step.kernel_size // 2, step.threshold, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        centered = x - F.conv2d(x, self.weight, padding=self.padding, groups=self.channels)
        local = F.conv2d(x * x, self.weight, padding=self.padding, groups=self.channels).clamp_min(0.0).sqrt()
        divisor = torch.maximum(local, local.mean(dim=(2, 3), keepdim=True)).clamp_min(self.threshold)
        return centered / divisor


class ChannelStandardize(nn.Module):
    """``standardize``: (x − mean_c) / std_c with the fitted per-channel statistics."""

    def __init__(self, step: Standardize) -> None:
        super().__init__()
        self.register_buffer("mean", step.mean.float().reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", step.std.float().reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def _step_module(step: Transform, channels: int) -> nn.Module:
    if isinstance(step, ToUnitRange):
        return UnitRange()
    if isinstance(step, GCN):
        return GlobalContrast(step)
    if isinstance(step, ZCA):
        return Whitening(step)
    if isinstance(step, LCN):
        return LocalContrast(step, channels)
    if isinstance(step, Standardize):
        return ChannelStandardize(step)
    raise ExportError(f"preprocessing step {step!r} has no exportable form; export cannot include it. Apply it "
                      "yourself before the exported model, or add its torch form to nin.inference.export")


def preprocessing_module(pipeline: Pipeline, channels: int) -> nn.Sequential:
    """The fitted pipeline as torch modules: float (N, C, H, W) pixel values in, float32 out."""
    for step in pipeline.steps:
        if not step.fitted:
            raise ExportError(f"preprocessing step {step!r} is not fitted; export a checkpoint written by `nin train`")
    return nn.Sequential(*(_step_module(step, channels) for step in pipeline.steps))


class PreprocessedModel(nn.Module):
    """The checkpoint's preprocessing followed by its network: 0..255 images in, logits out."""

    def __init__(self, trained: TrainedModel) -> None:
        super().__init__()
        self.preprocess = preprocessing_module(trained.preprocess, trained.input_size[0])
        self.model = trained.model
        self.input_size = tuple(trained.input_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(images))


def _example(model: PreprocessedModel, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, 256, (batch, *model.input_size)).float()


def export_onnx(trained: TrainedModel, path: str | os.PathLike) -> None:
    """ONNX (opset 17), input ``images`` (batch, C, H, W) float32 0..255, output ``logits``; batch is dynamic."""
    model = PreprocessedModel(trained).cpu().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript-based exporter: it needs no onnxscript; torch marks it as legacy
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
        torch.onnx.export(model, (_example(model),), buffer, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def export_torchscript(trained: TrainedModel, path: str | os.PathLike) -> None:
    """A traced TorchScript module (``torch.jit.load``); same input and output as the ONNX export."""
    model = PreprocessedModel(trained).cpu().eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        traced = torch.jit.trace(model, _example(model))
        atomic_write(path, lambda f: torch.jit.save(traced, f))


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None) -> list[Path]:
    """Export ``checkpoint`` in ``fmt`` (onnx, torchscript, safetensors) to ``out``.

    The default ``out`` is the checkpoint's path with ``.onnx``, ``.torchscript.pt`` or ``.safetensors``.

    Returns the files written (safetensors: the weights and their JSON sidecar).
    """
    from nin.inference.trained import load_trained
    from nin.inference.weights import weights_from_checkpoint

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    path = Path(out) if out is not None else Path(checkpoint).with_suffix(SUFFIXES[fmt])
    if path.resolve() == Path(checkpoint).resolve():
        raise ExportError(f"--out {path} is the checkpoint itself; choose another file name")
    if fmt == "safetensors":
        weights = weights_from_checkpoint(checkpoint, path)
        return [path, weights.sidecar]
    trained = load_trained(checkpoint)
    if fmt == "onnx":
        export_onnx(trained, path)
    else:
        export_torchscript(trained, path)
    return [path]
