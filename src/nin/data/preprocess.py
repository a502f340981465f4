"""The paper's preprocessing (pylearn2's GCN, ZCA and LeCun LCN) as fitted, serialisable transforms,
plus the mean-image subtraction of cuda-convnet and per-channel standardization for other recipes.

A transform maps a batch (N, C, H, W) of uint8 or float pixels to float32 of the same shape.
Stateful ones (ZCA, Standardize) are fitted on the training split only; a :class:`Pipeline` chains
them, fits them in order and stores everything as plain types and tensors, so it can live in a
checkpoint loaded with ``torch.load(weights_only=True)`` and evaluation applies exactly the
training-time preprocessing (the classic source of "downloaded weights evaluate worse" reports).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

_FORMAT = "nin.preprocess.Pipeline/1"
_FIT_CHUNK = 4096  # rows per float64 chunk when fitting (4096 × 3072 doubles = 100 MB)


def _check_batch(x: torch.Tensor, who: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{who} expects a batch of shape (N, C, H, W), got shape {tuple(x.shape)}")


class Transform:
    """One preprocessing step. Subclasses list their constructor arguments in ``config`` and their
    fitted tensors in ``buffers``; a step with buffers must be fitted before it is applied."""

    name: ClassVar[str]
    config: ClassVar[tuple[str, ...]] = ()
    buffers: ClassVar[tuple[str, ...]] = ()

    @property
    def fitted(self) -> bool:
        return all(getattr(self, b, None) is not None for b in self.buffers)

    def fit(self, x: torch.Tensor) -> Transform:
        """Fit on training images (N, C, H, W); stateless steps have nothing to learn."""
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Name, constructor arguments and fitted tensors (on the CPU): plain types only."""
        state: dict[str, Any] = {"name": self.name}
        state.update({k: getattr(self, k) for k in self.config})
        state.update({b: getattr(self, b).cpu() for b in self.buffers if getattr(self, b, None) is not None})
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Transform:
        """Rebuild a step (fitted if the state holds its tensors) from :meth:`state_dict`."""
        step = cls(**{k: state[k] for k in cls.config if k in state})
        for b in cls.buffers:
            if b in state:
                setattr(step, b, state[b])
        return step

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.config)
        fitted = "" if not self.buffers else (", fitted" if self.fitted else ", not fitted")
        return f"{type(self).__name__}({args}{fitted})"

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() on the training images first "
                               "(or load a fitted pipeline with Pipeline.from_state_dict)")


class ToUnitRange(Transform):
    """Pixels / 255 (MNIST's only preprocessing in the paper)."""

    name = "unit"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "ToUnitRange")
        return x.to(torch.float32) / 255.0


class MeanImage(Transform):
    """Subtract the training set's mean image (per channel and pixel) from raw 0..255 pixels.

    cuda-convnet's only preprocessing for CIFAR-10, and the input scale (std about 64) for which its
    configs' tiny init stds (1e-4 on conv1) were chosen: at GCN + ZCA scale (std about 0.5) the
    dropout paper's CNN starts with 100x weaker signals and stays at loss ln 10 for epochs.
    """

    name = "mean_image"
    buffers = ("mean",)

    def __init__(self) -> None:
        self.mean: torch.Tensor | None = None

    def fit(self, x: torch.Tensor) -> MeanImage:
        _check_batch(x, "MeanImage.fit")
        total = torch.zeros(x.shape[1:], dtype=torch.float64, device=x.device)
        for i in range(0, len(x), _FIT_CHUNK):
            total += x[i:i + _FIT_CHUNK].to(torch.float64).sum(dim=0)
        self.mean = (total / len(x)).to(torch.float32).cpu()
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "MeanImage")
        self._require_fitted()
        assert self.mean is not None
        if x.shape[1:] != self.mean.shape:
            raise ValueError(f"MeanImage was fitted on images of shape {tuple(self.mean.shape)}, this batch has "
                             f"{tuple(x.shape[1:])}")
        return x.to(torch.float32) - self.mean.to(x.device)


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
        self.scale = float(scale)
        self.min_norm = float(min_norm)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "GCN")
        flat = x.reshape(len(x), -1).to(torch.float64)
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
    buffers = ("mean", "whitening")

    def __init__(self, filter_bias: float = 0.1) -> None:
        self.filter_bias = float(filter_bias)
        self.mean: torch.Tensor | None = None
        self.whitening: torch.Tensor | None = None

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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "ZCA")
        self._require_fitted()
        assert self.mean is not None and self.whitening is not None
        flat = x.reshape(len(x), -1).to(torch.float32)
        if flat.shape[1] != len(self.mean):
            raise ValueError(f"ZCA was fitted on {len(self.mean)} values per image, this batch has "
                             f"{flat.shape[1]} (shape {tuple(x.shape)})")
        mean, whitening = self.mean.to(x.device), self.whitening.to(x.device)
        return ((flat - mean) @ whitening).reshape(x.shape)


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
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"LCN kernel_size must be a positive odd number, got {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.threshold = float(threshold)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "LCN")
        x = x.to(torch.float32)
        c = x.shape[1]
        kernel = gaussian_kernel(self.kernel_size).to(device=x.device, dtype=torch.float32)
        weight = kernel.expand(c, 1, -1, -1)
        pad = self.kernel_size // 2
        centered = x - F.conv2d(x, weight, padding=pad, groups=c)
        local = F.conv2d(x * x, weight, padding=pad, groups=c).clamp_min(0.0).sqrt()
        divisor = torch.maximum(local, local.mean(dim=(2, 3), keepdim=True)).clamp_min(self.threshold)
        return centered / divisor


