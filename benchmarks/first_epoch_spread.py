"""How much a network's training logits vary over the images of each batch, step by step in the first epoch.

A fully connected head whose maps died gives its biases for every image, so the spread of each class's logit over
the batch (``nin.train.health.logit_spread``) falls to a tiny share of the logits' size; in a network that
learns it stays of their order. This prints one JSON line per step with that spread and the largest logit's
magnitude, until ``--steps`` steps or the training loop's own health check stops the run (then a last line holds
its message). The numbers behind ``SAME_OUTPUT_SPREAD`` in ``nin.train.health``:

    python benchmarks/first_epoch_spread.py cifar10-fc-dropout --set lr=0.1 --steps 160 --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nin.train import Trainer, TrainingError, apply_overrides, load_recipe  # noqa: E402  (after the src/ path)
from nin.train.health import logit_spread  # noqa: E402


class EnoughSteps(Exception):
    """Raised from the hook once ``--steps`` training forwards were seen."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="a shipped recipe name or a recipe file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    parser.add_argument("--steps", type=int, default=160, help="training steps to watch (default 160)")
    parser.add_argument("--data-dir", help="dataset root (default: $NIN_DATA)")
    args = parser.parse_args()
    recipe = apply_overrides(load_recipe(args.recipe), ['precision="bf16"', "channels_last=true", "epochs=1",
                                                        'eval_split="none"', "test_splits=[]", *args.set])
    step = 0

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], logits: torch.Tensor) -> None:
        nonlocal step
        if not module.training:
            return
        if step == args.steps:
            raise EnoughSteps
        spread, largest = logit_spread(logits.detach().float())
        print(json.dumps({"step": step + 1, "spread": round(spread, 6), "largest": round(largest, 6),
                          "share": round(spread / largest, 6) if largest else None}), flush=True)
        step += 1

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(recipe, Path(run_dir), data_root=args.data_dir, progress=False)
        trainer.model.register_forward_hook(record)
        try:
            trainer.fit()
        except EnoughSteps:
            pass
        except TrainingError as stop:
            print(json.dumps({"stopped": str(stop)}), flush=True)


if __name__ == "__main__":
    main()
