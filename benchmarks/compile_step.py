"""Does ``torch.compile`` speed up the CPU training step? The training loop's own step
(``nin.train.engine.train_step``) on NIN-CIFAR10 as ``cifar10-fast20`` trains it (BatchNorm, packed dropout, bf16,
channels_last, batch 128), eager and compiled, alternating in one process so that both see the same machine.

Usage: ``python benchmarks/compile_step.py [--rounds 3] [--steps 5] [--json FILE]``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone

import torch

from nin import create_model
from nin.train.engine import train_step
from nin.utils.hardware import describe_hardware

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--steps", type=int, default=5, help="timed steps per round and variant")
parser.add_argument("--json", help="write the timings here")
args = parser.parse_args()

torch.manual_seed(0)
device = torch.device("cpu")
x = torch.randn(128, 3, 32, 32, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (128,))
scaler = torch.amp.GradScaler("cuda", enabled=False)


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("nin_cifar10", batch_norm=True, packed_dropout=True).to(memory_format=torch.channels_last)


eager, plain = network(), network()
variants = {"eager": eager, "compiled": torch.compile(plain)}
optimizers = {name: torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) for name, model in variants.items()}


def steps(name: str, n: int) -> float:
    tic = time.perf_counter()
    for _ in range(n):
        train_step(variants[name], optimizers[name], scaler, x, y, device=device, precision="bf16", loss_scale=1 / 128)
    return (time.perf_counter() - tic) / n


tic = time.perf_counter()
steps("compiled", 2)
compile_s = time.perf_counter() - tic
steps("eager", 2)
times: dict[str, list[float]] = {"eager": [], "compiled": []}
for _ in range(args.rounds):
    for name in times:
        times[name].append(steps(name, args.steps))
median = {name: statistics.median(t) for name, t in times.items()}
result = {
    "command": "python benchmarks/compile_step.py " + f"--rounds {args.rounds} --steps {args.steps}",
    "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "hardware": describe_hardware(device), "python": platform.python_version(),
    "compile_and_first_two_steps_s": compile_s, "seconds_per_step": times, "median_seconds_per_step": median,
    "compiled_over_eager_speed": median["eager"] / median["compiled"],
}
print(json.dumps(result, indent=2))
if args.json:
    with open(args.json, "w") as f:
        f.write(json.dumps(result, indent=2) + "\n")
