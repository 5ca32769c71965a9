"""The one device and thread-count policy for training, render and tagging (no Prefect, no tasks/)."""

from __future__ import annotations

import math
import os
import time

import torch


def resolve_device(name: str, local_rank: int = 0, key: str = "device") -> torch.device:
    """auto | cpu | cuda | cuda:N -> a torch.device; CUDA asked for but absent is a ValueError naming `key`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{key}: expected auto | cpu | cuda | cuda:N, got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key} is {name!r} but CUDA is not available (use auto or cpu)")
    return dev


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def busy_cores(window_s: float = 0.5) -> float:
    """Cores other processes keep busy, sampled from /proc/stat over `window_s` (0 where unreadable)."""
    def sample():
        with open("/proc/stat", encoding="ascii") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)  # total, idle + iowait (jiffies)

    try:
        total0, idle0 = sample()
        own0 = sum(os.times()[:2])
        time.sleep(window_s)
        total1, idle1 = sample()
        own1 = sum(os.times()[:2])
    except (OSError, ValueError, IndexError):
        return 0.0
    ticks = total1 - total0
    if ticks <= 0:
        return 0.0
    n = os.cpu_count() or 1
    busy = (ticks - (idle1 - idle0)) / ticks * n - (own1 - own0) / window_s
    return max(0.0, busy)


def choose_threads(threads: int, processes: int = 1) -> int:
    """`threads` when > 0; 0 = auto: this process's share of the cores, less every core that
    other work keeps busy (3/4 of a core or more counts as one), at least 1. OpenMP threads that
    share a core with another busy process wait on each other at every operation: on 2 cores
    with one other busy process, 1 thread ran a training step 2-5x faster than 2. On an idle
    machine auto is the core count, so the same inputs give the same weights (float sums depend
    on the thread count)."""
    if threads > 0:
        return threads
    free = cores() - math.floor(busy_cores() + 0.25)
    return max(1, free // max(1, processes))


def cpu_has_fast_bf16() -> bool:
    """The CPU computes bf16 convolutions natively (AVX512-BF16 or AMX through oneDNN): bf16
    autocast plus channels_last then trains ~1.5x faster than float32 (measured on a Zen 4 with
    2 cores); elsewhere bf16 is emulated and slower."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an op of oneDNN's Python binding: absent in other builds
        return False
