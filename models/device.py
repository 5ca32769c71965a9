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
    """Cores other processes keep busy, sampled from /proc/stat over `window_s` (0 where unreadable).
    For a log line only (busy_note): nothing that decides a result may depend on it."""
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
    """`threads` when > 0; 0 = auto: this process's share of the cores it may run on, at least 1.
    A function of the params and the machine only, never of the moment's load: float sums depend
    on the thread count, so the same params on the same machine give the same weights whatever
    else is running. (On 2 cores with one other busy process, 1 thread ran a training step 2-5x
    faster than 2: that is `loop.threads: 1`, a choice the params record; see `busy_note`.)"""
    if threads > 0:
        return threads
    return max(1, cores() // max(1, processes))


def busy_note(threads: int, window_s: float = 0.5) -> str | None:
    """A hint for the log when other work keeps cores busy that `threads` will share (the choice
    stays the user's: it changes the weights), else None."""
    busy = math.floor(busy_cores(window_s) + 0.25)
    if threads < 2 or busy < 1 or cores() - busy >= threads:
        return None
    return (f"other work keeps ~{busy} of {cores()} cores busy; training on {threads} threads shares them (slower). "
            f"`loop.threads: {max(1, cores() - busy)}` may be faster on a busy machine, at the cost of other bytes "
            "(float sums depend on the thread count)")


def cpu_has_fast_bf16() -> bool:
    """The CPU computes bf16 convolutions natively (AVX512-BF16 or AMX through oneDNN): bf16
    autocast plus channels_last then trains ~1.5x faster than float32 (measured on a Zen 4 with
    2 cores); elsewhere bf16 is emulated and slower."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an op of oneDNN's Python binding: absent in other builds
        return False
