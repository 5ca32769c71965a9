"""The `train` section of params.yaml: the models/ config dataclasses plus where things go."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from models.config import LoopConfig, LossConfig, ModelConfig, OptimConfig, RunConfig, apply_preset
from tasks.errors import ConfigError


@dataclass(frozen=True)
class TrainOut:
    data: str = "data/train/faces.parquet"  # the training export: face_id, png, attributes
    dir: str = "data/train"  # run.json, runs/<identity>/ (checkpoints), generator.safetensors, summary.json, metrics.json, plots.csv


@dataclass(frozen=True)
class TrainConfig:
    # share of the faces held out from training (by face_id hash: a face never changes sides);
    # render measures memorisation against them
    holdout: float = 0.05
    # none: the values below; paper: Make.Girls.Moe's loss weights and learning rates replace them
    # (models.config.PRESETS; run.json records what ran)
    preset: Literal["none", "paper"] = "none"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    out: TrainOut = field(default_factory=TrainOut)

    def validate(self, key: str) -> None:
        # model, loss, optim and loop validate themselves (models.typed.build checks every section)
        if not 0 <= self.holdout < 1:
            raise ConfigError(f"{key}.holdout: expected a share in [0, 1), got {self.holdout!r}")
        if (Path(self.out.dir) / "runs").resolve() in Path(self.out.data).resolve().parents:
            raise ConfigError(f"{key}.out.data: must not live in the runs directory")

    def run_config(self) -> RunConfig:
        return apply_preset(RunConfig(data=self.out.data, out=self.out.dir, model=self.model, loss=self.loss,
                                      optim=self.optim, loop=self.loop), self.preset)

    @property
    def generator(self) -> Path:
        return Path(self.out.dir) / "generator.safetensors"
