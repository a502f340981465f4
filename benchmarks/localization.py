"""Measure whether NIN's class maps localize digits it was only ever told the label of.

Writes ``summary.json`` (command, date, hardware, configuration, numbers) and ``maps.png`` (class
maps of the first test canvases, digit boxes in cyan, map peaks as white crosses) into ``--out``.
The rule and the chance rates are defined in ``nin.experiments.localization``; docs/explain.md discusses them.

    python benchmarks/localization.py --data-dir ../shared/data --out results/localization
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from datetime import datetime, timezone

import torch

from nin.data import load_dataset
from nin.experiments.localization import LocalizationConfig, run
from nin.inference.explain import class_maps_for, explain_figure, save_figure
from nin.utils.atomic import atomic_write_text
from nin.utils.hardware import describe_hardware


def main(argv: list[str] | None = None) -> int:
    defaults = LocalizationConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="dataset root holding mnist/ (default: $NIN_DATA, else ~/.cache/nin)")
    parser.add_argument("--out", default="results/localization")
    parser.add_argument("--figure-images", type=int, default=8)
    for field in dataclasses.fields(LocalizationConfig):
        value = getattr(defaults, field.name)
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)
    args = parser.parse_args(argv)
    config = LocalizationConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(LocalizationConfig)})

    train = load_dataset("mnist", "train", root=args.data_dir)
    test = load_dataset("mnist", "test", root=args.data_dir)
    print(f"training nin_mnist on {config.train_images} {config.canvas}×{config.canvas} canvases "
          f"({describe_hardware(torch.device('cpu'))})", flush=True)
    results, trained, canvases = run(train.images, train.labels, test.images, test.labels, train.classes, config)

    summary = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": describe_hardware(torch.device("cpu")),
        "train_split": train.description,
        "test_split": test.description,
        "rule": "hit = the centre of the predicted class's map cell with the highest value (first in row-major "
                "order; a flat map is a miss), mapped to image coordinates ((j+0.5)*W/w, (i+0.5)*H/h), lies in "
                "the half-open tight box of the digit's non-zero pixels",
        **results,
    }
    k = args.figure_images
    figure = explain_figure(canvases.images[:k], class_maps_for(trained, canvases.images[:k]), trained.classes,
                            labels=canvases.labels[:k].tolist(), boxes=canvases.boxes[:k].tolist(),
                            names=[f"test canvas {i}" for i in range(k)])
    save_figure(figure, f"{args.out}/maps.png")
    atomic_write_text(f"{args.out}/summary.json", json.dumps(summary, indent=2) + "\n")
    chance = results["chance"]
    print(f"test accuracy {100 * results['test_accuracy']:.2f}%; predicted-class map peaks inside the digit's box "
          f"in {100 * results['peak_in_box']:.1f}% of {results['test_images']} test canvases "
          f"(chance: {100 * chance['cell_centre_share']:.1f}% of map cells, box area "
          f"{100 * chance['box_area_share']:.1f}% of the canvas); wrote {args.out}/summary.json and maps.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
