"""Build typed dataclasses from plain mappings (parsed YAML): unknown keys rejected, scalars
coerced to the annotated type (YAML reads ``1e-3`` as a string), every error naming its dotted
path. Field documentation lives in ``field(metadata={"doc": ...})`` next to the field itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from growlm.errors import InvalidRecipe

T = TypeVar("T")


def doc(text: str, aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """Field metadata carrying the field's documentation (shown by ``describe``):
    ``lr: float = field(default=1e-3, metadata=doc("peak learning rate"))``. ``aliases`` maps
    other spellings a user may write to the value they mean (``bfloat16`` -> ``bf16``)."""
    return {"doc": text, "aliases": aliases or {}}


def build(cls: type[T], raw: Any, path: str) -> T:
    """Instantiate dataclass ``cls`` from mapping ``raw`` (``path`` names it in errors)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidRecipe(f"{path or 'recipe'}: expected a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted((key for key in raw if key not in fields), key=str)
    if unknown:
        raise InvalidRecipe(
            f"{_join(path, str(unknown[0]))}: unknown key (allowed: {', '.join(sorted(fields))})"
        )
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name in raw:
            value = raw[name]
            if isinstance(value, str):
                value = f.metadata.get("aliases", {}).get(value, value)
            values[name] = coerce(hints[name], value, _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise InvalidRecipe(f"{_join(path, name)}: required key is missing")
    return cls(**values)


def coerce(tp: Any, value: Any, path: str) -> Any:
    """``value`` as type ``tp`` or an InvalidRecipe naming ``path`` and what was expected."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(option, value, path)
            except InvalidRecipe as exc:
                errors.append(str(exc))
        raise InvalidRecipe(errors[0] if errors else f"{path}: invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise InvalidRecipe(
                f"{path}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}"
            )
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise InvalidRecipe(f"{path}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise InvalidRecipe(f"{path}: expected {len(args)} values, got {len(value)}")
            return tuple(
                coerce(a, v, f"{path}.{i}")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        item = args[0] if args else Any
        return [coerce(item, v, f"{path}.{i}") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise InvalidRecipe(f"{path}: expected a mapping, got {value!r}")
        args = get_args(tp)
        if args and args[0] is str:
            for key in value:
                if not isinstance(key, str):
                    raise InvalidRecipe(f"{path}: keys must be names, got {key!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build(typing.cast(type, tp), value, path)
    return _scalar(tp, value, path)


def _scalar(tp: Any, value: Any, path: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise InvalidRecipe(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise InvalidRecipe(f"{path}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        number = _number(value, path, "an integer")
        if number != int(number):
            raise InvalidRecipe(f"{path}: expected an integer, got {value!r}")
        return int(number)
    if tp is float:
        if isinstance(value, bool):
            raise InvalidRecipe(f"{path}: expected a number, got {value!r}")
        return _number(value, path, "a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise InvalidRecipe(f"{path}: expected a string, got {value!r}")
    raise AssertionError(f"unsupported schema type {tp!r} at {path}")


def _number(value: Any, path: str, what: str) -> float:
    number: float | None = None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            number = math.inf
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value.replace("_", ""))
    if number is None:
        raise InvalidRecipe(f"{path}: expected {what}, got {value!r}")
    if not math.isfinite(number):
        raise InvalidRecipe(f"{path}: expected {what}, got {value!r} (not finite)")
    return number


def yaml_problem(exc: Exception) -> str:
    """A YAML parse error as one line: what is wrong and where (line:column, 1-based)."""
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("growlm.train.recipe.", "")


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, doc) for every field, recursing into nested dataclasses."""
    rows: list[tuple[str, str, str, str]] = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        tp = hints[f.name]
        inner = [a for a in get_args(tp) if dataclasses.is_dataclass(a)]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(typing.cast(type, tp), key))
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "required"
        rows.append((key, _type_name(tp), default, f.metadata.get("doc", "")))
        if inner and get_origin(tp) is list:
            rows.extend(describe(typing.cast(type, inner[0]), f"{key}[]"))
        elif inner:
            rows.extend(describe(typing.cast(type, inner[0]), key))
    return rows


def markdown_table(cls: type) -> str:
    """``describe(cls)`` as the Markdown table of docs/train.md (``scripts/recipe_fields.py``
    writes it there; a test checks the two agree)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, tp, default, text in describe(cls):
        cells = (f"`{key}`", tp, default, text)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
