"""`nin bench`: our training and inference path against a plain PyTorch port, timed in one process.

Ours is the engine's path (device-resident data through :class:`~nin.data.DeviceLoader` with batched
augmentation, channels_last, bf16 autocast, SGD over :func:`nin.param_groups`); the reference is
:mod:`nin.bench.reference`. Both train the same NIN-CIFAR10 from the same initial weights on the same
images, and their timed runs alternate (reference, ours, reference, ours, ...) so that a load change on
a shared machine hits both sides alike; the report gives medians. Peak memory is the RSS high-water mark
of a fresh subprocess per side and phase, so neither side pays for the other's buffers. The machine's
peak is measured here too, as large fp32 and bf16 matrix products (bf16 only where ours runs in it).
"""
from __future__ import annotations

import json
import os
import pickle
import platform
import resource
import shlex
import statistics
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from torch import nn

from nin.bench.layers import conv_bound, conv_layers, profile_step
from nin.bench.reference import PAD, ReferenceTrainer, reference_loader
from nin.bench.timing import timed
from nin.data import Augment, DatasetError, DeviceLoader, Pipeline, build_pipeline, load_dataset
from nin.errors import NinError
from nin.inference.evaluate import autocast, resident_dtype
from nin.inference.quantize import QuantizationError, quantize_int8
from nin.models import create_model, param_groups, profile_model
from nin.train.engine import resolve_device, train_step
from nin.train.graphs import graph_training_forward
from nin.train.optimizer import sgd
from nin.utils.atomic import atomic_write_text
from nin.utils.hardware import describe_hardware, slow_bf16_warning

MODEL = "nin_cifar10"
INPUT_SIZE = (3, 32, 32)
LR, MOMENTUM, WEIGHT_DECAY = 0.02, 0.9, 5e-4  # fixed for comparable measurements (the cifar10 recipe before 2026-11-30)
TARGETS = {"train": 4.0, "inference": 4.0}  # ours / reference, images per second
SIDES = ("reference", "ours")
PHASES = ("train", "inference")
WARMUP_STEPS = 2
INT8_CALIBRATION = 512  # images


class BenchError(NinError, ValueError):
    """A ``nin bench`` option that cannot work on this machine."""


