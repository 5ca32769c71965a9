"""Typed, frozen configuration from plain mappings: the one mechanism for params.yaml (tasks.params),
run.json (tasks.params.train) and a generator's recorded config.

A config is a frozen dataclass; `build` makes one from a mapping (YAML or JSON), strictly: an
unknown key, a wrong type or a bad value is a `ConfigError` whose message is one line
naming the dotted key. Every float must be finite (YAML's .nan / .inf, JSON's NaN / Infinity are
refused). Keys left out take the dataclass default. After a dataclass is built,
its `validate(self, key)` method (if any) checks the values; nested sections are validated
first. The validators below (`positive`, `device_name`, `http_url`) raise the same error.

It imports nothing of the project but tasks.errors (stdlib only, no torch, no Prefect), so models/
and every tasks/params module use it without a cycle. ConfigError is a MoeflowError: one `error:`
line and exit code 2 at the command line."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from tasks.errors import ConfigError


class NotFinite(ConfigError):
    """A float that is nan or infinite (a number, but never a usable one)."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key)
            except NotFinite:
                raise
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise bad
    if origin in (list, tuple):
        if value is None:
            value = []
        if not isinstance(value, (list, tuple)):
            raise bad
        (item_tp, *_) = get_args(tp)
        return tuple(_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise bad
        k_tp, v_tp = get_args(tp)
        return types.MappingProxyType({_convert(k, k_tp, key): _convert(v, v_tp, f"{key}.{k}") for k, v in value.items()})
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond a float's range
                number = math.inf
            if not math.isfinite(number):
                raise NotFinite(f"{key}: must be a finite number, got {value!r}")
            return number
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if tp is Any:
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def build(cls: type, data: Any, key: str = ""):
    """Build dataclass `cls` from a mapping, strictly, and validate it. `key` is the dotted key
    of `data` for messages ("" for the top level of a file)."""
    where = key or "params"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        dotted = ", ".join(f"{key}.{k}" if key else k for k in unknown)
        raise ConfigError(f"unknown key {dotted} (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{key}.{name}" if key else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], dotted)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{dotted}: required key is missing")
    obj = cls(**kwargs)
    for name in fields:  # sections left at their defaults are checked too
        if name not in data and dataclasses.is_dataclass(getattr(obj, name)):
            validate_all(getattr(obj, name), f"{key}.{name}" if key else name)
    _validate(obj, key)
    return obj


def _validate(obj, key: str) -> None:
    check = getattr(obj, "validate", None)
    if check is not None:
        check(key)


def validate_all(obj, key: str = "") -> None:
    """Validate a config made in code (dataclasses.replace, a constructor): nested sections
    first, then `obj` itself; `build` does the same for what it makes."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            validate_all(v, f"{key}.{f.name}" if key else f.name)
    _validate(obj, key)


def to_dict(obj) -> Any:
    """A plain, YAML/JSON-friendly view of a config object (for saving resolved options);
    `build(type(obj), to_dict(obj))` gives `obj` back."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, (dict, types.MappingProxyType)):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# Validators for `validate` methods: each raises a one-line ConfigError naming `key`.

def positive(value: float, key: str, *, allow_zero: bool = False) -> None:
    """`value` > 0 (>= 0 with allow_zero)."""
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def device_name(value: str, key: str) -> None:
    """A torch device name as the configs take it: auto | cpu | cuda | cuda:N."""
    if not (value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value)):
        raise ConfigError(f"{key}: expected auto | cpu | cuda | cuda:N, got {value!r}")


def http_url(value: str, key: str) -> None:
    """An http:// or https:// URL with a host."""
    if not re.match(r"^https?://[^/\s]+", value):
        raise ConfigError(f"{key}: expected an http(s) URL, got {value!r}")