class Standardize(Transform):
    """Per-channel (x − mean) / std with mean and std (population) fitted on the training split.

    For the modern recipes, not the paper. A constant channel gets std 1 (maps to 0, not NaN).
    """

    name = "standardize"
    buffers = ("mean", "std")

    def __init__(self) -> None:
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, "Standardize")
        self._require_fitted()
        assert self.mean is not None and self.std is not None
        if x.shape[1] != len(self.mean):
            raise ValueError(f"Standardize was fitted on {len(self.mean)} channels, this batch has {x.shape[1]}")
        mean = self.mean.to(x.device)[:, None, None]
        std = self.std.to(x.device)[:, None, None]
        return (x.to(torch.float32) - mean) / std


TRANSFORMS: dict[str, type[Transform]] = {t.name: t for t in (ToUnitRange, MeanImage, GCN, ZCA, LCN, Standardize)}


class Pipeline:
    """Steps applied in order; fitted on training images, applied in batches of ``batch_size``.

    ``state_dict()`` holds only str/int/float/bool/list/dict/Tensor, so a checkpoint stays loadable
    with ``torch.load(weights_only=True)``; ``Pipeline.from_state_dict`` rebuilds it exactly.
    """

    def __init__(self, steps: Sequence[Transform] = (), batch_size: int = 4096) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.steps = list(steps)
        self.batch_size = int(batch_size)

    def fit(self, x: torch.Tensor) -> Pipeline:
        """Fit every step on the training images as transformed by the steps before it."""
        _check_batch(x, "Pipeline.fit")
        stateful = [i for i, s in enumerate(self.steps) if s.buffers]
        current = x
        for i, step in enumerate(self.steps[:stateful[-1] + 1] if stateful else []):
            step.fit(current)
            if i < stateful[-1]:
                current = self._apply([step], current)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a batch (N, C, H, W) to float32, ``batch_size`` images at a time."""
        _check_batch(x, "Pipeline")
        for step in self.steps:
            step._require_fitted()
        return self._apply(self.steps, x)

    def _apply(self, steps: Sequence[Transform], x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        for i in range(0, len(x), self.batch_size):
            batch = x[i:i + self.batch_size]
            for step in steps:
                batch = step(batch)
            out[i:i + self.batch_size] = batch
        return out

    def state_dict(self) -> dict[str, Any]:
        """Every step's name, arguments and fitted tensors, as plain types."""
        return {"format": _FORMAT, "batch_size": self.batch_size, "steps": [s.state_dict() for s in self.steps]}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Pipeline:
        """Rebuild the pipeline that produced ``state``."""
        if state.get("format") != _FORMAT:
            raise ValueError(f"not a preprocessing pipeline state (format {state.get('format')!r}, "
                             f"expected {_FORMAT!r})")
        return cls([_step_class(s["name"]).from_state_dict(s) for s in state["steps"]], state["batch_size"])

    def __repr__(self) -> str:
        return f"Pipeline([{', '.join(map(repr, self.steps))}])"


def _step_class(name: str) -> type[Transform]:
    try:
        return TRANSFORMS[name]
    except KeyError:
        raise ValueError(f"unknown preprocessing step {name!r}; valid steps: {', '.join(TRANSFORMS)}") from None


def build_pipeline(names: Sequence[str | Mapping[str, Any]]) -> Pipeline:
    """A pipeline from a recipe list: names (``unit``, ``mean_image``, ``gcn``, ``zca``, ``lcn``,
    ``standardize``) or dicts such as ``{"name": "zca", "filter_bias": 0.1}`` whose other keys are the
    step's arguments."""
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


__all__ = ["GCN", "LCN", "TRANSFORMS", "MeanImage", "ZCA", "Pipeline", "Standardize", "ToUnitRange", "Transform",
           "build_pipeline", "gaussian_kernel"]
