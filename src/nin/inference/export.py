"""Export a checkpoint as one self-contained model: uint8-range images in, logits out.

What is traced is :class:`nin.inference.trained.Preprocessed`: the very preprocessing modules that
training used (``nin.data.preprocess``), in front of the network, so a deployment cannot forget them
or apply a different ZCA. The input is a float32 (N, C, H, W) tensor of pixel values in 0..255 at the
checkpoint's input size; the caller only decodes and resizes images (``nin.inference.predict``
documents a rule for that).
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch

from nin.errors import NinError
from nin.inference.pretrained import open_trained
from nin.inference.trained import Preprocessed, TrainedModel
from nin.inference.weights import save_weights, weights_from_checkpoint
from nin.utils.atomic import atomic_write

FORMATS = ("onnx", "torchscript", "safetensors")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}
ONNX_OPSET = 17


class ExportError(NinError, ValueError):
    """A checkpoint or format that cannot be exported; the message says what and what to do."""


def _example(model: Preprocessed, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, 256, (batch, *model.input_size)).float()


def export_onnx(trained: TrainedModel, path: str | os.PathLike) -> None:
    """ONNX (opset 17), input ``images`` (batch, C, H, W) float32 0..255, output ``logits``; batch is dynamic."""
    model = trained.preprocessed().cpu()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript-based exporter: it needs no onnxscript; torch marks it as legacy
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning, torch.jit.TracerWarning))
        torch.onnx.export(model, (_example(model),), buffer, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def export_torchscript(trained: TrainedModel, path: str | os.PathLike) -> None:
    """A traced TorchScript module (``torch.jit.load``); same input and output as the ONNX export."""
    model = trained.preprocessed().cpu()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, torch.jit.TracerWarning))
        traced = torch.jit.trace(model, _example(model))
        atomic_write(path, lambda f: torch.jit.save(traced, f))


def export_checkpoint(source: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None,
                      refit_preprocess: bool = False, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Export a checkpoint, a weights file or shipped weights (``nin_mnist``) in ``fmt`` to ``out``.

    The default ``out`` is the source's path (or, for shipped weights, its name in the current folder) with
    ``.onnx``, ``.torchscript.pt`` or ``.safetensors``. Returns the files written (safetensors: the weights and
    their JSON sidecar). ``refit_preprocess`` and ``data_dir``: see
    :func:`nin.inference.weights.weights_from_checkpoint`; ``data_dir`` also serves weights whose preprocessing
    is fitted on first use.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if refit_preprocess and (fmt != "safetensors" or Path(source).suffix != ".pt"):
        raise ExportError("refitting the preprocessing on first use is for safetensors weights made from a "
                          f"checkpoint (RUN/last.pt), not {fmt} from {source}",
                          cli="--refit-preprocess is for --format safetensors from a checkpoint (RUN/last.pt), "
                              f"not --format {fmt} from {source}")
    is_file = Path(source).suffix in (".pt", ".json", ".safetensors") or Path(source).exists()
    base = Path(source) if is_file else Path(f"{source}.exported")  # .exported: room for the dots of MODEL.TAG
    path = Path(out) if out is not None else base.with_suffix(SUFFIXES[fmt])
    if is_file and path.resolve() == Path(source).resolve():
        raise ExportError(f"--out {path} is the source itself; choose another file name")
    if fmt == "safetensors" and Path(source).suffix == ".pt":
        weights = weights_from_checkpoint(source, path, refit_preprocess, data_dir)
        return [path, weights.sidecar]
    trained = open_trained(source, data_dir=data_dir)
    if fmt == "onnx":
        export_onnx(trained, path)
    elif fmt == "torchscript":
        export_torchscript(trained, path)
    else:
        weights = save_weights(trained, path)
        return [path, weights.sidecar]
    return [path]
