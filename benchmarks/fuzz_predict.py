"""Fuzz `nin predict`'s file path: damaged PNG/JPEG bytes must give a prediction or one clean error, nothing else.

The inputs are made by Hypothesis from real images of the shared data (an MNIST digit and a CIFAR-10
picture, saved as PNG and JPEG, grey, RGB, RGBA and paletted): bytes overwritten anywhere or in the
header, files cut short, and random bytes. Each is written to a file and passed to
``nin.inference.predict.predict_files`` with an untrained MNIST network (what it predicts does not matter, only
that nothing but an ``ImageFileError`` message comes out). Writes the counts to ``--out``.

    python benchmarks/fuzz_predict.py --data-dir ../shared/data --examples 2000 \\
        --out results/reliability/fuzz_predict.json
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import PIL
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import __version__ as hypothesis_version
from hypothesis import strategies as st
from PIL import Image

from nin.data import build_pipeline, load_dataset
from nin.inference.predict import predict_files
from nin.inference.trained import TrainedModel
from nin.models import create_model
from nin.utils.atomic import atomic_write_text
from nin.utils.hardware import describe_hardware

HEADER_BYTES = 64  # PNG IHDR and the JPEG SOF marker (sizes, channels) lie in the first bytes


def seed_images(data_root: Path) -> dict[str, bytes]:
    """Real images as PNG and JPEG bytes: an MNIST digit (grey) and a CIFAR-10 test picture (colour)."""
    digit = Image.fromarray(load_dataset("mnist", "test", root=data_root).images[0, 0].numpy())
    with np.load(data_root / "cifar-10-lossless-subset" / "test_1000.npz") as z:
        picture = Image.fromarray(z["x"][0])
    images = {"mnist.png": (digit, "PNG"), "mnist.jpg": (digit, "JPEG"), "cifar.png": (picture, "PNG"),
              "cifar.jpg": (picture, "JPEG"), "cifar-rgba.png": (picture.convert("RGBA"), "PNG"),
              "cifar-palette.png": (picture.convert("P"), "PNG")}
    seeds = {}
    for name, (image, fmt) in images.items():
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        seeds[name] = buffer.getvalue()
    return seeds


def _overwrite(data: bytes, edits: list[tuple[int, int]], span: int) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % min(span, len(out))] = value
    return bytes(out)


def image_bytes(seeds: dict[str, bytes]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(kind, bytes): a seed with bytes overwritten anywhere or in its header, cut short, or random bytes."""
    names = st.sampled_from(sorted(seeds))
    edits = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=12)
    anywhere = st.tuples(names, edits).map(lambda t: ("bytes overwritten", _overwrite(seeds[t[0]], t[1], 1 << 30)))
    header = st.tuples(names, edits).map(lambda t: ("header overwritten", _overwrite(seeds[t[0]], t[1], HEADER_BYTES)))
    cut = st.tuples(names, st.floats(0.0, 1.0, exclude_max=True)).map(
        lambda t: ("cut short", seeds[t[0]][: int(t[1] * len(seeds[t[0]]))]))
    noise = st.binary(max_size=4096).map(lambda b: ("random bytes", b))
    return st.one_of(anywhere, header, cut, noise)


def check(trained: TrainedModel, data: bytes, folder: Path) -> str:
    """Predict one file; 'predicted' or the kind of clean error. Anything else raises (AssertionError or
    whatever predict_files let through)."""
    path = folder / "input.img"
    path.write_bytes(data)
    predictions, errors = predict_files(trained, [str(path)], 3)
    assert len(predictions) + len(errors) == 1, (predictions, errors)
    if errors:
        assert errors[0].startswith(str(path)), errors[0]
        return "error: " + errors[0][len(str(path)) + 2:].split(" (")[0].split(";")[0]
    (p,) = predictions
    assert len(p.classes) == 3 and all(math.isfinite(q) and 0.0 <= q <= 1.0 for q in p.probabilities), p
    assert p.probabilities == sorted(p.probabilities, reverse=True), p
    return "predicted"


def fuzz(trained: TrainedModel, seeds: dict[str, bytes], examples: int, folder: Path) -> dict[str, object]:
    """Run ``examples`` Hypothesis inputs; counts per input kind and outcome, and the first failure if any."""
    kinds: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    slowest = 0.0
    failure: dict[str, str] = {}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(image_bytes(seeds))
    def one(case: tuple[str, bytes]) -> None:
        nonlocal slowest
        kind, data = case
        tic = time.perf_counter()
        try:
            outcome = check(trained, data, folder)
        except BaseException as err:
            failure.setdefault("input", f"{kind}: {data[:200]!r}... ({len(data)} bytes)")
            failure.setdefault("error", f"{type(err).__name__}: {err}")
            raise
        slowest = max(slowest, time.perf_counter() - tic)
        kinds[kind] += 1
        outcomes[outcome] += 1

    try:
        one()
    except Exception:  # Hypothesis re-raises the (shrunk) failure; it is reported, not re-raised
        pass
    return {"inputs": sum(kinds.values()), "by_kind": dict(kinds.most_common()),
            "outcomes": dict(outcomes.most_common()), "unclean_failures": failure or None,
            "slowest_input_s": round(slowest, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("NIN_DATA", "../shared/data"))
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--out", default="results/reliability/fuzz_predict.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    trained = TrainedModel(create_model("nin_mnist", num_classes=10).eval(), "nin_mnist", {}, build_pipeline(["unit"]),
                           [str(d) for d in range(10)], "mnist", (1, 28, 28), {}, [])
    seeds = seed_images(Path(args.data_dir))
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nin-fuzz-") as tmp:
        result = fuzz(trained, seeds, args.examples, Path(tmp))
    report = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "hardware": describe_hardware(torch.device("cpu")),
              "versions": {"pillow": PIL.__version__, "hypothesis": hypothesis_version, "torch": torch.__version__},
              "target": "nin.inference.predict.predict_files (the code path of `nin predict`)",
              "seeds": {name: len(data) for name, data in seeds.items()},
              "examples_requested": args.examples, **result, "wall_time_s": round(time.perf_counter() - tic, 1)}
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"{report['inputs']} inputs: {report['outcomes']}; unclean failures: {report['unclean_failures']}; "
          f"wrote {args.out}")
    return 0 if report["unclean_failures"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
