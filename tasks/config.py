"""tasks' side of the typed configuration (the mechanism itself is models.typed, a leaf).

`build` is models.typed.build raising tasks.errors.ConfigError (a one-line `error:` and exit 2
at the CLI); `read_yaml` reads a YAML mapping with errors naming the file and line.
tasks.params assembles the stage sections into `Params` and loads params.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from models import typed
from tasks.errors import ConfigError


def build(cls: type, data: Any, prefix: str = ""):
    """Build config dataclass `cls` from a mapping, strictly (models.typed.build); `prefix` is
    the dotted key of `data` for messages."""
    try:
        return typed.build(cls, data, prefix)
    except ConfigError:
        raise
    except typed.ConfigValueError as e:
        raise ConfigError(str(e)) from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of stage sections at the top level")
    return data
