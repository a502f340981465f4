"""A short description of the machine a run used, for the results record."""
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
