"""The image store's records as its tables hold them (tasks.scrape.store): one per post and per
kept image, so what one costs is what the store costs per post.

A journal line parsed is a dict of its own field names and values: ~460 bytes for a kept image's
19 fields before any value. A `Record` is the same mapping as a tuple of field names, shared by
every record with the same fields, and a list of values (~260 bytes); field names and the values
that repeat from post to post (SHARED, the tags) are interned, so N records hold one copy of each.
A record is read like the dict it came from (`rec["pack"]`, `rec.get`, `{**rec}`, `.items()`) and
written back as the same JSON."""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator, Mapping
from typing import Any

# fields whose values repeat from record to record, or name an image other tables name too
SHARED = frozenset({"kind", "source", "format", "rating", "reason", "artist", "title", "character", "image_id"})
_SHAPES: dict[tuple[str, ...], tuple[str, ...]] = {}  # field names -> the one tuple of them


def _shape(fields: tuple[str, ...]) -> tuple[str, ...]:
    return _SHAPES.setdefault(fields, fields)


class Record(Mapping):
    """A record's fields, in its JSON line's order, and their values."""

    __slots__ = ("_fields", "_values")

    def __init__(self, fields: tuple[str, ...], values: list):
        self._fields, self._values = _shape(fields), values

    def __getitem__(self, field: str) -> Any:
        try:
            return self._values[self._fields.index(field)]
        except ValueError:
            raise KeyError(field) from None

    def get(self, field: str, default: Any = None) -> Any:
        try:
            return self._values[self._fields.index(field)]
        except ValueError:
            return default

    def __contains__(self, field: object) -> bool:
        return field in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        return zip(self._fields, self._values)

    def update(self, **fields: Any) -> None:
        """Set fields (a new one goes last, as in a dict)."""
        for field, value in fields.items():
            if field in self._fields:
                self._values[self._fields.index(field)] = value
            else:
                self._fields = _shape(self._fields + (sys.intern(field),))
                self._values.append(value)

    def __repr__(self) -> str:
        return f"Record({dict(self.items())!r})"


def slim(rec: Mapping) -> Record:
    """A record as the store's tables hold it: field names and SHARED values interned; the tags a
    tuple of interned tags (no tags: the one empty tuple), written as the same JSON list; `bytes`
    the same int object as an equal `length`; no `stat` (Store.stat has it, as `packed_stat`)."""
    fields, values = [], []
    length = None
    for field, value in rec.items():
        if field == "stat":
            continue
        if type(value) is str and field in SHARED:
            value = sys.intern(value)
        elif field == "tags" and type(value) is list:
            value = tuple(sys.intern(t) if type(t) is str else t for t in value)
        elif field == "length" and type(value) is int:
            length = value
        elif field == "bytes" and type(value) is int and value == length:
            value = length
        fields.append(sys.intern(field))
        values.append(value)
    return Record(tuple(fields), values[:])  # a copy: a list of its exact size, not the appends' spare room


def packed_stat(stat: list) -> bytes | tuple:
    """A local file's stat (tasks.scrape.local.signature) as Store.stat keeps it: its three ints
    packed in 24 bytes (a list of three ints takes ~170)."""
    try:
        return struct.pack("<3q", *stat)
    except (struct.error, TypeError):  # not three 64-bit ints: kept as they are
        return tuple(stat)
