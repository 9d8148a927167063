"""Go's values and the functions templates call (``index``, ``parseInt``), as Go prints them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class TemplateExecError(RuntimeError):
    """Executing the template failed (Go: ``template: NAME: executing ...``)."""


class _NoValue:
    """Go's invalid reflect.Value: what a missing map key yields; prints ``<no value>``."""

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE = _NoValue()


class GoMap(dict[str, str]):
    """A Go ``map[string]string``: a missing key is ``<no value>`` to a field, ``""`` to ``index``."""


@dataclass(frozen=True)
class GoStruct:
    """A Go struct (or pointer to one) as templates see it: named fields, methods, how it prints."""

    type_name: str
    fields: Mapping[str, Any]
    methods: Mapping[str, Callable[..., Any]]
    text: str = ""


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "[]string"
    return type(value).__name__


def go_print(value: Any) -> str:
    """``fmt.Sprint`` for the values template data holds."""
    if value is NO_VALUE:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, GoMap):
        return "map[" + " ".join(f"{k}:{value[k]}" for k in sorted(value)) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_print(v) for v in value) + "]"
    if isinstance(value, GoStruct):
        return value.text
    return str(value)


# -- functions -------------------------------------------------------------------------------------


class _CallError(Exception):
    """The function ran and returned an error (Go: ``error calling F: ...``)."""


class _ArgError(Exception):
    """The arguments do not fit the function's signature."""


def _index(item: Any = NO_VALUE, *indices: Any) -> Any:
    if item is NO_VALUE:
        raise _ArgError("wrong number of args for index: want at least 1 got 0")
    for idx in indices:
        if isinstance(item, GoMap):
            if not isinstance(idx, str):
                raise _CallError(f"value has type {_go_type(idx)}; should be string")
            item = item.get(idx, "")
        elif isinstance(item, list | tuple):
            if isinstance(idx, bool) or not isinstance(idx, int):
                raise _CallError(f"cannot index slice/array with type {_go_type(idx)}")
            if not 0 <= idx < len(item):
                raise _CallError(f"index out of range: {idx}")
            item = item[idx]
        else:
            raise _CallError(f"can't index item of type {_go_type(item)}")
    return item


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def parse_uint(s: str, base: int, bit_size: int) -> int:
    """Go ``strconv.ParseUint``. Raises _CallError with Go's message."""

    def err(why: str) -> _CallError:
        return _CallError(f'strconv.ParseUint: parsing "{s}": {why}')

    if s == "":
        raise err("invalid syntax")
    text = s
    underscores = False
    if base == 0:
        base, underscores = 10, True
        if text[0] == "0":
            low = text[:2].lower()
            if len(text) >= 3 and low in ("0b", "0o", "0x"):
                base, text = {"0b": 2, "0o": 8, "0x": 16}[low], text[2:]
            else:
                base, text = 8, text[1:] or "0"
    elif not 2 <= base <= 36:
        raise _CallError(f'strconv.ParseUint: parsing "{s}": invalid base {base}')
    if bit_size == 0:
        bit_size = 64
    elif not 0 < bit_size <= 64:
        raise _CallError(f'strconv.ParseUint: parsing "{s}": invalid bit size {bit_size}')
    value = 0
    for ch in text:
        if ch == "_" and underscores:
            continue
        d = _DIGITS.find(ch.lower())
        if d < 0 or d >= base:
            raise err("invalid syntax")
        value = value * base + d
    if underscores and ("__" in text or text.startswith("_") or text.endswith("_")):
        raise err("invalid syntax")
    if value >= 1 << bit_size:
        raise err("value out of range")
    return value


def _parse_int(*args: Any) -> int:
    if len(args) != 3:
        raise _ArgError(f"wrong number of args for parseInt: want 3 got {len(args)}")
    s, base, bits = args
    if not isinstance(s, str):
        raise _ArgError(f"wrong type for value; expected string; got {_go_type(s)}")
    for v in (base, bits):
        if isinstance(v, bool) or not isinstance(v, int):
            raise _ArgError(f"wrong type for value; expected int; got {_go_type(v)}")
    return parse_uint(s, base, bits)


_FUNCS: dict[str, Callable[..., Any]] = {"index": _index, "parseInt": _parse_int}


# -- lexer/parser ----------------------------------------------------------------------------------
