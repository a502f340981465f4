"""The paper's preprocessing (pylearn2's GCN, ZCA and LeCun LCN) as fitted ``nn.Module``s, plus the
mean-image subtraction of cuda-convnet, per-channel standardization for other recipes, and the fixed
channel order and mean of the authors' Caffe ImageNet model.

A step maps a batch (N, C, H, W) of uint8 or float pixels to float32 of the same shape. Stateful
steps (ZCA, Standardize, MeanImage) are fitted on the training split only and keep what they learn
in buffers. A :class:`Pipeline` chains the steps and fits them in order. The same modules transform
the training data, sit in front of the network for evaluation and prediction
(``nin.inference.Preprocessed``) and are traced into ONNX and TorchScript exports: one
implementation, so a deployment cannot apply a different ZCA than training did (the classic source
of "downloaded weights evaluate worse" reports).

``Pipeline.to_spec()`` holds only str/int/float/bool/list/dict/Tensor, so it can live in a checkpoint
loaded with ``torch.load(weights_only=True)``; its format is unchanged since the first checkpoints.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

_FORMAT = "nin.preprocess.Pipeline/1"
_FIT_CHUNK = 4096  # rows per float64 chunk when fitting (4096 × 3072 doubles = 100 MB)


def _check_batch(x: torch.Tensor, who: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{who} expects a batch of shape (N, C, H, W), got shape {tuple(x.shape)}")


class Transform(nn.Module):
    """One preprocessing step. Subclasses list their constructor arguments in ``config`` and their
    fitted tensors in ``fitted_buffers``; a step with such buffers must be fitted before it is applied."""

    name: ClassVar[str]
    config: ClassVar[tuple[str, ...]] = ()
    fitted_buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        for b in self.fitted_buffers:
            self.register_buffer(b, None)

    @property
    def fitted(self) -> bool:
        return all(getattr(self, b) is not None for b in self.fitted_buffers)

    def fit(self, x: torch.Tensor) -> Transform:
        """Fit on training images (N, C, H, W); stateless steps have nothing to learn."""
        return self

    def to_spec(self) -> dict[str, Any]:
        """Name, constructor arguments and fitted tensors (on the CPU): plain types only."""
        spec: dict[str, Any] = {"name": self.name}
        spec.update({k: getattr(self, k) for k in self.config})
        spec.update({b: getattr(self, b).cpu() for b in self.fitted_buffers if getattr(self, b) is not None})
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Transform:
        """Rebuild a step (fitted if the spec holds its tensors) from :meth:`to_spec`."""
        step = cls(**{k: spec[k] for k in cls.config if k in spec})
        for b in cls.fitted_buffers:
            if b in spec:
                setattr(step, b, spec[b])
        return step

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.config)
        fitted = "" if not self.fitted_buffers else ("fitted" if self.fitted else "not fitted")
        return ", ".join(part for part in (args, fitted) if part)

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() on the training images first "
                               "(or load a fitted pipeline with Pipeline.from_spec)")


class ToUnitRange(Transform):
    """Pixels / 255 (MNIST's only preprocessing in the paper)."""

    name = "unit"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "ToUnitRange")
        return x.to(torch.float32) / 255.0


class MeanImage(Transform):
    """Subtract the training set's mean image (per channel and pixel) from raw 0..255 pixels.

    cuda-convnet's only preprocessing for CIFAR-10, and the input scale (std about 64) for which its
    configs' tiny init stds (1e-4 on conv1) were chosen: at GCN + ZCA scale (std about 0.5) the
    dropout paper's CNN starts with 100x weaker signals and stays at loss ln 10 for epochs.
    """

    name = "mean_image"
    fitted_buffers = ("mean",)

    def fit(self, x: torch.Tensor) -> MeanImage:
        _check_batch(x, "MeanImage.fit")
        total = torch.zeros(x.shape[1:], dtype=torch.float64, device=x.device)
        for i in range(0, len(x), _FIT_CHUNK):
            total += x[i:i + _FIT_CHUNK].to(torch.float64).sum(dim=0)
        self.mean = (total / len(x)).to(torch.float32).cpu()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "MeanImage")
        self._require_fitted()
        if x.shape[1:] != self.mean.shape:
            raise ValueError(f"MeanImage was fitted on images of shape {tuple(self.mean.shape)}, this batch has "
                             f"{tuple(x.shape[1:])}")
        return x.to(torch.float32) - self.mean


