"""Training images/s of NIN-CIFAR10 (bf16, channels_last, batch 128) on random data in a shared time window."""
import sys, time
import torch
from nin import create_model

start, duration = float(sys.argv[1]), float(sys.argv[2])
dev = torch.device("cuda")
model = create_model("nin_cifar10").to(dev).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
x = torch.randn(128, 3, 32, 32, device=dev).to(memory_format=torch.channels_last)
y = torch.randint(0, 10, (128,), device=dev)


def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


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
