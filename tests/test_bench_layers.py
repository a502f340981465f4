"""`nin bench`'s convolution limit: the network's own convolutions, their FLOPs, and the step profile."""
from __future__ import annotations

import torch

from nin.bench.layers import conv_bound, conv_layers, profile_step
from nin.models import create_model
from nin.train.engine import train_step

CPU = torch.device("cpu")
# the paper's CIFAR-10 NIN written out by hand: (kernel, in, out, input side) of each convolution
NIN_CIFAR10 = [(5, 3, 192, 32), (1, 192, 160, 32), (1, 160, 96, 32), (5, 96, 192, 16), (1, 192, 192, 16),
               (1, 192, 192, 16), (3, 192, 192, 8), (1, 192, 192, 8), (1, 192, 10, 8)]


def test_conv_layers_are_the_networks_own_with_their_flops() -> None:
    layers = conv_layers(create_model("nin_cifar10"), (2, 3, 32, 32))
    got = [(l.conv.kernel_size[0], l.input_shape[1], l.conv.out_channels, l.input_shape[2]) for l in layers]
    assert got == NIN_CIFAR10
    for layer, (k, c, o, side) in zip(layers, NIN_CIFAR10):  # padding keeps the side: "same" convolutions
        assert layer.forward_flop == 2 * 2 * o * side * side * c * k * k
    assert sum(l.forward_flop for l in layers) / 2 / 2 == 222_486_528  # all multiply-adds (docs/models.md)


def test_conv_bound_counts_one_backward_product_for_the_first_layer_and_two_for_the_others() -> None:
    bound = conv_bound(conv_layers(create_model("nin_cifar10"), (2, 3, 32, 32)), "fp32", channels_last=False,
                       device=CPU, repeats=1)
    first, second = bound["layers"][:2]
    assert first["flop"] == 2 * (2 * 2 * 192 * 32 * 32 * 3 * 25)  # forward + weight gradient only
    assert second["flop"] == 3 * (2 * 2 * 160 * 32 * 32 * 192)  # forward + weight and input gradients
    seconds = sum(r["forward_s"] + r["backward_s"] for r in bound["layers"])
    assert bound["convolutions_only_images_per_s"] == 2 / seconds
    assert bound["peak_gflops"] == max(r["forward_gflops"] for r in bound["layers"])


def test_the_profile_files_each_convolution_under_its_layer() -> None:
    torch.manual_seed(0)
    model = create_model("nin_cifar10")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])

    def step() -> None:
        train_step(model, optimizer, scaler, x, y, device=CPU, precision="fp32", loss_scale=0.5)

    profile = profile_step(step, model, conv_layers(model, (2, 3, 32, 32)), steps=1)
    names = set(profile["seconds_per_step"])
    for shape in ("5×5 3→192 at 32×32", "5×5 96→192 at 16×16", "1×1 192→10 at 8×8"):
        assert f"conv {shape} forward" in names and f"conv {shape} backward" in names, shape
    assert "conv other shapes forward" not in names and {"optimizer", "pooling", "dropout"} <= names
    assert sum(profile["seconds_per_step"].values()) <= 1.5 * profile["wall_s_per_step"]