class GCN(Transform):
    """Global contrast normalisation, pylearn2's ``global_contrast_normalize(X, scale=55,
    subtract_mean=True, use_std=False, sqrt_bias=0)``, on raw 0..255 pixels.

    Per image: subtract the mean of all its C·H·W values, divide by the L2 norm of the result
    (a norm below ``min_norm`` is replaced by 1, so a flat image maps to zeros, not NaN) and multiply
    by ``scale``. Computed in float64. (pylearn2 compares norm/scale with its threshold; for 8-bit
    images both rules agree, since a non-flat image has a norm of at least about 1.)
    """

    name = "gcn"
    config = ("scale", "min_norm")

    def __init__(self, scale: float = 55.0, min_norm: float = 1e-8) -> None:
        super().__init__()
        self.scale = float(scale)
        self.min_norm = float(min_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "GCN")
        flat = x.flatten(1).to(torch.float64)
        flat = flat - flat.mean(dim=1, keepdim=True)
        norm = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
        norm = torch.where(norm < self.min_norm, torch.ones_like(norm), norm)
        return (flat * (self.scale / norm)).to(torch.float32).reshape(x.shape)


class ZCA(Transform):
    """ZCA whitening as pylearn2's ``ZCA(filter_bias=0.1)``, fitted on the training split only.

    With X the training images flattened to N × D: mean = per-feature mean,
    C = (X−mean)ᵀ(X−mean)/N + filter_bias·I, C = V diag(λ) Vᵀ, P = V diag(1/√λ) Vᵀ; a batch maps
    to (x−mean)·P. The covariance is accumulated in float64 in chunks and eigendecomposed in float64;
    ``mean`` and ``whitening`` (= P) are stored as float32 and applied in float32. filter_bias = 0.1
    matters at GCN scale (55): the tiny epsilons of other libraries amplify noise directions.
    """

    name = "zca"
    config = ("filter_bias",)
    fitted_buffers = ("mean", "whitening")

    def __init__(self, filter_bias: float = 0.1) -> None:
        super().__init__()
        self.filter_bias = float(filter_bias)

    def fit(self, x: torch.Tensor) -> ZCA:
        _check_batch(x, "ZCA.fit")
        flat = x.reshape(len(x), -1)
        n, d = flat.shape
        mean = torch.zeros(d, dtype=torch.float64, device=x.device)
        for i in range(0, n, _FIT_CHUNK):
            mean += flat[i:i + _FIT_CHUNK].to(torch.float64).sum(dim=0)
        mean /= n
        cov = torch.zeros(d, d, dtype=torch.float64, device=x.device)
        for i in range(0, n, _FIT_CHUNK):
            centered = flat[i:i + _FIT_CHUNK].to(torch.float64) - mean
            cov.addmm_(centered.T, centered)
        cov /= n
        cov.diagonal().add_(self.filter_bias)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # LAPACK's threaded eigh lost 50-100x to a busy second core on 2-core CPUs
        try:
            eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        finally:
            torch.set_num_threads(threads)
        del cov
        self.whitening = ((eigenvectors * eigenvalues.rsqrt()) @ eigenvectors.T).to(torch.float32).cpu()
        self.mean = mean.to(torch.float32).cpu()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "ZCA")
        self._require_fitted()
        flat = x.flatten(1).to(torch.float32)
        if flat.shape[1] != len(self.mean):
            raise ValueError(f"ZCA was fitted on {len(self.mean)} values per image, this batch has "
                             f"{flat.shape[1]} (shape {tuple(x.shape)})")
        return ((flat - self.mean) @ self.whitening).reshape(x.shape)


def gaussian_kernel(size: int, sigma: float = 2.0) -> torch.Tensor:
    """pylearn2's ``gaussian_filter``: exp(−(i²+j²)/(2σ²)) for offsets i, j in −(size//2)..size//2, summed to 1.

    σ is 2 whatever the size, as in pylearn2. Returned in float64, shape (size, size).
    """
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


