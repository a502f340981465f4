"""Batched translation + flip against a per-sample NumPy loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nin.data import Augment, AugmentParams

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def reference(x: np.ndarray, params: AugmentParams, pad: int, mode: str) -> np.ndarray:
    """One image at a time: pad, crop the window moved by (−shift_y, −shift_x), then flip."""
    out = np.empty_like(x)
    np_mode = "constant" if mode == "zero" else "reflect"
    for n in range(len(x)):
        padded = np.pad(x[n], ((0, 0), (pad, pad), (pad, pad)), mode=np_mode)
        top, left = pad - int(params.shift_y[n]), pad - int(params.shift_x[n])
        crop = padded[:, top:top + x.shape[2], left:left + x.shape[3]]
        out[n] = crop[:, :, ::-1] if params.flip[n] else crop
    return out


def images(n: int = 64, c: int = 3, h: int = 8, w: int = 10, device: str = "cpu") -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(n)).to(device)


def test_no_padding_no_flip_is_the_identity():
    x = images()
    assert torch.equal(Augment()(x, torch.Generator().manual_seed(0)), x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["zero", "reflect"])
@pytest.mark.parametrize("flip", [False, True])
def test_each_image_is_translated_by_its_own_shift(device, mode, flip):
    aug = Augment(pad=3, flip=flip, mode=mode)
    x = images(device=device)
    params = aug.sample(len(x), torch.Generator(device=device).manual_seed(1))
    out = aug.apply(x, params)
    cpu = params.to("cpu")
    assert out.shape == x.shape and out.device == x.device
    np.testing.assert_array_equal(out.cpu().numpy(), reference(x.cpu().numpy(), cpu, 3, mode))
    assert set(cpu.shift_x.tolist()) == set(range(-3, 4)) and set(cpu.shift_y.tolist()) == set(range(-3, 4))
    assert cpu.flip.any() == flip


def test_translation_moves_content_down_and_right():
    aug = Augment(pad=2)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    params = AugmentParams(torch.tensor([1]), torch.tensor([2]), torch.tensor([False]))
    out = aug.apply(x, params)[0, 0]
    assert torch.equal(out[1:, 2:], x[0, 0, :3, :2]) and torch.equal(out[0], torch.zeros(4))


def test_flip_only():
    aug = Augment(flip=True)
    x = images()
    params = aug.sample(len(x), torch.Generator().manual_seed(2))
    out = aug.apply(x, params)
    assert torch.equal(out[params.flip], x[params.flip].flip(-1)) and torch.equal(out[~params.flip], x[~params.flip])
    assert 0 < int(params.flip.sum()) < len(x)


def test_seeded_generator_is_deterministic():
    aug = Augment(pad=4, flip=True)
    x = images()
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_params_are_sliceable_so_ranks_can_share_a_draw():
    aug = Augment(pad=2, flip=True, mode="reflect")
    x = images(n=30)
    params = aug.sample(30, torch.Generator().manual_seed(3))
    whole = aug.apply(x, params)
    parts = torch.cat([aug.apply(x[a:b], params[a:b]) for a, b in ((0, 11), (11, 20), (20, 30))])
    assert torch.equal(parts, whole) and len(params[5:9]) == 4


def test_invalid_settings():
    with pytest.raises(ValueError, match="unknown padding mode"):
        Augment(pad=1, mode="wrap")
    with pytest.raises(ValueError, match="pad must be >= 0"):
        Augment(pad=-1)
    with pytest.raises(ValueError, match="reflect padding needs pad < image size"):
        Augment(pad=8, mode="reflect")(images(h=8), torch.Generator())
    with pytest.raises(ValueError, match="N parameters"):
        aug = Augment(pad=1)
        aug.apply(images(n=4), aug.sample(3, torch.Generator()))
