"""params.yaml: one section per stage, each a frozen, typed dataclass in a module of its own
(`tasks.params.<section>`), built strictly by tasks.typed (an unknown key or a wrong type is one
ConfigError line naming the dotted key).

A stage loads only its own section (`load_section`); the whole file at once (`tasks.params.all`)
is for the commands outside the DAG and the Prefect flows' up-front check. This module imports
no section, so a stage's code depends on its own section module and nothing of the others."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from tasks.errors import ConfigError
from tasks.typed import build

DEFAULT_PARAMS = "params.yaml"
# the sections of params.yaml, in DAG order (tasks.params.all assembles their dataclasses)
SECTIONS = ("fetch", "scrape", "detect", "review", "tag", "release", "train", "render", "export")

T = TypeVar("T")


def read_yaml(path: str | Path) -> dict:
    """A YAML file's top-level mapping, with errors naming the file and line."""
    import yaml

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


def read_params(path: str | Path = DEFAULT_PARAMS) -> dict:
    """params.yaml as a plain mapping, its top-level keys checked against SECTIONS."""
    data = read_yaml(path)
    unknown = sorted(set(map(str, data)) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {', '.join(unknown)} (known: {', '.join(sorted(SECTIONS))})")
    return data


def load_section(name: str, cls: type[T], path: str | Path = DEFAULT_PARAMS) -> T:
    """The section `name` of the params file as a `cls`; a mistake is a ConfigError naming the file
    and the dotted key."""
    if name not in SECTIONS:
        raise ValueError(f"not a params.yaml section: {name!r}")
    data = read_params(path)
    try:
        return build(cls, data.get(name), name)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
