"""The generator file (`train.out.dir`/generator.safetensors): the EMA generator the train stage
hands to render and export, and what a model card or provenance reads.

One safetensors file: the generator's tensors under `g_ema.`, and string metadata: `model` (the
ModelConfig as JSON, tasks.params.train), `sampler` (the training data's tag frequencies,
models.conditioning), `step`, `run` (the run identity), `data_fingerprint` (the training dataset's)
and `version` (moeflow's). The header is canonical (sorted, compact JSON), so the same weights give
the same bytes. `load_generator` refuses anything else with one DataError line: a missing or
unreadable file, a pickle, a config beyond sane bounds (before anything is allocated), tensors that
do not fit the config. Its metadata alone, without torch: tasks.fileio.safetensors_metadata."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tasks.errors import DataError
from tasks.fileio import atomic_write_bytes, safetensors_bytes

EMA_PREFIX = "g_ema"
FILE_NAME = "generator.safetensors"


def save_generator(path: str | os.PathLike, generator, meta: dict[str, str]) -> Path:
    """Write the generator module's weights (under `g_ema.`) and `meta`, atomically."""
    tensors = {f"{EMA_PREFIX}.{k}": v.detach().contiguous().cpu() for k, v in generator.state_dict().items()}
    atomic_write_bytes(path, safetensors_bytes(tensors, meta))
    return Path(path)


def load_generator(path: str | os.PathLike, device="cpu"):
    """(Generator in eval mode on `device`, its ModelConfig, the file's metadata). Every way the file
    can be wrong is one DataError line, found before the generator is allocated: its config is
    validated (tasks.params.train's bounds) and every tensor's name and shape are checked against
    the config's network, built on the meta device (no memory), before a tensor is read."""
    import torch
    from safetensors import safe_open

    from models.dragan import Generator
    from tasks.params.train import ModelConfig
    from tasks.typed import build

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist (run the train stage first)")
    prefix = EMA_PREFIX + "."
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            if "model" not in meta:
                raise DataError(f"{path}: no model config in its metadata (not written by moeflow's training loop)")
            try:
                cfg = build(ModelConfig, json.loads(meta["model"]), "model")
            except ValueError as e:  # bad JSON, or a ConfigError (beyond the bounds included)
                raise DataError(f"{path}: bad model config in its metadata: {e}") from None
            if not re.fullmatch(r"\d{1,12}", meta.get("step", "0")):
                raise DataError(f"{path}: metadata step {meta['step'][:40]!r} is not a step number")
            with torch.device("meta"):
                expected = {k: tuple(v.shape) for k, v in Generator(cfg).state_dict().items()}
            found = {k[len(prefix):]: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith(prefix)}
            problem = _mismatch(expected, found)
            if problem:
                raise DataError(f"{path}: its weights do not fit the generator of its config: {problem}")
            tensors = {name: f.get_tensor(prefix + name) for name in expected}
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise DataError(f"{path}: not a readable safetensors file: {_first_line(e)}") from None
    G = Generator(cfg)
    try:
        G.load_state_dict(tensors, strict=True)
    except RuntimeError as e:  # names and shapes were checked: a dtype torch cannot copy
        raise DataError(f"{path}: its weights do not fit the generator of its config: {_first_line(e)}") from None
    return G.to(device).eval().requires_grad_(False), cfg, meta


def _mismatch(expected: dict[str, tuple], found: dict[str, tuple]) -> str | None:
    """What differs between the network's tensors and the file's (names and shapes), in one line."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing:
        return f"{len(missing)} tensor(s) missing, e.g. {EMA_PREFIX}.{missing[0]}"
    if extra:
        return f"{len(extra)} tensor(s) it does not have, e.g. {EMA_PREFIX}.{extra[0]}"
    if shapes:
        k = shapes[0]
        return (f"{len(shapes)} tensor(s) of another shape, e.g. {EMA_PREFIX}.{k} is {list(found[k])}, "
                f"the config's generator has {list(expected[k])}")
    return None


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
