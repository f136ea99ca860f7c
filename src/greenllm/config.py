"""Config is data: strict parsing of mappings into dataclasses, and back.

``Config`` is the base of the typed step configs (frozen dataclasses such as
``greenllm.Prune``): constructing one checks and coerces every field against its annotation and
runs ``validate()``, so a bad field raises ``ConfigError`` naming it, in Python as in YAML.
``parse_config(Cls, mapping, path)`` rejects unknown keys with the field path and a
did-you-mean, checks types (int/float/bool/str/Literal/Optional/list/tuple/dict/nested
dataclasses) and runs ``Cls.validate()`` when it exists. ``to_dict(cfg)`` is the inverse, so
every config round-trips. ``parse_kv_spec('prune:method=wanda,sparsity=0.5')`` is the CLI form;
it parses into the same objects.
Stdlib + yaml only: recipes validate on a machine without torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin

from .errors import ConfigError
from .limits import MAX_CONFIG_FLOAT, MAX_CONFIG_INT, check_number, excerpt, short
from .registry import did_you_mean

_NONE = type(None)


def _fmt(path: str) -> str:
    return path or "<root>"


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and _NONE in args:
            return None
        errors = []
        for arg in args:
            if arg is _NONE:
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0]
            if len(errors) == 1
            else f"{_fmt(path)}: {excerpt(value)} is not one of "
            f"{', '.join(_type_name(a) for a in args if a is not _NONE)}"
        )
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed:
            return value
        hint = did_you_mean(str(value), [str(a) for a in allowed])
        msg = f"{_fmt(path)}: {excerpt(value)} is not one of {', '.join(repr(a) for a in allowed)}"
        raise ConfigError(msg + (f"; did you mean {hint!r}?" if hint else ""))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return parse_config(tp, value, path)
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            if origin is tuple and isinstance(value, str) is False and value is not None:
                pass
            raise ConfigError(
                f"{_fmt(path)}: expected a list, got {type(value).__name__} {excerpt(value)}"
            )
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{_fmt(path)}: expected a mapping, got {type(value).__name__}")
        args = get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(vt, v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{_fmt(path)}: expected true/false, got {excerpt(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return check_number(value, _fmt(path), -MAX_CONFIG_INT, MAX_CONFIG_INT, integer=True)
        raise ConfigError(f"{_fmt(path)}: expected an integer, got {excerpt(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(check_number(value, _fmt(path), -MAX_CONFIG_FLOAT, MAX_CONFIG_FLOAT))
        raise ConfigError(f"{_fmt(path)}: expected a number, got {excerpt(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{_fmt(path)}: expected a string, got {excerpt(value)}")
    return value


def _prefixed(path: str, exc: ConfigError) -> ConfigError:
    msg = str(exc)
    return ConfigError(msg if not path or msg.startswith(path) else f"{path}.{msg}")


class Config:
    """Base of the typed, frozen config dataclasses (``@dataclass(frozen=True)`` subclasses).

    ``__post_init__`` coerces every field to its annotation (ints to floats, mappings to
    nested configs, lists copied) and runs ``validate()``: a config object that exists is
    valid. Errors are ``ConfigError("field: message")``; ``parse_config`` adds the path.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.init:
                continue
            value = getattr(self, f.name)
            coerced = _coerce(hints.get(f.name, Any), value, f.name)
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
        validate = getattr(self, "validate", None)
        if callable(validate):
            validate()


def parse_config(cls: type, mapping: Any, path: str = ""):
    """Build dataclass ``cls`` from ``mapping`` strictly (unknown keys -> ConfigError)."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise ConfigError(
            f"{_fmt(path)}: expected a mapping of {cls.__name__} settings, "
            f"got {type(mapping).__name__} {excerpt(mapping)}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in mapping.items():
        key = str(key)
        sub = f"{path}.{short(key)}" if path else short(key)
        if key not in fields:
            hint = did_you_mean(key, list(fields))
            msg = f"{sub}: unknown key"
            if hint:
                msg += f"; did you mean {hint!r}?"
            msg += f" (allowed: {', '.join(sorted(fields))})"
            raise ConfigError(msg)
        kwargs[key] = _coerce(hints.get(key, Any), value, sub)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{_fmt(path)}: missing required key {missing[0]!r}")
    try:
        obj = cls(**kwargs)
    except ConfigError as exc:  # a Config validates itself on construction
        raise _prefixed(path, exc) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{_fmt(path)}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate) and not isinstance(obj, Config):
        try:
            validate()
        except ConfigError as exc:
            raise _prefixed(path, exc) from None
    return obj


def to_dict(cfg: Any) -> Any:
    """Inverse of parse_config: plain dicts/lists/scalars, tuples as lists."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.init}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    return cfg


def parse_scalar(text: str) -> Any:
    """'0.5' -> 0.5, '8' -> 8, 'true' -> True, 'null' -> None, '[a,b]' -> list, else the string.

    Deliberately not YAML: YAML 1.1 reads '2:4' (an N:M pattern) as the number 124.
    """
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none", "~"):
        return None
    if t.startswith("[") and t.endswith("]"):
        inner = t[1:-1].strip()
        return [parse_scalar(p) for p in inner.split(",")] if inner else []
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    return t


def parse_kv_spec(spec: str, what: str = "--step") -> tuple[str, dict]:
    """'prune:method=wanda,sparsity=0.5,targets=[q_proj,k_proj]' -> ('prune', {...}).

    Commas inside [...] do not split. Dotted keys nest: 'calibration.samples=32'.
    """
    key, sep, rest = spec.partition(":")
    key = key.strip()
    if not key:
        raise ConfigError(f"{what} {excerpt(spec)}: expected NAME or NAME:key=value,...")
    out: dict = {}
    if not sep or not rest.strip():
        return key, out
    parts, depth, cur = [], 0, ""
    for ch in rest:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for part in parts:
        if not part.strip():
            continue
        k, eq, v = part.partition("=")
        if not eq or not k.strip():
            raise ConfigError(f"{what} {excerpt(spec)}: {excerpt(part)} is not key=value")
        node = out
        names = k.strip().split(".")
        for n in names[:-1]:
            node = node.setdefault(n, {})
        node[names[-1]] = parse_scalar(v.strip())
    return key, out