@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark run measures; every field is a ``nin bench`` option."""

    steps: int = 20  # training steps per timed run; inference runs cover steps × batch_size images
    repeats: int = 5
    batch_size: int = 128
    eval_batch_size: int = 500  # ours; the reference infers in batches of batch_size, as a port's test loop
    precision: str = "bf16"  # ours' training: bf16 autocast, or fp32 (where bf16 is emulated: slow_bf16_warning)
    inference_precision: str = "bf16"  # ours: bf16 autocast, fp32, or "int8" (a quantized copy, CPU only)
    images: int = 10_000  # the data slice: the first training images, or random ones
    device: str = "auto"
    data_dir: str | None = None  # None: random uint8 images
    compile: bool = False
    cuda_graphs: bool = False  # ours: the training step's forward and backward as a CUDA graph (nin.train.graphs)
    threads: int | None = None
    memory: bool = True
    matmul_size: int | None = None  # None: 3072 on a CPU, 8192 on a GPU
    layers: bool = True  # time each convolution alone and profile one step (nin.bench.layers)
    seed: int = 0

    def to_args(self) -> list[str]:
        """The ``nin bench`` options that reproduce this configuration."""
        args = ["--steps", str(self.steps), "--repeats", str(self.repeats), "--batch-size", str(self.batch_size),
                "--eval-batch-size", str(self.eval_batch_size), "--images", str(self.images),
                "--device", self.device, "--seed", str(self.seed), "--precision", self.precision,
                "--inference-precision", self.inference_precision]
        if self.data_dir is not None:
            args += ["--data-dir", self.data_dir]
        if self.threads is not None:
            args += ["--threads", str(self.threads)]
        if self.matmul_size is not None:
            args += ["--matmul-size", str(self.matmul_size)]
        if self.compile:
            args.append("--compile")
        if self.cuda_graphs:
            args.append("--cuda-graphs")
        if not self.memory:
            args.append("--no-memory")
        if not self.layers:
            args.append("--no-layers")
        return args


def _epochs(loader: DeviceLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


class OursTrainer:
    """The engine's path: standardized images resident on the device, batched zero-pad-4 crops and flips,
    channels_last, bf16 autocast (or fp32), SGD with the model's parameter groups; inference in eval mode under
    ``torch.inference_mode`` in batches of ``eval_batch_size``."""

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, preprocess: Pipeline,
                 eval_images: int, config: BenchConfig, device: torch.device) -> None:
        precision = config.precision
        self.preprocess = preprocess
        resident = self.preprocess.transform(images).to(resident_dtype(precision))
        self.loader = DeviceLoader(resident, labels, config.batch_size, seed=config.seed,
                                   augment=Augment(PAD, flip=True), device=device, channels_last=True)
        self.model = model.to(device).to(memory_format=torch.channels_last)
        if config.cuda_graphs:
            graph_training_forward(self.model, self.loader.capture_batch(), precision)
        self.forward: nn.Module = torch.compile(self.model) if config.compile else self.model
        self.optimizer = sgd(param_groups(self.model, LR, WEIGHT_DECAY), lr=LR, momentum=MOMENTUM)
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)
        self.device = device
        self.precision = precision
        self.eval_batch_size = config.eval_batch_size
        self.eval_images = self.loader.images[:eval_images]
        self.inference_images = eval_images
        self.batches = _epochs(self.loader)
        if config.inference_precision == "int8" and device.type != "cpu":
            raise QuantizationError("int8 inference runs on x86 CPUs only; use --device cpu or bf16")
        self.inference_precision = config.inference_precision
        self.int8: nn.Module | None = None  # made at the first inference (a warm-up), so training never holds it

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return train_step(self.forward, self.optimizer, self.scaler, x, y, device=self.device,
                          precision=self.precision, loss_scale=1.0 / len(y))

    def train(self, steps: int) -> None:
        self.model.train()
        for _ in range(steps):
            self.step(*next(self.batches))

    @torch.inference_mode()
    def infer(self) -> None:
        if self.inference_precision == "int8" and self.int8 is None:
            with torch.inference_mode(False):  # the weights as they are now: timing does not depend on them
                self.int8 = quantize_int8(self.model, self.eval_images[:INT8_CALIBRATION])
        if self.int8 is not None:
            for chunk in self.eval_images.split(self.eval_batch_size):
                self.int8(chunk.float())
            return
        self.model.eval()
        fp32 = self.inference_precision == "fp32"
        with autocast(self.device, self.inference_precision):
            for chunk in self.eval_images.split(self.eval_batch_size):
                chunk = chunk.float() if fp32 else chunk  # data resident in bf16 for bf16 training
                self.forward(chunk.contiguous(memory_format=torch.channels_last))


Runner = ReferenceTrainer | OursTrainer


def load_images(config: BenchConfig) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``config.images`` CIFAR-10 training images under ``data_dir``, else random uint8 images."""
    if config.data_dir is None:
        g = torch.Generator().manual_seed(config.seed)
        images = torch.randint(0, 256, (config.images, *INPUT_SIZE), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 10, (config.images,), generator=g)
        return images, labels, f"{config.images:,} random uint8 images"
    data = load_dataset("cifar10", "train", root=config.data_dir)
    if config.images > len(data):
        raise DatasetError(f"--images {config.images} is more than the {len(data):,} images of {data.description}")
    # copies, so that the rest of the split is freed
    return data.images[:config.images].clone(), data.labels[:config.images].clone(), \
        f"the first {config.images:,} of {data.description}"


def fit_preprocess(images: torch.Tensor) -> Pipeline:
    """Per-channel standardization fitted on the slice: our preprocessing and the port's Normalize
    constants. Fitted once, outside both sides, so that neither side's memory counts the fit."""
    return build_pipeline(["unit", "standardize"]).fit(images)


def build_runner(side: str, images: torch.Tensor, labels: torch.Tensor, preprocess: Pipeline, config: BenchConfig,
                 device: torch.device) -> Runner:
    """One side, with NIN-CIFAR10 initialized from ``config.seed`` (the same weights for both sides)."""
    torch.manual_seed(config.seed)
    model = create_model(MODEL, packed_dropout=side == "ours")  # the same weights; ours draws packed masks
    eval_images = min(len(images), config.steps * config.batch_size)
    if side == "ours":
        return OursTrainer(model, images, labels, preprocess, eval_images, config, device)
    standardize = preprocess.steps[-1]
    train = reference_loader(images, labels, config.batch_size, standardize.mean, standardize.std, train=True,
                             seed=config.seed)
    test = reference_loader(images[:eval_images], labels[:eval_images], config.batch_size, standardize.mean,
                            standardize.std, train=False)
    return ReferenceTrainer(model, train, test, device, LR, MOMENTUM, WEIGHT_DECAY)


PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def ours_peaks(precision: str, inference_precision: str) -> dict[str, str]:
    """The peak each phase of ours is set against: its own precision's (int8 inference against bf16's)."""
    return {"train": precision, "inference": "fp32" if inference_precision == "fp32" else "bf16"}


class PeakMeter:
    """The machine's peak: GFLOP/s of the fastest n×n matrix product per dtype (fp32, bf16) over every
    :meth:`measure` call. The fastest, since a shared machine only ever slows a product down; calls spread
    over a run catch its quietest moments."""

    def __init__(self, device: torch.device, n: int | None = None, dtypes: Iterable[str] = PEAK_DTYPES) -> None:
        self.device = device
        self.n = n or (8192 if device.type == "cuda" else 3072)
        wanted = set(dtypes)
        self.operands = {name: (torch.randn(self.n, self.n, device=device).to(PEAK_DTYPES[name]),
                                torch.randn(self.n, self.n, device=device).to(PEAK_DTYPES[name]))
                         for name in PEAK_DTYPES if name in wanted}
        for a, b in self.operands.values():
            a @ b  # warm-up
        self.seconds: dict[str, list[float]] = {name: [] for name in self.operands}

    def measure(self, tries: int = 1) -> None:
        for _ in range(tries):
            for name, (a, b) in self.operands.items():
                self.seconds[name].append(timed(lambda: a @ b, self.device))

    def report(self) -> dict[str, Any]:
        return {"matrix_size": self.n, "tries": len(self.seconds["fp32"]),
                **{f"{name}_gflops": 2 * self.n ** 3 / min(s) / 1e9 for name, s in self.seconds.items()}}


