"""The training run's options (stylegan2-ada style: one flat, commented option list, saved beside
the run as run.json): the model, the loss, the optimiser, the loop, the held-out share and the
preset, and where the data and the run live. `RunConfig` is the `train` section of params.yaml
and what a standalone `python -m models.training_loop --config run.json` reads; both are built by
tasks.typed.build (strict). Plain frozen dataclasses: no torch, no Prefect (models/ imports them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tasks.artifacts.tags import N_TAGS
from tasks.errors import ConfigError
from tasks.typed import device_name


# Sane bounds of a model config, checked before anything is allocated (a generator file's recorded
# config is read with the same validation): the paper's model is 128 px, ~4M generator and ~25M
# discriminator parameters, its largest feature map 1M values a sample.
MAX_IMAGE_SIZE = 1024
MAX_WIDTH = 4096  # z_dim, any channel width
MAX_TAGS = 1024
MAX_BLOCKS = 256
MAX_PARAMETERS = 250_000_000  # per network (1 GB of float32)
MAX_FEATURE_MAP = 1 << 26  # values of one sample's largest activation (256 MB of float32)


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 128  # output side; the generator starts at image_size / 8
    z_dim: int = 128  # noise dimensions
    n_tags: int = N_TAGS  # conditioning tags
    g_channels: int = 64  # generator width at the base resolution (the residual blocks)
    g_blocks: int = 16  # generator residual blocks
    # widths after each of the 3 upsamplings (x2, x4, x8 the base side); empty = g_channels
    # throughout (the paper). Wide at low resolution, narrow at full: cheap capacity for the layout.
    g_up_channels: tuple[int, ...] = ()
    d_channels: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)  # one stride-2 stage each
    d_blocks: int = 2  # residual blocks after each stage but the last
    # minibatch standard deviation (ProGAN): D sees how much the samples of a group of this many
    # differ, so a generator that draws one face for every input is caught; 0 = off (the paper)
    d_mbstd_group: int = 4

    def validate(self, key: str) -> None:
        if self.image_size % 8 or self.image_size < 8:
            raise ConfigError(f"{key}.image_size: expected a multiple of 8, got {self.image_size}")
        if not self.d_channels:
            raise ConfigError(f"{key}.d_channels: expected at least one stage")
        if self.image_size >> len(self.d_channels) < 1:
            raise ConfigError(f"{key}.d_channels: {len(self.d_channels)} stride-2 stages shrink "
                                   f"{self.image_size} px below 1")
        if self.g_up_channels and (len(self.g_up_channels) != 3 or min(self.g_up_channels) < 1):
            raise ConfigError(f"{key}.g_up_channels: expected 3 widths > 0 (or an empty list), got "
                                   f"{list(self.g_up_channels)}")
        for name in ("z_dim", "n_tags", "g_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{key}.{name}: must be > 0")
        if self.d_mbstd_group < 0 or self.d_mbstd_group == 1:
            raise ConfigError(f"{key}.d_mbstd_group: expected 0 (off) or a group of 2 or more, got {self.d_mbstd_group}")
        if self.g_blocks < 0 or self.d_blocks < 0 or min(self.d_channels) < 1:
            raise ConfigError(f"{key}: block counts must be >= 0 and widths > 0")
        self._check_bounds(key)

    def _check_bounds(self, key: str) -> None:
        """Refuse a model beyond sane bounds, from arithmetic alone (nothing allocated)."""
        limits = {"image_size": MAX_IMAGE_SIZE, "z_dim": MAX_WIDTH, "n_tags": MAX_TAGS, "g_channels": MAX_WIDTH,
                  "g_blocks": MAX_BLOCKS, "d_blocks": MAX_BLOCKS}
        for name, limit in limits.items():
            if getattr(self, name) > limit:
                raise ConfigError(f"{key}.{name}: at most {limit}, got {getattr(self, name)}")
        for name in ("g_up_channels", "d_channels"):
            if max(getattr(self, name), default=0) > MAX_WIDTH:
                raise ConfigError(f"{key}.{name}: widths at most {MAX_WIDTH}, got {list(getattr(self, name))}")
        for net, (params, largest) in (("generator", generator_size(self)), ("discriminator", discriminator_size(self))):
            if params > MAX_PARAMETERS:
                raise ConfigError(f"{key}: the {net} would have {params:,} parameters (at most {MAX_PARAMETERS:,})")
            if largest > MAX_FEATURE_MAP:
                raise ConfigError(f"{key}: the {net}'s largest feature map would hold {largest:,} values a sample "
                                  f"(at most {MAX_FEATURE_MAP:,})")


def generator_size(m: ModelConfig) -> tuple[int, int]:
    """(parameters, values of one sample's largest feature map) of models.dragan.Generator for `m`,
    by arithmetic (tests/train/test_model_bounds.py holds it to the real network)."""
    c, s0 = m.g_channels, m.image_size // 8
    params = (m.z_dim + m.n_tags + 1) * c * s0 * s0 + 2 * c  # fc, head BatchNorm
    params += m.g_blocks * (18 * c * c + 4 * c) + 2 * c  # residual blocks (2 convs, 2 BNs), tail BatchNorm
    largest, cin, side = c * s0 * s0, c, s0
    for cout in m.g_up_channels or (c, c, c):  # conv to 4 x cout, PixelShuffle x2, BatchNorm
        params += 9 * cin * 4 * cout + 4 * cout + 2 * cout
        largest = max(largest, 4 * cout * side * side)
        cin, side = cout, side * 2
    params += 81 * cin * 3 + 3  # the 9x9 output conv
    return params, max(largest, 3 * side * side)


def discriminator_size(m: ModelConfig) -> tuple[int, int]:
    """(parameters, values of one sample's largest feature map) of models.dragan.Discriminator."""
    params, largest, cin, side = 0, 0, 3, m.image_size
    for i, c in enumerate(m.d_channels):
        last = i == len(m.d_channels) - 1
        k = 3 if last else 4
        params += k * k * cin * c + c
        side //= 2
        largest = max(largest, c * side * side)
        if not last:
            params += m.d_blocks * 2 * (9 * c * c + c)
        cin = c
    if m.d_mbstd_group:
        cin += 1
    flat = cin * side * side
    return params + (flat + 1) + (flat * m.n_tags + m.n_tags), max(largest, flat)


@dataclass(frozen=True)
class LossConfig:
    lambda_adv: float = 1.0  # weight of the adversarial term (the paper: 34, the number of tags)
    lambda_gp: float = 0.3  # weight of the DRAGAN gradient penalty (the paper: 0.5; DRAGAN code: 10; docs/training-dynamics.md)
    gp_perturb: float = 0.5  # x + gp_perturb * U(0,1) * std(x)
    lambda_cls: float = 1.0  # weight of the tag classification terms

    def validate(self, key: str) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 0:
                raise ConfigError(f"{key}.{f.name}: must be >= 0")



@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1.5e-4  # the generator's Adam learning rate
    lr_d: float = 4e-4  # the discriminator's (two time-scale update rule: D learns faster)
    beta1: float = 0.5
    beta2: float = 0.99
    batch: int = 64  # images per step (all GPUs together)
    ema_decay: float = 0.999  # of the generator weights; 0 = EMA is a copy
    # EMA ramp-up (stylegan2-ada): the EMA's half-life is at most ema_rampup x the images seen so far,
    # so early on the EMA follows G instead of keeping its random initialisation; 0 = no ramp-up
    ema_rampup: float = 0.2
    nan_lr_factor: float = 0.5  # after a non-finite loss: restore the checkpoint, lr *= this
    max_nan_recoveries: int = 5  # then the run fails

    def validate(self, key: str) -> None:
        if self.lr <= 0 or self.lr_d <= 0 or not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1:
            raise ConfigError(f"{key}: lr and lr_d must be > 0 and betas in [0, 1)")
        if self.ema_rampup < 0:
            raise ConfigError(f"{key}.ema_rampup: must be >= 0")
        if self.batch < 2:
            raise ConfigError(f"{key}.batch: must be >= 2 (the gradient penalty needs a batch std)")
        if not 0 <= self.ema_decay < 1 or not 0 < self.nan_lr_factor < 1:
            raise ConfigError(f"{key}: ema_decay must be in [0, 1) and nan_lr_factor in (0, 1)")


@dataclass(frozen=True)
class LoopConfig:
    steps: int = 100_000  # total optimiser steps (changing it on resume extends/shortens the run)
    seed: int = 0
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N
    amp: Literal["auto", "bf16", "none"] = "auto"  # auto: bf16 autocast on CUDA and on CPUs with native bf16
    channels_last: Literal["auto", "on", "off"] = "auto"  # auto: on for CUDA and with bf16 on the CPU
    compile: bool = False  # torch.compile the forward passes (CUDA; the gradient penalty stays eager)
    checkpoint_every: int = 1000  # steps; also at the end
    keep_checkpoints: int = 3  # newest checkpoints kept
    log_every: int = 100  # steps per metrics row (the only host synchronisation)
    cache_gb: float = 8.0  # decoded uint8 images kept in memory (on the GPU when there) up to this
    loader_threads: int = 4  # PNG decoding threads (cache build and streaming)
    threads: int = 0  # torch CPU threads; 0 = all this process's cores (never the moment's load: the bytes depend on it)
    progress: bool = True  # tqdm bar (on a terminal only; logs get a line per log window instead)
    max_minutes: float = 0.0  # wall-clock budget: stop at the first log window past it (0 = none; not reproducible)
    keep_runs: int = 3  # run directories kept (by last use; another param set or data is another run)

    def validate(self, key: str) -> None:
        for name in ("steps", "checkpoint_every", "keep_checkpoints", "log_every", "loader_threads", "keep_runs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{key}.{name}: must be > 0")
        if self.cache_gb < 0 or self.threads < 0 or self.max_minutes < 0:
            raise ConfigError(f"{key}: cache_gb, threads and max_minutes must be >= 0")
        device_name(self.device, f"{key}.device")


@dataclass(frozen=True)
class RunOut:
    data: str = "data/train/faces.parquet"  # the training dataset (tasks.artifacts.trainset), written by the train stage
    dir: str = "data/train"  # run.json, runs/<identity>/ (checkpoints), generator.safetensors, summary.json, metrics.json, plots.csv


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs: params.yaml's `train` section, and run.json."""

    # share of the faces held out from training (by face_id hash: a face never changes sides);
    # render measures memorisation against them
    holdout: float = 0.05
    # none: the values below; paper: Make.Girls.Moe's loss weights and learning rates replace them
    # (PRESETS; `resolved()` applies it, and run.json records what ran)
    preset: Literal["none", "paper"] = "none"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    out: RunOut = field(default_factory=RunOut)

    def validate(self, key: str) -> None:
        # model, loss, optim and loop validate themselves (tasks.typed.build checks every section)
        if not 0 <= self.holdout < 1:
            raise ConfigError(f"{key}.holdout: expected a share in [0, 1), got {self.holdout!r}")
        if (Path(self.out.dir) / "runs").resolve() in Path(self.out.data).resolve().parents:
            raise ConfigError(f"{key}.out.data: must not live in the runs directory")

    def resolved(self) -> "RunConfig":
        """This config with its preset's values in place (what trains, and what run.json records)."""
        return apply_preset(self, self.preset)

    @property
    def generator(self) -> Path:
        return Path(self.out.dir) / "generator.safetensors"


# Named recipes: the values a preset sets, by section. "paper" is Make.Girls.Moe's recipe
# (arXiv 1708.05509, sec. 4: lambda_adv = the 34 tags, lambda_gp 0.5, Adam 2e-4 for both nets),
# kept to reproduce it: at small scale it collapses to one blob (docs/training-dynamics.md).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"model": {"d_mbstd_group": 0, "g_up_channels": ()},
              "loss": {"lambda_adv": 34.0, "lambda_gp": 0.5, "gp_perturb": 0.5, "lambda_cls": 1.0},
              "optim": {"lr": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "ema_rampup": 0.0}},
}


def apply_preset(run: RunConfig, name: str) -> RunConfig:
    """`run` with the preset's values in place of its own ("none": unchanged; applying it twice
    changes nothing more)."""
    if name == "none":
        return run
    changes = {section: dataclasses.replace(getattr(run, section), **values)
               for section, values in PRESETS[name].items()}
    return dataclasses.replace(run, **changes)
