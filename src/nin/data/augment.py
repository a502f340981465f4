"""Batched random translation and horizontal flip: one gather per batch, same code on CPU and GPU.

Drawing the random parameters (:meth:`Augment.sample`) is separate from applying them
(:meth:`Augment.apply`), so a distributed loader can draw them once for a whole global batch and let
every rank apply its own slice: the union over ranks is then exactly the single-process batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_MODES = ("zero", "reflect")


@dataclass(frozen=True)
class AugmentParams:
    """Per-image shifts (int64, in pixels) and flip flags (bool), all of shape (n,).

    ``shift_y``/``shift_x`` move the content down/right: output pixel (i, j) shows input pixel
    (i − shift_y, j − shift_x). Sliceable like a tensor (``params[a:b]``).
    """

    shift_y: torch.Tensor
    shift_x: torch.Tensor
    flip: torch.Tensor

    def __len__(self) -> int:
        return len(self.flip)

    def __getitem__(self, index: slice | torch.Tensor) -> AugmentParams:
        return AugmentParams(self.shift_y[index], self.shift_x[index], self.flip[index])

    def to(self, device: str | torch.device) -> AugmentParams:
        """The same parameters on ``device``."""
        return AugmentParams(self.shift_y.to(device), self.shift_x.to(device), self.flip.to(device))


class Augment:
    """Random translation by up to ``pad`` pixels in x and y, plus random horizontal flips.

    Translation = pad the image by ``pad`` on every side (zeros, or a mirror image with
    ``mode="reflect"``) and crop the original size at the shifted window, as the maxout recipe's
    random 32×32 crops of an 8-pixel zero-padded image. The flip is applied after the translation.
    """

    def __init__(self, pad: int = 0, flip: bool = False, mode: str = "zero") -> None:
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        if mode not in _MODES:
            raise ValueError(f"unknown padding mode {mode!r}; valid modes: {', '.join(_MODES)}")
        self.pad = int(pad)
        self.flip = bool(flip)
        self.mode = mode

    def __repr__(self) -> str:
        return f"Augment(pad={self.pad}, flip={self.flip}, mode={self.mode!r})"

    def sample(self, n: int, generator: torch.Generator) -> AugmentParams:
        """Draw parameters for ``n`` images on the generator's device (shift y, then shift x, then flip)."""
        device = generator.device
        zeros = torch.zeros(n, dtype=torch.int64, device=device)
        if self.pad:
            shift_y = torch.randint(-self.pad, self.pad + 1, (n,), generator=generator, device=device)
            shift_x = torch.randint(-self.pad, self.pad + 1, (n,), generator=generator, device=device)
        else:
            shift_y, shift_x = zeros, zeros
        if self.flip:
            flip = torch.randint(0, 2, (n,), generator=generator, device=device).bool()
        else:
            flip = zeros.bool()
        return AugmentParams(shift_y, shift_x, flip)

    def apply(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Translate and flip each image of ``x`` (N, C, H, W) by its own parameters, in one gather.

        ``params`` must come from :meth:`sample` of an ``Augment`` with the same ``pad`` (shifts within
        ±pad); they are not range-checked here, since that would cost a device sync per batch.
        """
        if x.dim() != 4 or len(params) != len(x):
            raise ValueError(f"expected a batch (N, C, H, W) and N parameters, got shape {tuple(x.shape)} and "
                             f"{len(params)} parameters")
        if self.pad == 0 and not self.flip:
            return x
        n, c, h, w = x.shape
        p = self.pad
        if self.mode == "reflect" and p >= min(h, w):
            raise ValueError(f"reflect padding needs pad < image size, got pad={p} for {h}×{w} images")
        padded = F.pad(x, (p, p, p, p), mode="constant" if self.mode == "zero" else "reflect") if p else x
        params = params.to(x.device)
        rows = torch.arange(h, device=x.device) + p - params.shift_y[:, None]            # (n, h)
        cols = torch.arange(w, device=x.device).expand(n, w)
        cols = torch.where(params.flip[:, None], w - 1 - cols, cols) + p - params.shift_x[:, None]  # (n, w)
        width = w + 2 * p
        index = (rows[:, :, None] * width + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
        return padded.reshape(n, c, -1).gather(2, index).reshape(n, c, h, w)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``apply(x, sample(len(x), generator))``."""
        return self.apply(x, self.sample(len(x), generator))