def _peak_rss_mib() -> float:
    """This process's RSS high-water mark. Linux: VmHWM, which starts afresh at exec; ``ru_maxrss`` would
    carry over the parent's peak, since the child runs on the parent's memory between fork and exec."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _measure(runner: Runner, phase: str, config: BenchConfig, device: torch.device) -> float:
    """Images per second of one timed run of ``phase``."""
    if phase == "train":
        return config.steps * config.batch_size / timed(lambda: runner.train(config.steps), device)
    return runner.inference_images / timed(runner.infer, device)


def _warm_up(runner: Runner, phase: str) -> None:
    if phase == "train":
        runner.train(WARMUP_STEPS)
    else:
        runner.infer()


def _apply_threads(config: BenchConfig) -> None:
    if config.threads is not None:
        torch.set_num_threads(config.threads)


def run_side(config: BenchConfig, side: str, phase: str, images: np.ndarray, labels: np.ndarray,
             preprocess: Pipeline) -> dict[str, Any]:
    """One side and phase alone in this process (warm-up, then one timed run): its peak memory.

    Meant for a fresh process (:func:`run_side_in_fresh_process`), where the high-water mark counts
    only the interpreter, torch, the data slice and this side's work."""
    startup = _peak_rss_mib()
    _apply_threads(config)
    device = resolve_device(config.device)
    runner = build_runner(side, torch.from_numpy(images), torch.from_numpy(labels), preprocess, config, device)
    _warm_up(runner, phase)
    result = {"side": side, "phase": phase, "startup_rss_mib": startup,
              "images_per_s": _measure(runner, phase, config, device), "peak_rss_mib": _peak_rss_mib()}
    if device.type == "cuda":  # everything this process allocated on the GPU, data included
        result["peak_device_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return result


def side_main() -> None:
    """Entry point of a fresh process: the arguments of :func:`run_side` pickled on stdin, its result
    as one JSON line on stdout."""
    print(json.dumps(run_side(*pickle.load(sys.stdin.buffer))))


def run_side_in_fresh_process(config: BenchConfig, side: str, phase: str, images: torch.Tensor,
                              labels: torch.Tensor, preprocess: Pipeline) -> dict[str, Any]:
    """:func:`run_side` in a new interpreter (same environment), given the data slice and the fitted
    preprocessing, so that the child neither loads nor fits (nor counts) anything else."""
    payload = pickle.dumps((config, side, phase, images.numpy(), labels.numpy(), preprocess))
    command = [sys.executable, "-c", "from nin.bench.runner import side_main; side_main()"]
    done = subprocess.run(command, input=payload, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {side} {phase} memory run failed:\n{done.stderr.decode()[-3000:]}")
    return json.loads(done.stdout.decode().splitlines()[-1])


def _summary(values: list[float], flop_per_image: float, peaks: dict[str, Any]) -> dict[str, Any]:
    median = statistics.median(values)
    gflops = median * flop_per_image / 1e9
    return {"images_per_s": values, "median_images_per_s": median, "gflops": gflops,
            **{f"fraction_of_{name}_peak": gflops / peaks[f"{name}_gflops"] for name in PEAK_DTYPES
               if f"{name}_gflops" in peaks}}


def _memory(config: BenchConfig, images: torch.Tensor, labels: torch.Tensor, preprocess: Pipeline) -> dict[str, Any]:
    memory: dict[str, Any] = {}
    for phase in PHASES:
        sides = {side: run_side_in_fresh_process(config, side, phase, images, labels, preprocess) for side in SIDES}
        key = "peak_device_mib" if "peak_device_mib" in sides["ours"] else "peak_rss_mib"
        ratio = sides["ours"][key] / sides["reference"][key]
        memory[phase] = {**sides, "measure": key, "ratio": ratio, "met": ratio <= 1.0}
    return memory


def run_benchmark(config: BenchConfig, command: str | None = None) -> dict[str, Any]:
    """Time both sides (interleaved), measure the machine's peak and each side's memory: the report."""
    _apply_threads(config)
    device = resolve_device(config.device)
    if config.cuda_graphs and device.type != "cuda":
        raise BenchError("--cuda-graphs needs a CUDA GPU; use --device cuda on a machine with one, or leave "
                         "--cuda-graphs out")
    images, labels, description = load_images(config)
    slow = slow_bf16_warning(device, "bf16", remedy="--precision fp32 --inference-precision fp32 measure ours at "
                             "its speed here") if "bf16" in (config.precision, config.inference_precision) else None
    if slow:  # after the errors of bad options, which stand alone, and before the long run
        print(f"nin bench: warning: {slow}", file=sys.stderr)
    preprocess = fit_preprocess(images)
    runners = {side: build_runner(side, images, labels, preprocess, config, device) for side in SIDES}
    macs = profile_model(create_model(MODEL), INPUT_SIZE).multiply_adds
    flop = {"train": 3 * 2 * macs, "inference": 2 * macs}
    # the reference's fp32 peak, and bf16's only where ours is set against it: a CPU that emulates bf16 takes
    # minutes a product
    meter = PeakMeter(device, config.matmul_size,
                      {"fp32", *ours_peaks(config.precision, config.inference_precision).values()})
    meter.measure(tries=3)
    for runner in runners.values():
        for phase in PHASES:
            _warm_up(runner, phase)
    runs: dict[str, dict[str, list[float]]] = {phase: {side: [] for side in SIDES} for phase in PHASES}
    for _ in range(config.repeats):
        for phase in PHASES:
            for side in SIDES:
                runs[phase][side].append(_measure(runners[side], phase, config, device))
        meter.measure()
    peaks = meter.report()
    report: dict[str, Any] = {
        "command": command or "nin bench " + shlex.join(config.to_args()),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": describe_hardware(device),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "python": platform.python_version(),
        "config": asdict(config),
        "data": description,
        "model": {"name": MODEL, "multiply_adds_per_image": macs, "train_flop_per_image": flop["train"],
                  "inference_flop_per_image": flop["inference"]},
        "peak": peaks,
    }
    for phase in PHASES:
        sides = {side: _summary(runs[phase][side], flop[phase], peaks) for side in SIDES}
        ratio = sides["ours"]["median_images_per_s"] / sides["reference"]["median_images_per_s"]
        report[phase] = {**sides, "ratio": ratio, "target": TARGETS[phase], "met": ratio >= TARGETS[phase]}
    if config.layers:
        ours = runners["ours"]
        layers = conv_layers(ours.model, (config.batch_size, *INPUT_SIZE))
        bound = conv_bound(layers, ours.precision, channels_last=True, device=device, repeats=config.repeats)
        trained = report["train"]["ours"]
        trained["fraction_of_conv_peak"] = trained["gflops"] / bound["peak_gflops"]
        trained["fraction_of_conv_bound"] = trained["median_images_per_s"] / bound["convolutions_only_images_per_s"]
        report["convolutions"] = bound
        if device.type == "cpu":
            ours.model.train()  # conv_layers left it in eval mode
            report["profile"] = profile_step(lambda: ours.train(1), ours.model, layers)
    if config.memory:
        report["memory"] = _memory(config, images, labels, preprocess)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a short table for the terminal."""
    config, peak = report["config"], report["peak"]
    # records from before fp32 was a choice ran bf16
    ours_precision = ours_peaks(config.get("precision", "bf16"), config.get("inference_precision", "bf16"))
    lines = [
        f"NIN-CIFAR10 on {report['hardware']}",
        f"data: {report['data']}",
        f"batch {config['batch_size']} (ours' inference: {config['eval_batch_size']}, "
        f"{config.get('inference_precision', 'bf16')}); threads: {report['threads']}; "
        f"{config['steps']} steps × {config['repeats']} repeats, reference and ours alternating; medians"
        + ("; ours torch.compile'd" if config["compile"] else "")
        + ("; ours CUDA-graphed" if config.get("cuda_graphs") else ""),
        f"peak: fp32 {peak['fp32_gflops']:.0f} GFLOP/s, "
        + (f"bf16 {peak['bf16_gflops']:.0f} GFLOP/s " if "bf16_gflops" in peak
           else "bf16 not measured (ours runs in fp32) ")
        + f"(fastest of {peak['tries']} {peak['matrix_size']}² matrix products each, spread over the run)",
        f"{'':22s} {'reference':>10s} {'ours':>10s} {'ours/ref':>9s} {'target':>7s}",
    ]
    for phase in PHASES:
        r, o, result = report[phase]["reference"], report[phase]["ours"], report[phase]
        target = f"≥{result['target']:g}×"
        lines.append(f"{phase + ' images/s':22s} {r['median_images_per_s']:10.1f} {o['median_images_per_s']:10.1f} "
                     f"{result['ratio']:8.2f}× {target:>7s} {'met' if result['met'] else 'MISSED'}")
        lines.append(f"{phase + ' GFLOP/s':22s} {r['gflops']:10.1f} {o['gflops']:10.1f}   "
                     f"(reference {100 * r['fraction_of_fp32_peak']:.0f}% of the fp32 peak, ours "
                     f"{100 * o['fraction_of_' + ours_precision[phase] + '_peak']:.0f}% of the "
                     f"{ours_precision[phase]} peak)")
    if "convolutions" in report:
        bound, ours = report["convolutions"], report["train"]["ours"]
        lines.append(f"convolutions alone ({bound['precision']}, batch {bound['batch']}, forward + backward, each "
                     f"layer's fastest of {config['repeats']}):")
        for r in bound["layers"]:
            lines.append(f"  {r['shape']:24s} forward {r['forward_gflops']:6.0f} GFLOP/s, backward "
                         f"{r['backward_gflops']:6.0f} GFLOP/s, {1e3 * (r['forward_s'] + r['backward_s']):7.1f} ms")
        lines.append(f"convolution peak {bound['peak_gflops']:.0f} GFLOP/s ({bound['peak_layer']}, forward): ours "
                     f"trains at {100 * ours['fraction_of_conv_peak']:.0f}% of it; a step of convolutions alone would "
                     f"do {bound['convolutions_only_images_per_s']:.0f} images/s, ours does "
                     f"{100 * ours['fraction_of_conv_bound']:.0f}% of that")
    if "profile" in report:
        profile = report["profile"]
        lines.append(f"one training step of ours, {1e3 * profile['wall_s_per_step']:.1f} ms (torch.profiler, self "
                     "CPU time by layer and job):")
        for name, seconds in profile["seconds_per_step"].items():
            lines.append(f"  {name:40s} {1e3 * seconds:7.1f} ms")
    for phase, m in report.get("memory", {}).items():
        unit = "GPU MiB" if m["measure"] == "peak_device_mib" else "RSS MiB"
        lines.append(f"{phase + ' peak ' + unit:22s} {m['reference'][m['measure']]:10.0f} "
                     f"{m['ours'][m['measure']]:10.0f} {m['ratio']:8.2f}× {'≤1×':>7s} {'met' if m['met'] else 'MISSED'}")
    if "memory" in report:
        lines.append("(peak memory: a fresh process per side and phase)")
    return "\n".join(lines)


def bench_command(config: BenchConfig, command: str, json_out: str | None = None) -> str:
    """``nin bench``: run the comparison, write the JSON report if asked; the table to print."""
    report = run_benchmark(config, command)
    if json_out:
        atomic_write_text(json_out, json.dumps(report, indent=2) + "\n")
    return format_report(report)
