"""Typed dataclasses from YAML and dotted `key=value` overrides: the generic half of the config.

Knows no section of the training config (that is config.py); every error is a one-line `ConfigError`
that names the dotted key and, for an unknown key, lists the valid ones.

    data = read_yaml(path)
    apply_override(data, "optim.lr", parse_value("1e-4"))
    cfg = from_dict(Config, data)   # type-checked and coerced against the dataclass hints

Supported field types: bool, int, float, str, `Literal[...]` (the allowed values), `X | None`,
`list[X]`, `dict` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true / false (so `mixed_precision: no` stays the string "no")."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml(path: Path) -> dict:
    """A YAML mapping from a file (ConfigError for invalid YAML or a non-mapping)."""
    try:
        data = yaml_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------------ typed building
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert_union(value: Any, tp: Any, key: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for a in args:
        if a is type(None):
            continue
        try:
            return convert(value, a, key)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: expected {_type_name(tp)}, got {value!r}")


_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _convert_scalar(value: Any, tp: type, key: str) -> Any:
    if isinstance(value, bool) != (tp is bool):  # a bool is never a number or a string, and vice versa
        raise ConfigError(f"{key}: expected {_EXPECTED[tp]}, got {value!r}")
    if tp is bool:
        return value
    if tp is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected {_EXPECTED[int]}, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected {_EXPECTED[float]}, got {value!r}")
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    raise ConfigError(f"{key}: expected {_EXPECTED[str]}, got {value!r}")


def convert(value: Any, tp: Any, key: str) -> Any:
    """Check / coerce one value against a type hint; raise ConfigError naming the dotted key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, tp, key)
    if origin is Literal:
        choices = list(typing.get_args(tp))
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {choices}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [convert(v, item, f"{key}.{i}") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp in (bool, int, float, str):
        return _convert_scalar(value, tp, key)
    return value


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) dict, rejecting unknown keys with the valid ones listed."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]  # in declaration order
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            valid = ", ".join(f"{prefix}{k}" for k in fields)
            raise ConfigError(f"unknown config key {prefix}{key!s}; valid keys: {valid}")
        kwargs[key] = convert(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


# ------------------------------------------------------------------------------------------ overrides
def parse_value(text: str) -> Any:
    """A command-line value as YAML ("3" -> 3, "[1, 4]" -> list, "null" -> None, "abc" -> "abc")."""
    try:
        return yaml_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _list_index(node: list, part: str, where: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ConfigError(f"{where}: no list item {part!r} (the list has {len(node)} item(s))")
    return int(part)


def apply_override(data: dict, key: str, value: Any) -> None:
    """Set `data[a][b][c] = value` for key "a.b.c"; integer parts index lists ("rewards.0.weight")."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, where)]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"cannot set {key}: {where} is a single value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    else:
        node[last] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """["optim.lr=1e-4", ...] -> [("optim.lr", 0.0001), ...] (values parsed as YAML)."""
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad override {item!r}: expected key=value, e.g. optim.lr=1e-4")
        out.append((key.strip(), parse_value(text)))
    return out


def check_renamed(data: dict, renamed: dict[str, str]) -> None:
    """Refuse keys that were renamed or removed: `renamed` maps an old dotted key to a one-line hint
    (e.g. "use data.teacher_cfg_scale")."""
    for old, hint in renamed.items():
        node: Any = data
        *parents, last = old.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            raise ConfigError(f"config key {old} is no longer accepted: {hint}")
