"""The `export` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tasks.errors import ConfigError


@dataclass(frozen=True)
class ExportOut:
    onnx: str = "data/export/generator.onnx"  # fp32, dynamic batch: the reference export
    web: str = "web/public/model/generator.onnx"  # the file the page loads: the variant (or a copy of fp32)
    manifest: str = "web/public/model/model.json"  # tags, groups, sizes, noise algorithm: the page's controls
    report: str = "data/export/report.json"  # sizes + parity
    metrics: str = "data/export/metrics.json"  # web_mb, parity: the web model's max |difference| (DVC metric)


@dataclass(frozen=True)
class ParityConfig:
    samples: int = 8  # seeds checked (onnxruntime vs PyTorch), batched
    seed: int = 0  # first seed; the page's seed -> z mapping (tasks/export/noise.py)
    atol: float = 1e-3  # fp32 ONNX vs PyTorch: max |difference| on the [-1, 1] image
    variant_atol: float = 0.1  # fp16 / int8 variant vs PyTorch: max |difference|
    variant_mean_atol: float = 0.02  # ... and mean |difference|


@dataclass(frozen=True)
class ExportConfig:
    generator: str = "data/train/generator.safetensors"  # the EMA generator to export (the train stage's)
    opset: int = 18  # ONNX opset (the TorchScript exporter: 14..20)
    variant: Literal["none", "fp16", "int8"] = "fp16"  # weights stored smaller, computed in fp32
    fold_batchnorm: bool = True  # fold eval BatchNorm into the preceding conv (smaller, faster graph)
    fast_tail: bool = True  # run the full-size output conv before the last PixelShuffle (same function, ~2x faster)
    max_mb: float = 12.0  # the web model's size goal (Make.Girls.Moe's WebDNN model): over it is a warning
    parity: ParityConfig = field(default_factory=ParityConfig)
    out: ExportOut = field(default_factory=ExportOut)

    def validate(self, key: str) -> None:
        if not 14 <= self.opset <= 20:
            raise ConfigError(f"{key}.opset: expected 14..20 (the TorchScript ONNX exporter), got {self.opset}")
        if not 1 <= self.parity.samples <= 256:
            raise ConfigError(f"{key}.parity.samples: expected 1..256, got {self.parity.samples}")
        if not 0 <= self.parity.seed <= 0xFFFFFFFF:
            raise ConfigError(f"{key}.parity.seed: expected a uint32, got {self.parity.seed}")
        for name in ("atol", "variant_atol", "variant_mean_atol"):
            if not 0 < getattr(self.parity, name) <= 2:
                raise ConfigError(f"{key}.parity.{name}: expected (0, 2], got {getattr(self.parity, name)}")
        if self.max_mb <= 0:
            raise ConfigError(f"{key}.max_mb: must be > 0")
        for name in ("onnx", "web"):
            if not getattr(self.out, name).endswith(".onnx"):
                raise ConfigError(f"{key}.out.{name}: expected an .onnx path, got {getattr(self.out, name)!r}")
        for name in ("manifest", "report", "metrics"):
            if not getattr(self.out, name).endswith(".json"):
                raise ConfigError(f"{key}.out.{name}: expected a .json path, got {getattr(self.out, name)!r}")
        if self.fast_tail and not self.fold_batchnorm:
            raise ConfigError(f"{key}.fast_tail: needs fold_batchnorm (the BatchNorm after the last PixelShuffle)")
        if self.out.onnx == self.out.web:
            raise ConfigError(f"{key}.out.web: must differ from {key}.out.onnx")
