"""The NiN of the d2l.ai book ("Dive into Deep Learning", chapter "Network in Network"), a peer.

It is the Caffe ImageNet NIN cut down for Fashion-MNIST: four mlpconv blocks (11×11 stride 4, 5×5,
3×3, 3×3; 96, 256, 384 and 10 maps), 3×3 stride-2 max pooling rounded down (54→26→12→5), dropout
0.5 before the last block, global average pooling, Glorot-uniform weights. The book resizes the
28×28 images to 224×224 in its data loader; here the first layer does it (bilinear, the same
half-pixel arithmetic as the book's resize), so the network takes the dataset's own images, and
prediction and export need no extra step.
"""
from __future__ import annotations

from torch import nn

from nin.models.nin import NIN, Stage
from nin.models.registry import register_model

D2L_INPUT = 224  # the side the book resizes Fashion-MNIST to


@register_model(input_size=(1, 28, 28), num_classes=10,
                paper="not in the paper: the d2l.ai book's NiN (Fashion-MNIST resized to 224)")
def d2l_nin(num_classes: int = 10, in_channels: int = 1, batch_norm: bool = False, dropout: float = 0.5,
            **kw) -> NIN:
    """The d2l.ai book's NiN: 28×28 images upsampled to 224, four mlpconv blocks, GAP."""
    def block(widths: tuple[int, ...], kernel: int, padding: int, **stage) -> Stage:
        return Stage(widths, kernel, padding, "xavier", pool_ceil=False, **stage)

    stages = [
        block((96, 96, 96), 11, 0, stride=4, dropout=0.0),
        block((256, 256, 256), 5, 2, dropout=0.0),
        block((384, 384, 384), 3, 1, dropout=dropout),
        block((num_classes,) * 3, 3, 1, pool=None, dropout=0.0),
    ]
    model = NIN(stages, in_channels, D2L_INPUT, "gap", batch_norm, **kw)
    model.features = nn.Sequential(nn.Upsample(size=(D2L_INPUT, D2L_INPUT), mode="bilinear", align_corners=False),
                                   *model.features)
    return model
