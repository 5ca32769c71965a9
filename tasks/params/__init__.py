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


def _keys_once(node, where: str, path: Path, seen_nodes: set) -> None:
    """Refuse a key given twice in any mapping of the composed YAML document, at any depth (YAML
    requires unique keys; PyYAML would silently keep the last). A `<<` merge may still be
    overridden: that is what merging is for."""
    import yaml

    if id(node) in seen_nodes:  # an alias: checked where its anchor is
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                _keys_once(value, where, path, seen_nodes)
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            dotted = f"{where}.{key}" if where else str(key)
            line = key_node.start_mark.line + 1
            if key is not None and key in lines:
                raise ConfigError(f"{path}: line {line}: key {dotted} is given twice (first on line {lines[key]}); "
                                  "keep one")
            if key is not None:
                lines[key] = line
            _keys_once(value, dotted, path, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _keys_once(item, f"{where}[{i}]", path, seen_nodes)


def read_yaml(path: str | Path) -> dict:
    """A YAML file's top-level mapping, strictly: a file that is missing, unreadable, not UTF-8,
    not YAML, empty, or that gives a key twice is a ConfigError naming the file (and the line)."""
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a params file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the params file: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: byte {raw[e.start]:#04x} is not UTF-8 (save the file as UTF-8)") from None
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses a control character here
        node = loader.get_single_node()
        if node is not None:
            _keys_once(node, "", path, set())
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {e.problem or e.context or type(e).__name__}") from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (a NUL, a control character)
        line = text[: e.position].count("\n") + 1
        code = e.character if isinstance(e.character, int) else ord(e.character)
        raise ConfigError(f"{path}: not valid YAML (line {line}): character U+{code:04X}: {e.reason}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        raise ConfigError(f"{path}: the params file is empty (expected the sections {', '.join(SECTIONS)})")
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


def require_sections(data: dict, names: tuple[str, ...], path: str | Path) -> None:
    """Every one of `names` is a section of `data`, and not empty: a params file cut short (a failed
    save) is refused, never run with the code's defaults."""
    for name in names:
        if name not in data:
            raise ConfigError(f"{path}: no `{name}` section (every stage's section must be there; the code's "
                              "defaults are never used in place of a missing one)")
        if data[name] is None:
            raise ConfigError(f"{path}: the `{name}` section is empty")


def load_section(name: str, cls: type[T], path: str | Path = DEFAULT_PARAMS) -> T:
    """The section `name` of the params file as a `cls`; a mistake is a ConfigError naming the file
    and the dotted key."""
    if name not in SECTIONS:
        raise ValueError(f"not a params.yaml section: {name!r}")
    data = read_params(path)
    require_sections(data, (name,), path)
    try:
        return build(cls, data[name], name)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
