"""Measuring helpers for bench/scale.py: a command's wall, CPU and peak memory (its whole process
tree), the time at which given log lines appeared, bytes and files on disk, and DVC's record of a
stage's outs. Nothing here imports the project: the stages are reached through `dvc repro` only."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import yaml


@dataclass
class Measured:
    cmd: list[str]
    rc: int
    wall_s: float
    cpu_s: float  # user + system of the command and every descendant it waited for
    max_rss_mb: float  # the largest single process of the tree (the kernel's ru_maxrss, via GNU time: exact)
    tree_rss_mb: float  # the largest sum of RSS over the whole tree, sampled (shared pages counted per process)
    marks: dict[str, float] = field(default_factory=dict)  # pattern -> seconds after the start of its first line
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and at the end
    machine: dict = field(default_factory=dict)  # the whole machine's CPU meanwhile (cpu_share)
    tail: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("tail")
        return d


TIME = "/usr/bin/time"  # GNU time (Debian's `time` package)


def _tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def cpu_share(before, after, wall_s: float, own_cpu_s: float) -> dict:
    """What the machine's cores did while a command ran, from two psutil.cpu_times(): the share of
    cores x wall the hypervisor took (steal: a slower machine, not a slower stage), spent waiting on
    disk (iowait), and idle, and the CPU seconds of every other process (busy minus the command's)."""
    d = {k: getattr(after, k) - getattr(before, k) for k in after._fields}
    busy = sum(d.get(k, 0.0) for k in ("user", "nice", "system", "irq", "softirq"))
    span = max(wall_s * (psutil.cpu_count() or 1), 1e-9)
    return {"steal_share": round(d.get("steal", 0.0) / span, 4), "iowait_share": round(d.get("iowait", 0.0) / span, 4),
            "idle_share": round(d.get("idle", 0.0) / span, 4), "others_cpu_s": round(max(0.0, busy - own_cpu_s), 1)}


def _gnu_time(path: Path) -> tuple[float, float]:
    """(max RSS in MB, user + system seconds) from GNU time's `-f "%M %U %S"` file (its last line)."""
    kb, user, system = path.read_text().strip().splitlines()[-1].split()
    return int(kb) / 1024, float(user) + float(system)


def measured(cmd: list[str], cwd: Path, env: dict, log_path: Path, marks: dict[str, str] | None = None,
             sample_s: float = 0.2, check: bool = True) -> Measured:
    """Run cmd (stdout and stderr into log_path), measuring it and its whole process tree.
    `marks`: name -> regex; the seconds from the start to the first output line matching each.

    The peak RSS comes from GNU time, which runs cmd: a process's ru_maxrss starts at its parent's peak
    RSS (Linux carries it over fork and exec), so cmd must be the child of a small process, never of
    this one, whose own peak would be reported instead."""
    if not os.access(TIME, os.X_OK):
        raise RuntimeError(f"{TIME} (GNU time) is needed: apt-get install time")
    load0 = os.getloadavg()[0]
    cpu0 = psutil.cpu_times()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    rusage = log_path.with_suffix(".rusage")
    t0 = time.perf_counter()
    proc = subprocess.Popen([TIME, "-f", "%M %U %S", "-o", str(rusage), *cmd], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            done.wait(sample_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    found: dict[str, float] = {}
    pats = {k: re.compile(v) for k, v in (marks or {}).items()}
    tail: list[str] = []
    with open(log_path, "w", encoding="utf-8", errors="replace") as log:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            now = time.perf_counter() - t0
            log.write(line)
            tail = (tail + [line])[-40:]
            for k, p in pats.items():
                if k not in found and p.search(line):
                    found[k] = round(now, 3)
    proc.wait()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    max_rss, cpu = _gnu_time(rusage)
    m = Measured(cmd, proc.returncode, round(wall, 3), round(cpu, 2), round(max_rss, 1), round(peak[0] / 2**20, 1),
                 found, (round(load0, 2), round(os.getloadavg()[0], 2)), cpu_share(cpu0, psutil.cpu_times(), wall, cpu),
                 "".join(tail))
    if check and m.rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {m.rc} (log {log_path}):\n{m.tail}")
    return m


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


@dataclass
class Usage:
    files: int = 0
    bytes: int = 0  # apparent size
    disk: int = 0  # blocks on disk, each inode once (hard links are not counted twice)

    def __add__(self, o: "Usage") -> "Usage":
        return Usage(self.files + o.files, self.bytes + o.bytes, self.disk + o.disk)


def usage(paths, seen: set | None = None) -> Usage:
    """Files, bytes and disk blocks under the given paths (files or directories)."""
    seen = set() if seen is None else seen
    u = Usage()
    stack = [Path(p) for p in paths]
    while stack:
        p = stack.pop()
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if p.is_dir() and not p.is_symlink():
            with os.scandir(p) as it:
                stack.extend(Path(e.path) for e in it)
            continue
        u.files += 1
        u.bytes += st.st_size
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            u.disk += st.st_blocks * 512
    return u


def lock_outs(project: Path, stage: str) -> list[dict]:
    """The stage's outs as dvc.lock records them: path, size, nfiles (1 for a file)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    outs = lock["stages"].get(stage, {}).get("outs", [])
    return [{"path": o["path"], "size": o.get("size", 0), "nfiles": o.get("nfiles", 1)} for o in outs]


def tracked_files(project: Path) -> int:
    """Files DVC tracks in the workspace: every file out, and every file of every directory out."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return sum(o.get("nfiles", 1) for s in lock["stages"].values() for o in s.get("outs", []))


def cache_objects(project: Path) -> Usage:
    return usage([project / ".dvc" / "cache" / "files"])


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def cpu_model() -> str:
    """The CPU's model name and its AVX-512 flags (float kernels, so trained weights, can differ between
    CPU models with the same thread count)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "?"
    name = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    avx512 = sorted(f for f in (flags.group(1).split() if flags else []) if f.startswith(("avx512", "amx")))
    return f"{name.group(1).strip() if name else '?'} ({' '.join(avx512) or 'no avx512'})"


def machine() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_1m": round(os.getloadavg()[0], 2)}


PROJECT_FRAME = re.compile(r"\((?:.*/)?(?:tasks|models|flows)/[^:]*:\d+\)$")
DVC_FRAME = re.compile(r"\((?:.*/)?(?:dvc|dvc_data|dvc_objects)/[^:]*:\d+\)$")


def pyspy_summary(raw_path: Path, top: int = 25) -> str:
    """A text summary of py-spy's raw (collapsed) stacks: samples per process; the project's functions
    with the most samples including their callees; the lines where samples end (any code)."""
    per_proc: dict[str, int] = {}
    incl: dict[str, int] = {}
    dvc: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        proc = frames[0] if frames[0].startswith("process ") else "?"
        frames = frames[1:] if proc != "?" else frames
        key = re.sub(r"^process \d+:", "", proc).strip('"')[:70]
        per_proc[key] = per_proc.get(key, 0) + n
        funcs = {re.sub(r":\d+\)$", ")", f) for f in frames if PROJECT_FRAME.search(f)}
        for f in funcs:
            incl[f] = incl.get(f, 0) + n
        for f in {re.sub(r":\d+\)$", ")", f) for f in frames if DVC_FRAME.search(f)}:
            dvc[f] = dvc.get(f, 0) + n
        if frames:
            leaf[frames[-1]] = leaf.get(frames[-1], 0) + n

    def block(title: str, d: dict[str, int], k: int) -> list[str]:
        rows = sorted(d.items(), key=lambda kv: -kv[1])[:k]
        return ["", title] + [f"  {v:7d} {v / max(total, 1):6.1%}  {name}" for name, v in rows]

    out = [f"{total} samples (py-spy, CPU only: idle threads are not sampled)"]
    out += block("samples by process:", per_proc, 12)
    out += block("project functions, with their callees:", incl, top)
    out += block("DVC's functions, with their callees:", dvc, 15)
    out += block("lines where the samples end (any code):", leaf, top)
    return "\n".join(out) + "\n"
