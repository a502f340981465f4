"""Training images/s of NIN-CIFAR10 (bf16, channels_last, batch 128) on random data in a shared time window.

Times the training loop's own step (``nin.train.engine.train_step``), as ``nin bench`` does."""
import sys
import time

import torch

from nin import create_model
from nin.train.engine import train_step

start, duration = float(sys.argv[1]), float(sys.argv[2])
dev = torch.device("cuda")
model = create_model("nin_cifar10").to(dev).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
scaler = torch.amp.GradScaler("cuda", enabled=False)
x = torch.randn(128, 3, 32, 32, device=dev).to(memory_format=torch.channels_last)
y = torch.randint(0, 10, (128,), device=dev)


def step() -> None:
    train_step(model, opt, scaler, x, y, device=dev, precision="bf16", loss_scale=1 / len(y))


while time.time() < start:
    step()
torch.cuda.synchronize()
n, t = 0, time.time()
while time.time() < start + duration:
    step()
    n += 1
    if n % 10 == 0:
        torch.cuda.synchronize()
torch.cuda.synchronize()
print(f"{n * 128 / (time.time() - t):.0f}")
