"""A throwaway copy of the project (code, dvc.yaml, params) for DVC and Prefect end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT, SHARED, deep_update

VENV_BIN = str(Path(sys.executable).parent)

# A configuration small enough for CPU: the real illustrations, the real cascade, a tiny GAN.
TINY = {
    "fetch": {"cascade": {"mirrors": [str(SHARED / "models" / "lbpcascade_animeface.xml")]}},
    "scrape": {"source": "folder", "folder": str(SHARED / "data" / "real"), "filters": {"min_width": 256, "min_height": 256}},
    "detect": {"workers": 1, "min_face": 80, "box_scale": 1.5},
}

# The whole DAG at test size: TINY plus a tiny GAN trained for a few steps.
TINY_DAG = {
    "train": {"model": {"g_channels": 8, "g_blocks": 1, "g_up_channels": [], "d_channels": [8, 16, 32]},
              "optim": {"batch": 8},
              "loop": {"steps": 4, "checkpoint_every": 2, "log_every": 2, "threads": 1, "progress": False}},
    "render": {"eval_samples": 16, "batch": 16, "grid": 2, "variations": 2},
}


def env(extra: dict | None = None) -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{VENV_BIN}{os.pathsep}{e.get('PATH', '')}"
    e["DVC_NO_ANALYTICS"] = "1"
    e.update(extra or {})
    return e


def run(cmd: list[str], cwd: Path, timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=kw.pop("env", env()), capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def make_copy(dest: Path, params: dict | None = None) -> Path:
    """Copy the tracked and untracked-not-ignored files into dest, as a fresh git repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if not src.is_file() or f.startswith("web/node_modules/") or f == "dvc.lock":
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / f)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(deep_update(base, deep_update(TINY, params or {})), sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(["git", "init", "-q"], dest)
    run(git + ["add", "-A"], dest)
    run(git + ["commit", "-qm", "copy"], dest)
    run(["dvc", "config", "--local", "core.site_cache_dir", str(dest / ".dvc" / "site-cache")], dest)
    return dest
