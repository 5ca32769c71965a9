"""The `train` section of params.yaml: the models/ config dataclasses plus where things go."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from models.config import (ConfigValueError, LoopConfig, LossConfig, ModelConfig, OptimConfig, RunConfig,
                           validate_all)
from tasks.errors import ConfigError


@dataclass(frozen=True)
class TrainOut:
    data: str = "data/train/faces.parquet"  # the training export: face_id, png, attributes
    dir: str = "data/train"  # run.json, checkpoints/, generator.safetensors, metrics.json, plots.csv


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    out: TrainOut = field(default_factory=TrainOut)

    def validate(self, key: str) -> None:
        try:
            for name in ("model", "loss", "optim", "loop"):
                validate_all(getattr(self, name), f"{key}.{name}" if key else name)
        except ConfigValueError as e:
            raise ConfigError(str(e)) from None
        if Path(self.out.data).resolve().parent == (Path(self.out.dir) / "checkpoints").resolve():
            raise ConfigError(f"{key}.out.data: must not live in the checkpoints directory")

    def run_config(self) -> RunConfig:
        return RunConfig(data=self.out.data, out=self.out.dir, model=self.model, loss=self.loss, optim=self.optim,
                         loop=self.loop)

    @property
    def generator(self) -> Path:
        return Path(self.out.dir) / "generator.safetensors"
