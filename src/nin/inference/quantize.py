"""Static int8 inference for a trained NIN on x86 CPUs.

On CPUs with VNNI (AVX-512 or AVX-VNNI) int8 dot products run at about twice the bf16 rate, and a NIN
is nearly all convolutions, so an int8 copy answers about twice as fast as the bf16 path. The copy is
made with PyTorch's FX graph quantization: BatchNorm is folded into the convolutions, each ReLU is
fused into the convolution before it, and activation ranges are calibrated on real preprocessed images.
Use it for inference only, and check its error on a held-out split (``nin eval --precision int8``)
before trusting it.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from nin.errors import NinError


class QuantizationError(NinError, RuntimeError):
    """The int8 path cannot be built here; the message says why and what to use instead."""


def quantize_int8(model: nn.Module, calibration: torch.Tensor, batch_size: int = 64) -> nn.Module:
    """An int8 copy of ``model`` (left untouched) for CPU inference, calibrated on ``calibration``:
    preprocessed images shaped like the model's input, a few thousand are enough. Small calibration
    batches keep the observers' peak memory low."""
    if calibration.dim() != 4 or len(calibration) == 0:
        raise QuantizationError(f"calibration needs a batch of preprocessed images (N, C, H, W), got shape "
                                f"{tuple(calibration.shape)}")
    try:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    except ImportError as err:
        raise QuantizationError(f"this PyTorch ({torch.__version__}) has no FX quantization ({err}); use "
                                "--precision bf16 for fast CPU inference") from None
    if "x86" not in torch.backends.quantized.supported_engines:
        raise QuantizationError(f"this PyTorch has no x86 int8 kernels (engines: "
                                f"{', '.join(torch.backends.quantized.supported_engines)}); use --precision bf16")
    torch.backends.quantized.engine = "x86"
    float_model = copy.deepcopy(model).cpu().eval()
    calibration = calibration.cpu().float()
    with warnings.catch_warnings():  # the FX API announces its successor on every call
        warnings.simplefilter("ignore")
        prepared = prepare_fx(float_model, get_default_qconfig_mapping("x86"), (calibration[:1],))
        with torch.no_grad():
            for chunk in calibration.split(batch_size):
                prepared(chunk)
        return convert_fx(prepared)
