"""Timing that means the same on a CPU and a GPU."""
from __future__ import annotations

import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn`` takes: wall clock on a CPU, CUDA events (all queued work included) on a GPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic
