"""Training images/s of one run (a recipe's model and fused optimizer, bf16, channels_last, batch 128) on random
data in a time window shared with the other probes of the same group.

Times the training loop's own step (``nin.train.engine.train_step``) with the forward and backward CUDA-graphed
as ``cuda_graphs = true`` trains them; if the capture fails, eagerly, and says so. Usage:
``python probe.py START SECONDS [RECIPE]`` (START a Unix time, RECIPE ``cifar10`` by default) prints
``IMAGES_PER_S GRAPHS`` (GRAPHS 1 or 0). After its warm-up a probe waits for START without stepping, so that
probes of a later window, started at the same time, do not slow down this one.
"""
import sys
import time

import torch

from nin import create_model
from nin.train import load_recipe
from nin.train.engine import train_step
from nin.train.graphs import graph_training_forward
from nin.train.optimizer import build_optimizer

start, duration = float(sys.argv[1]), float(sys.argv[2])
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # on a CPU: a smoke test of this script
recipe = load_recipe(sys.argv[3] if len(sys.argv) > 3 else "cifar10")
x = torch.randn(128, 3, 32, 32, device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (128,), device=dev)


def network() -> torch.nn.Module:
    return create_model(recipe.model, **recipe.model_args).to(dev).to(memory_format=torch.channels_last)


model, graphs = network(), 1
try:
    graph_training_forward(model, x, "bf16")
except Exception as err:  # the call goes on eagerly; the log keeps why
    print(f"probe: the graph capture failed, timing the eager step: {type(err).__name__}: {err}", file=sys.stderr)
    model, graphs = network(), 0
opt = build_optimizer(model, recipe)
scaler = torch.amp.GradScaler("cuda", enabled=False)


def sync() -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def step() -> None:
    train_step(model, opt, scaler, x, y, device=dev, precision="bf16", loss_scale=1 / len(y))


for _ in range(10):
    step()
sync()
time.sleep(max(0.0, start - time.time()))
n, t = 0, time.time()
while time.time() < start + duration:
    step()
    n += 1
    if n % 10 == 0:
        sync()
sync()
print(f"{n * 128 / (time.time() - t):.0f} {graphs}")
