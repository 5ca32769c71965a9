"""Atomic checkpoints: `checkpoints/step-NNNNNNNN/` holds weights.safetensors (G, D, EMA of G)
and state.pt (optimisers, step, every RNG state, resolved config, package version);
`latest.json` names the newest complete one. A checkpoint directory is written under a
temporary name and renamed in one step, so a kill at any moment leaves the last one intact."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from importlib import metadata
from pathlib import Path

import torch
from safetensors.torch import load_file

from tasks.fileio import atomic_write_bytes, atomic_write_json, safetensors_bytes

log = logging.getLogger(__name__)
LATEST = "latest.json"


def package_version() -> str:
    try:
        return metadata.version("moeflow")
    except metadata.PackageNotFoundError:
        return "unknown"


def flat_state(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def params_digest(*modules: torch.nn.Module) -> str:
    """sha256 over the modules' parameters (names and bytes, in order): the same on every DDP rank
    while the ranks are in sync (buffers are left out: BatchNorm statistics are per rank)."""
    h = hashlib.sha256()
    for m in modules:
        for name, p in m.named_parameters():
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def split_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def save_weights(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    atomic_write_bytes(path, safetensors_bytes(tensors, meta))


def save(root: str | os.PathLike, step: int, tensors: dict[str, torch.Tensor], state: dict, keep: int) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / "weights.safetensors").write_bytes(safetensors_bytes(tensors, {"step": str(step), "version": package_version()}))
    torch.save(state, tmp / "state.pt")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    atomic_write_json(root / LATEST, {"step": step, "dir": final.name})
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: str | os.PathLike) -> Path | None:
    root = Path(root)
    pointer = root / LATEST
    if pointer.exists():
        d = root / json.loads(pointer.read_text())["dir"]
        if (d / "state.pt").exists() and (d / "weights.safetensors").exists():
            return d
    dirs = sorted(p for p in root.glob("step-*") if (p / "state.pt").exists() and (p / "weights.safetensors").exists())
    return dirs[-1] if dirs else None


def load(path: Path, device) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = load_file(str(path / "weights.safetensors"), device=str(device))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)  # RNG states stay on the CPU
    return tensors, state
