"""Strict, typed config plumbing: nested frozen dataclasses from dicts, `--set key=value` overrides,
flattening to dotted keys, and stable hashes of config slices.

Every error names where the value came from (a file or `--set`), the dotted field, and what is allowed,
so a typo in a sweep file is one sentence, not a traceback.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from vadcore.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str, source: str) -> Any:
    """Check `value` against the annotation `tp`, converting lists to tuples and ints to floats."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fields = ", ".join(f.name for f in dataclasses.fields(tp))
            raise ConfigError(f"{source}: {where}={value!r}: {where} is a section, set its fields as {where}.FIELD=...; fields: {fields}")
        return from_dict(tp, value, source=source, prefix=f"{where}.")
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, source)
            except ConfigError:
                continue
        raise ConfigError(f"{source}: {where}={value!r} must be one of {', '.join(_type_name(a) for a in args)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {where}={value!r} must be a list")
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        return tuple(_coerce(v, item, f"{where}[{i}]", source) for i, v in enumerate(value))
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{source}: {where}={value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if type(value) is not tp:
            raise ConfigError(f"{source}: {where}={value!r} must be {tp.__name__}, got {type(value).__name__}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {where}")


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config", prefix: str = "") -> T:
    """Build dataclass `cls` from `data`; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"{source}: unknown field {prefix}{unknown[0]}; allowed fields of {prefix.rstrip('.') or cls.__name__}: "
            + ", ".join(names)
        )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}", source) for k, v in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None and not prefix:
        validate()
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for JSON/TOML output."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_value(text: str) -> Any:
    """A `--set` value: TOML literal if it parses (1, 0.5, true, [2, 2, 1, 1], "x"), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _value_and_section(key: str, value: Any) -> ConfigError:
    return ConfigError(f"{key}={value!r} and {key}.FIELD=... both set: {key} is either a value or a section whose fields are set as {key}.FIELD=...")


def unflatten(pairs: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}; a key set both to a value and as a section ("a=1", "a.b=2") raises ConfigError."""
    out: dict[str, Any] = {}
    for key, value in pairs.items():
        node = out
        *parents, leaf = key.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise _value_and_section(".".join(parents[: i + 1]), node)
        if isinstance(node.get(leaf), dict) and not isinstance(value, dict):
            raise _value_and_section(key, value)
        node[leaf] = value
    return out


def parse_sets(items: list[str]) -> dict[str, Any]:
    """['itae.tau=2', 'score.lambda_L=0.5'] -> nested dict; malformed items raise ConfigError."""
    pairs = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {item!r} must look like key=value, e.g. --set itae.tau=2")
        pairs[key.strip()] = parse_value(value.strip())
    return unflatten(pairs)


def load_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 of canonical JSON: equal slices give equal keys across processes and machines."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