class LCN(Transform):
    """LeCun local contrast normalisation as pylearn2's ``lecun_lcn``, applied to EVERY channel.

    With G the normalised 7×7 kernel of :func:`gaussian_kernel` (σ = 2) and zero padding at the
    borders, each channel c of each image is mapped independently:
    centred = x − G∗x; σ_local = √(G∗x²) (of the input, as pylearn2 does, not of the centred
    values); divisor = max(mean over the image of σ_local, σ_local, threshold); out = centred / divisor.
    pylearn2's preprocessor only normalised channel 0 of colour images (a bug); this implements the
    intended per-channel behaviour. Computed in float32.
    """

    name = "lcn"
    config = ("kernel_size", "threshold")

    def __init__(self, kernel_size: int = 7, threshold: float = 1e-4) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"LCN kernel_size must be a positive odd number, got {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.threshold = float(threshold)
        # derived from the config, so not saved
        self.register_buffer("kernel", gaussian_kernel(self.kernel_size).to(torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "LCN")
        # every channel as an image of its own: one fixed single-channel kernel, exportable to ONNX
        x = x.to(torch.float32)
        planes = x.reshape(-1, 1, *x.shape[2:])
        weight = self.kernel[None, None]
        pad = self.kernel_size // 2
        centered = planes - F.conv2d(planes, weight, padding=pad)
        local = F.conv2d(planes * planes, weight, padding=pad).clamp_min(0.0).sqrt()
        divisor = torch.maximum(local, local.mean(dim=(2, 3), keepdim=True)).clamp_min(self.threshold)
        return (centered / divisor).reshape(x.shape)


class Standardize(Transform):
    """Per-channel (x − mean) / std with mean and std (population) fitted on the training split.

    For the modern recipes, not the paper. A constant channel gets std 1 (maps to 0, not NaN).
    """

    name = "standardize"
    fitted_buffers = ("mean", "std")

    def fit(self, x: torch.Tensor) -> Standardize:
        _check_batch(x, "Standardize.fit")
        n, c = x.shape[:2]
        count = x[0].numel() // c * n
        total = torch.zeros(c, dtype=torch.float64, device=x.device)
        for i in range(0, n, _FIT_CHUNK):
            total += x[i:i + _FIT_CHUNK].to(torch.float64).sum(dim=(0, 2, 3))
        mean = total / count
        squares = torch.zeros(c, dtype=torch.float64, device=x.device)
        for i in range(0, n, _FIT_CHUNK):
            squares += ((x[i:i + _FIT_CHUNK].to(torch.float64) - mean[:, None, None]) ** 2).sum(dim=(0, 2, 3))
        std = (squares / count).sqrt()
        std = torch.where(std < 1e-12, torch.ones_like(std), std)
        self.mean, self.std = mean.to(torch.float32).cpu(), std.to(torch.float32).cpu()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "Standardize")
        self._require_fitted()
        if x.shape[1] != len(self.mean):
            raise ValueError(f"Standardize was fitted on {len(self.mean)} channels, this batch has {x.shape[1]}")
        return (x.to(torch.float32) - self.mean[:, None, None]) / self.std[:, None, None]


class ReverseChannels(Transform):
    """RGB to BGR (or back): the channel order of networks trained in Caffe with OpenCV-decoded images."""

    name = "bgr"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "ReverseChannels")
        return x.to(torch.float32).flip(1)


