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
    """(Generator in eval mode on `device`, its ModelConfig, the file's metadata)."""
    from safetensors import safe_open

    from models.dragan import Generator
    from tasks.params.train import ModelConfig
    from tasks.typed import build

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist (run the train stage first)")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = dict(f.metadata() or {})
            names = list(f.keys())
            if "model" not in meta:
                raise DataError(f"{path}: no model config in its metadata (not written by moeflow's training loop)")
            try:
                cfg = build(ModelConfig, json.loads(meta["model"]), "model")
            except ValueError as e:  # bad JSON, or a ConfigError
                raise DataError(f"{path}: bad model config in its metadata: {e}") from None
            prefix = EMA_PREFIX + "."
            tensors = {k[len(prefix):]: f.get_tensor(k) for k in names if k.startswith(prefix)}
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise DataError(f"{path}: not a readable safetensors file: {e}") from None
    G = Generator(cfg).to(device)
    try:
        G.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise DataError(f"{path}: weights do not fit the generator of its config: {e}") from None
    return G.eval().requires_grad_(False), cfg, meta
