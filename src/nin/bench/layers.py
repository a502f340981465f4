"""The real limit of a training step: each convolution of the network timed alone at its own shape, and
where the time of one real step goes.

A matrix product's peak overstates what a network can reach (its convolutions are smaller, strided and
differently shaped) or understates it (a CPU's convolution kernels beat its matrix products). So the
limit here is measured on the network's own convolutions: each one, at the batch and precision of
training, forward and backward, alone. Their summed time is a lower bound on a training step that does
nothing but convolve; the fastest layer's rate is the machine's convolution peak.

:func:`profile_step` then times one real training step with ``torch.profiler`` and files every operator
under the layer or job it belongs to (a convolution, ReLU, pooling, dropout, the loss, the optimizer,
memory-format conversions), so the gap between the step and the bound has names.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from nin.bench.timing import timed
from nin.inference.evaluate import autocast


@dataclass(frozen=True)
class ConvLayer:
    """One convolution as the network runs it: its module name and the shape of its input."""

    name: str
    conv: nn.Conv2d
    input_shape: tuple[int, int, int, int]  # N, C, H, W

    @property
    def output_hw(self) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw) = self.conv.kernel_size, self.conv.stride, self.conv.padding
        _, _, h, w = self.input_shape
        return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1

    @property
    def forward_flop(self) -> float:
        """2 × multiply-adds of the forward convolution for the whole batch."""
        n, c, _, _ = self.input_shape
        kh, kw = self.conv.kernel_size
        oh, ow = self.output_hw
        return 2.0 * n * self.conv.out_channels * oh * ow * c * kh * kw / self.conv.groups

    def describe(self) -> str:
        kh, kw = self.conv.kernel_size
        _, c, h, w = self.input_shape
        return f"{kh}×{kw} {c}→{self.conv.out_channels} at {h}×{w}"


def conv_layers(model: nn.Module, input_shape: tuple[int, int, int, int]) -> list[ConvLayer]:
    """The model's convolutions in forward order, with the input shape each sees (one forward pass on zeros)."""
    found: list[ConvLayer] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [m.register_forward_hook(lambda m, i, o: found.append(ConvLayer(names[m], m, tuple(i[0].shape))))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(input_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return found


def _best_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: kernel selection, buffers
    return min(timed(fn, device) for _ in range(repeats))


def time_conv(layer: ConvLayer, precision: str, channels_last: bool, device: torch.device, input_grad: bool = True,
              repeats: int = 5) -> dict[str, Any]:
    """Forward and backward seconds of one convolution alone (the fastest of ``repeats``), and its GFLOP/s.

    Backward computes the weight gradient and, with ``input_grad`` (every layer but the first, whose input is
    the data), the input gradient: 2× or 1× the forward FLOPs, as in a training step."""
    conv = nn.Conv2d(layer.conv.in_channels, layer.conv.out_channels, layer.conv.kernel_size, layer.conv.stride,
                     layer.conv.padding, bias=layer.conv.bias is not None).to(device)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    conv = conv.to(memory_format=memory)
    x = torch.randn(layer.input_shape, device=device).contiguous(memory_format=memory).requires_grad_(input_grad)
    with autocast(device, precision):
        out = conv(x)
    grad = torch.randn_like(out)

    def forward() -> None:
        with torch.no_grad(), autocast(device, precision):
            conv(x)

    wanted = [conv.weight] + ([x] if input_grad else [])

    def backward() -> None:  # the graph of ``out`` is kept, so only the backward convolutions run
        torch.autograd.grad(out, wanted, grad, retain_graph=True)

    forward_s = _best_seconds(forward, device, repeats)
    backward_s = _best_seconds(backward, device, repeats)
    backward_flop = layer.forward_flop * (2 if input_grad else 1)
    return {"layer": layer.name, "shape": layer.describe(), "forward_s": forward_s, "backward_s": backward_s,
            "forward_gflops": layer.forward_flop / forward_s / 1e9,
            "backward_gflops": backward_flop / backward_s / 1e9,
            "flop": layer.forward_flop + backward_flop}


def conv_bound(convs: list[ConvLayer], precision: str, channels_last: bool, device: torch.device,
               repeats: int = 5) -> dict[str, Any]:
    """Every convolution of a network (:func:`conv_layers`) timed alone: the per-layer table, the convolution
    peak (the fastest layer's forward GFLOP/s) and the images/s of a step that did nothing but these convolutions."""
    batch = convs[0].input_shape[0]
    layers = [time_conv(layer, precision, channels_last, device, input_grad=i > 0, repeats=repeats)
              for i, layer in enumerate(convs)]
    seconds = sum(r["forward_s"] + r["backward_s"] for r in layers)
    return {"precision": precision, "batch": batch, "layers": layers,
            "peak_gflops": max(r["forward_gflops"] for r in layers),
            "peak_layer": max(layers, key=lambda r: r["forward_gflops"])["shape"],
            "convolutions_only_images_per_s": batch / seconds,
            "convolutions_only_gflops": sum(r["flop"] for r in layers) / seconds / 1e9}


# Operators of a CPU training step, by job. Convolutions are filed by their shapes instead.
_JOBS = {
    "relu": ("relu", "threshold_backward"),
    "pooling": ("max_pool2d", "avg_pool2d", "max_pool2d_with_indices", "adaptive_avg_pool2d", "mean"),
    "dropout": ("dropout", "bernoulli", "native_dropout", "mul", "div", "random_", "bitwise_and", "ne"),
    "loss": ("cross_entropy", "log_softmax", "nll_loss", "_log_softmax"),
    "optimizer": ("sgd", "_foreach", "add_", "mul_", "lerp", "zero_"),
    "layout and precision conversions": ("copy_", "to", "_to_copy", "contiguous", "clone", "empty_like"),
}


def profile_step(step, model: nn.Module, layers: list[ConvLayer], steps: int = 3) -> dict[str, Any]:
    """Time ``steps`` calls of ``step()`` (one training step each) under ``torch.profiler`` and split the time
    into the convolutions (forward and backward, by layer) and the other jobs. Self CPU time, per step."""
    step()  # warm-up outside the profile
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        tic = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - tic) / steps
    by_shapes = {(layer.input_shape, tuple(layer.conv.weight.shape)): layer.describe() for layer in layers}
    buckets: dict[str, float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        name = event.key.removeprefix("aten::")
        seconds = event.self_cpu_time_total / 1e6 / steps
        if seconds <= 0:
            continue
        if "convolution" in name or "conv2d" in name or "mkldnn" in name:
            shapes = {tuple(s) for s in (event.input_shapes or []) if len(s) == 4}
            # layers with the same input and weight shapes (two 1×1 192→192 at 16×16) share a bucket
            layer = next((d for (x, w), d in by_shapes.items() if x in shapes and w in shapes), "other shapes")
            buckets[f"conv {layer} {'backward' if 'backward' in name else 'forward'}"] += seconds
            continue
        job = next((job for job, ops in _JOBS.items() if any(name.startswith(op) for op in ops)), "other")
        buckets[job] += seconds
    return {"wall_s_per_step": wall, "seconds_per_step": dict(sorted(buckets.items(), key=lambda kv: -kv[1]))}