class ChannelMean(Transform):
    """Subtract a fixed per-channel mean, given in the input's channel order (Caffe's ``mean_value``)."""

    name = "channel_mean"
    config = ("mean",)

    def __init__(self, mean: Sequence[float]) -> None:
        super().__init__()
        self.mean = [float(m) for m in mean]
        self.register_buffer("values", torch.tensor(self.mean, dtype=torch.float32)[:, None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "ChannelMean")
        if x.shape[1] != len(self.mean):
            raise ValueError(f"ChannelMean has {len(self.mean)} channel means, this batch has {x.shape[1]} channels")
        return x.to(torch.float32) - self.values


TRANSFORMS: dict[str, type[Transform]] = {
    t.name: t for t in (ToUnitRange, MeanImage, GCN, ZCA, LCN, Standardize, ReverseChannels, ChannelMean)}


class Pipeline(nn.Module):
    """Steps applied in order, fitted on training images.

    Calling the pipeline transforms one batch (what a model in front of its network does, and what
    export traces); :meth:`transform` runs a whole split through it ``batch_size`` images at a time.
    """

    def __init__(self, steps: Sequence[Transform] = (), batch_size: int = 4096) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.steps = nn.ModuleList(steps)
        self.batch_size = int(batch_size)

    @property
    def fitted(self) -> bool:
        return all(step.fitted for step in self.steps)

    def fit(self, x: torch.Tensor) -> Pipeline:
        """Fit every step on the training images as transformed by the steps before it."""
        _check_batch(x, "Pipeline.fit")
        stateful = [i for i, s in enumerate(self.steps) if s.fitted_buffers]
        current = x
        for i, step in enumerate(self.steps[:stateful[-1] + 1] if stateful else []):
            step.fit(current)
            if i < stateful[-1]:
                current = self._batched(self.steps[i:i + 1], current)
        return self

    def unfitted(self) -> Pipeline:
        """The same steps with the same arguments and nothing fitted: what is fitted again on first use."""
        return Pipeline([type(s)(**{k: getattr(s, k) for k in s.config}) for s in self.steps], self.batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transform one batch (N, C, H, W) to float32."""
        _check_batch(x, "Pipeline")
        for step in self.steps:
            step._require_fitted()
        for step in self.steps:
            x = step(x)
        return x.to(torch.float32)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a whole split, ``batch_size`` images at a time (bounded float64 intermediates)."""
        _check_batch(x, "Pipeline")
        for step in self.steps:
            step._require_fitted()
        return self._batched(self.steps, x)

    def _batched(self, steps: Sequence[Transform], x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        for i in range(0, len(x), self.batch_size):
            batch = x[i:i + self.batch_size]
            for step in steps:
                batch = step(batch)
            out[i:i + self.batch_size] = batch
        return out

    def to_spec(self) -> dict[str, Any]:
        """Every step's name, arguments and fitted tensors, as plain types."""
        return {"format": _FORMAT, "batch_size": self.batch_size, "steps": [s.to_spec() for s in self.steps]}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Pipeline:
        """Rebuild the pipeline that produced ``spec``."""
        if spec.get("format") != _FORMAT:
            raise ValueError(f"not a preprocessing pipeline (format {spec.get('format')!r}, expected {_FORMAT!r})")
        return cls([_step_class(s["name"]).from_spec(s) for s in spec["steps"]], spec["batch_size"])


def _step_class(name: str) -> type[Transform]:
    try:
        return TRANSFORMS[name]
    except KeyError:
        raise ValueError(f"unknown preprocessing step {name!r}; valid steps: {', '.join(TRANSFORMS)}") from None


def build_pipeline(names: Sequence[str | Mapping[str, Any]]) -> Pipeline:
    """A pipeline from a recipe list: names (``unit``, ``mean_image``, ``gcn``, ``zca``, ``lcn``,
    ``standardize``, ``bgr``) or dicts such as ``{"name": "zca", "filter_bias": 0.1}`` whose other keys
    are the step's arguments (``{"name": "channel_mean", "mean": [104, 117, 123]}``)."""
    steps = []
    for entry in names:
        spec = {"name": entry} if isinstance(entry, str) else dict(entry)
        if "name" not in spec:
            raise ValueError(f"preprocessing step {entry!r} has no 'name'; valid steps: {', '.join(TRANSFORMS)}")
        step_cls = _step_class(spec.pop("name"))
        unknown = sorted(set(spec) - set(step_cls.config))
        if unknown:
            accepted = ", ".join(step_cls.config) or "no arguments"
            raise ValueError(f"preprocessing step {step_cls.name!r} does not take {', '.join(unknown)}; it takes "
                             f"{accepted}")
        steps.append(step_cls(**spec))
    return Pipeline(steps)


__all__ = ["GCN", "LCN", "TRANSFORMS", "ChannelMean", "MeanImage", "ZCA", "Pipeline", "ReverseChannels",
           "Standardize", "ToUnitRange", "Transform", "build_pipeline", "gaussian_kernel"]
