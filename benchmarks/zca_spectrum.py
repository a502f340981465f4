"""How compactly could shipped weights carry a fitted ZCA whitening? The eigenvalues of a checkpoint's whitening
matrix P = V diag(1/√λ) Vᵀ: directions where P is 1/√filter_bias (noise below the filter bias) could be stored
as "a multiple of the identity", the others only as full vectors.

Usage: ``python benchmarks/zca_spectrum.py RUN/last.pt [--json FILE]``.
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import torch

from nin.checkpoint import load_checkpoint

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkpoint")
parser.add_argument("--json", help="write the result here")
args = parser.parse_args()

state = load_checkpoint(args.checkpoint)
(zca,) = [step for step in state["preprocess"]["steps"] if step["name"] == "zca"]
torch.set_num_threads(1)
scales = torch.linalg.eigvalsh(zca["whitening"].double())
identity_scale = zca["filter_bias"] ** -0.5
tolerances = (1e-2, 1e-3, 1e-4)
result = {
    "command": f"python benchmarks/zca_spectrum.py {args.checkpoint}".replace(str(Path.home()), "~"),
    "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "recipe": state["recipe"]["name"], "dimensions": len(scales), "filter_bias": zca["filter_bias"],
    "identity_scale": identity_scale, "largest_scale": scales.max().item(), "smallest_scale": scales.min().item(),
    # a direction that a compact "identity + rank k" form would have to store as a full vector
    "directions_off_identity": {str(tol): int(((scales - identity_scale).abs() > tol * identity_scale).sum())
                                for tol in tolerances},
    "float32_bytes_full": 4 * len(scales) ** 2,
}
print(json.dumps(result, indent=2))
if args.json:
    with open(args.json, "w") as f:
        f.write(json.dumps(result, indent=2) + "\n")
