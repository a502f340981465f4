"""How our training throughput scales with the batch size and with processes (torchrun, gloo).

Batch sizes: ours (the path ``nin bench`` times) at each size in this process, the sizes alternating
within every repeat; each timed run covers about ``--images-per-run`` images. Processes: data-parallel
training as the engine runs it under torchrun (global batch ``--batch-size`` split over the ranks, DDP,
gloo), one fresh torchrun per run, the configurations alternating within every repeat; each
configuration is (processes, threads per process). Medians are reported.

    python benchmarks/scaling.py --data-dir ../shared/data --out results/bench/scaling.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nin.bench.runner import PAD, BenchConfig, OursTrainer, build_runner, fit_preprocess, load_images, timed, train_step
from nin.data import Augment, DeviceLoader
from nin.utils.allocator import TUNABLES
from nin.utils.atomic import atomic_write_text
from nin.utils.distributed import barrier, init_world, shutdown
from nin.utils.hardware import describe_hardware

PROCESS_CONFIGS = ((1, 1), (2, 1), (1, 2))  # (processes, threads each)


def batch_scaling(config: BenchConfig, sizes: list[int], images_per_run: int) -> dict[str, Any]:
    """Ours' training images/s at each batch size, the sizes interleaved."""
    device = torch.device(config.device)
    images, labels, _ = load_images(config)
    preprocess = fit_preprocess(images)
    runners: dict[int, OursTrainer] = {}
    for size in sizes:
        runner = build_runner("ours", images, labels, preprocess, replace(config, batch_size=size), device)
        assert isinstance(runner, OursTrainer)
        runner.train(2)
        runners[size] = runner
    runs: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(config.repeats):
        for size, runner in runners.items():
            steps = max(1, images_per_run // size)
            runs[size].append(steps * size / timed(lambda: runner.train(steps), device))
    return {str(size): {"images_per_s": v, "median_images_per_s": statistics.median(v),
                        "steps_per_run": max(1, images_per_run // size)} for size, v in runs.items()}


def worker(config: BenchConfig, out: str) -> None:
    """One torchrun rank: the engine's data-parallel step on its share of each global batch."""
    device = torch.device("cpu")
    world = init_world(device)
    images, labels, _ = load_images(config)
    runner = build_runner("ours", images, labels, fit_preprocess(images), config, device)
    assert isinstance(runner, OursTrainer)
    loader = DeviceLoader(runner.loader.images, runner.loader.labels, config.batch_size, seed=config.seed,
                          rank=world.rank, world_size=world.world_size, augment=Augment(PAD, flip=True),
                          device=device, channels_last=True)
    model: nn.Module = nn.parallel.DistributedDataParallel(runner.model) if world.distributed else runner.model
    model.train()

    def run(steps: int) -> None:
        for step, (x, y) in zip(range(steps), loader):
            global_n = min(config.batch_size, len(loader.labels) - step * config.batch_size)
            train_step(model, runner.optimizer, runner.scaler, x, y, device=device, precision="bf16",
                       loss_scale=world.world_size / global_n)
        barrier(world)

    run(2)
    seconds = timed(lambda: run(config.steps), device)
    if world.is_main:
        Path(out).write_text(json.dumps({"images_per_s": config.steps * config.batch_size / seconds,
                                         "world_size": world.world_size, "threads": torch.get_num_threads()}))
    shutdown(world)


def process_scaling(config: BenchConfig) -> dict[str, Any]:
    """Global images/s of torchrun runs with each (processes, threads) configuration, interleaved."""
    runs: dict[tuple[int, int], list[float]] = {c: [] for c in PROCESS_CONFIGS}
    args = ["--images", str(config.images), "--batch-size", str(config.batch_size), "--steps", str(config.steps)]
    args += ["--data-dir", config.data_dir] if config.data_dir else []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(config.repeats):
            for processes, threads in PROCESS_CONFIGS:
                out = Path(tmp) / "rank0.json"
                command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={processes}", __file__, "--worker", str(out), *args]
                env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"{shlex.join(command)} failed:\n{done.stderr[-3000:]}")
                runs[(processes, threads)].append(json.loads(out.read_text())["images_per_s"])
    return {f"{p} process(es) x {t} thread(s)": {"processes": p, "threads": t, "images_per_s": v,
                                                   "median_images_per_s": statistics.median(v)}
            for (p, t), v in runs.items()}


def _with_tuned_malloc() -> None:
    """Re-run this script under the allocator settings the ``nin`` CLI uses (see :mod:`nin.utils.allocator`)."""
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or platform.libc_ver()[0] != "glibc":
        return
    current = os.environ.get("GLIBC_TUNABLES")
    env = {**os.environ, "GLIBC_TUNABLES": f"{current}:{TUNABLES}" if current else TUNABLES}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="dataset root holding CIFAR-10 (default: random uint8 images)")
    parser.add_argument("--images", type=int, default=10_000, help="size of the data slice")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--images-per-run", type=int, default=2048, help="images per timed batch-size run")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch of the process runs")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per process run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/bench/scaling.json")
    parser.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)  # a torchrun rank writing to OUT
    args = parser.parse_args(argv)
    config = BenchConfig(steps=args.steps, repeats=args.repeats, batch_size=args.batch_size, images=args.images,
                         device="cpu", data_dir=args.data_dir, memory=False)
    if args.worker:
        worker(config, args.worker)
        return 0
    if argv is None:
        _with_tuned_malloc()
    tic = time.perf_counter()
    report = {
        "command": "python " + shlex.join(sys.argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": describe_hardware(torch.device("cpu")),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "config": asdict(config),
        "batch_sizes": batch_scaling(config, args.batch_sizes, args.images_per_run),
        "processes": process_scaling(config),
    }
    report["wall_time_s"] = time.perf_counter() - tic
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    for name, result in {**report["batch_sizes"], **report["processes"]}.items():
        print(f"{name:>28s}: {result['median_images_per_s']:7.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
