"""Which units of a trained network still fire: the census behind a collapse to chance.

A network whose training loss climbs to ln(K) while nothing is non-finite has usually switched units off: a ReLU
whose input is negative for every image passes no signal and no gradient. For each checkpoint this prints one JSON
line: the error on the first ``--images`` images of ``--split``; for every ReLU, the share of its outputs that are
zero and the channels that are zero for every image and position (dead); the norm of each layer's weights; and the
spread of the logits over the images (0 when the network answers the same for every image).

    python benchmarks/relu_census.py RUN/e30.pt RUN/e40.pt --split valid --images 2000 --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nin.inference.trained import load_trained  # noqa: E402  (after the src/ path)


class ReluCounter:
    """Counts, per channel of one ReLU, how many outputs are above zero."""

    def __init__(self) -> None:
        self.firing: torch.Tensor | None = None
        self.outputs = 0

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        positive = (output > 0).transpose(0, 1).flatten(1)  # (channels, images × positions)
        counts = positive.sum(1)
        self.firing = counts if self.firing is None else self.firing + counts
        self.outputs += positive.shape[1]

    def summary(self, name: str) -> dict[str, object]:
        assert self.firing is not None
        return {"layer": name, "channels": len(self.firing), "dead_channels": int((self.firing == 0).sum()),
                "zero_share": round(1 - float(self.firing.sum()) / (self.outputs * len(self.firing)), 4)}


@torch.no_grad()
def census(checkpoint: Path, split: str, images: int, data_dir: str | None) -> dict[str, object]:
    trained = load_trained(checkpoint)
    data = trained.load_split(split, data_dir)
    pixels, labels = data.images[:images], data.labels[:images]
    relus = {name: m for name, m in trained.model.named_modules() if isinstance(m, nn.ReLU)}
    counters = {name: ReluCounter() for name in relus}
    hooks = [relus[name].register_forward_hook(counter) for name, counter in counters.items()]
    try:
        logits = trained.logits(pixels)
    finally:
        for hook in hooks:
            hook.remove()
    weights = {name: round(float(m.weight.norm()), 3) for name, m in trained.model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))}
    return {"checkpoint": checkpoint.name, "epoch": len(trained.history), "split": split, "images": len(labels),
            "error": round(100 * float((logits.argmax(1) != labels).float().mean()), 2),
            "logit_spread": round(float(logits.std(0).mean()), 4),
            "relus": [counter.summary(name) for name, counter in counters.items()],
            "weight_norms": weights}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoints written by nin train")
    parser.add_argument("--split", default="valid", help="the split to look at (default: valid)")
    parser.add_argument("--images", type=int, default=2000, help="its first N images (default 2000)")
    parser.add_argument("--data-dir", help="dataset root (default: the run's, else $NIN_DATA)")
    args = parser.parse_args()
    for checkpoint in args.checkpoints:
        print(json.dumps(census(checkpoint, args.split, args.images, args.data_dir)), flush=True)


if __name__ == "__main__":
    main()
