"""A short description of the machine a run used, for the results record; whether it runs bf16 at speed."""
from __future__ import annotations

import os
import platform

import torch


def cpu_name(cpuinfo: str) -> str:
    """The CPU's name from the text of /proc/cpuinfo, with its family and model numbers where the kernel gives them.

    Virtual machines often report a bare "AMD EPYC" for processors whose speeds differ twofold (one CIFAR-10 run
    trained 478 images/s on one and 245 on another, family 25 model 17, a Zen 4), so the numbers keep such records
    apart.
    """
    first_processor = cpuinfo.split("\n\n", 1)[0]  # the kernel gives one block per logical processor
    lines = (line.partition(":") for line in first_processor.splitlines())
    fields = {key.strip(): value.strip() for key, _, value in lines}
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def describe_hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read()
    except OSError:  # not Linux
        cpuinfo = ""
    cpu = cpu_name(cpuinfo)
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"


def bf16_is_emulated(device: torch.device) -> bool:
    """Whether ``device`` is a CPU without the instructions oneDNN's bf16 kernels need (AVX-512 or AMX; an AMD Zen 3
    has AVX2 only): PyTorch then emulates bf16, slower than fp32 by a multiple (``results/bench/cpu.md``)."""
    return device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported()


def slow_bf16_warning(device: torch.device, precision: str,
                      remedy: str = "--precision fp32 runs faster here (its numbers differ slightly from a bf16 "
                                    "run's)") -> str | None:
    """A warning for bf16 asked of a CPU that emulates it: the recipes ask for bf16, which is fast on the CPUs
    they were measured on, so a user elsewhere would otherwise train many times slower without knowing why."""
    if precision != "bf16" or not bf16_is_emulated(device):
        return None
    return ("this CPU has no bf16 instructions (AVX-512 or AMX), so PyTorch emulates bf16, many times slower than "
            f"fp32; {remedy}")
