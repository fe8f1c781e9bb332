"""Typed results to and from JSON: a result is a dataclass (fields of numbers, strings, lists and nested
dataclasses), written with ``dataclasses.asdict`` and read back here by its own type hints, so modules,
checks and metadata read attributes and the one place that reads JSON keys is this function."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing


@functools.cache
def _hints(cls: type) -> dict[str, typing.Any]:
    return typing.get_type_hints(cls)


def from_json(cls: type, data: dict):
    """The ``cls`` dataclass that ``asdict`` wrote as ``data``. Keys ``cls`` does not declare (derived
    properties such as ``passed``, written for a reader of the JSON) are ignored; a field missing from
    older files takes its default."""
    hints = _hints(cls)
    return cls(**{f.name: _value(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data})


def _value(hint, value):
    if value is None:
        return None
    if dataclasses.is_dataclass(hint):
        return from_json(hint, value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # X | None: the one non-None type; X | Y: see _member
        return _value(_member([a for a in args if a is not type(None)], value), value)
    if origin is list:
        return [_value(args[0], v) for v in value]
    if origin is tuple:
        return tuple(value) if len(args) != 2 or args[1] is not Ellipsis else tuple(_value(args[0], v) for v in value)
    if origin is dict:
        return {k: _value(args[1], v) for k, v in value.items()}
    return value


def _member(kinds: list, value):
    """Which of a union's types ``value`` was written as: the first dataclass whose fields without a
    default it holds all of (so a union lists its fuller dataclasses first), else the first type."""
    for kind in kinds:
        if dataclasses.is_dataclass(kind) and isinstance(value, dict) and all(
                f.name in value for f in dataclasses.fields(kind)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
            return kind
    return kinds[0]
