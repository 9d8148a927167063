"""A YAML emitter for Kubernetes manifests: block style, no dependency.

pyyaml is only a dev dependency, and the node image should not grow one for a tool that
prints manifests. Manifests hold only maps, lists, strings, ints, bools and None, so
this stays small: anything not obviously a plain scalar is written as a JSON string, which
YAML reads back as the same string; multi-line strings (Corefiles) become ``|`` blocks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# Plain scalars that YAML 1.1 or 1.2 would read as something other than a string.
_RESERVED = re.compile(
    r"""^(?:~|null|Null|NULL|true|True|TRUE|false|False|FALSE
         |y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF
         |[-+]?(?:\.inf|\.Inf|\.INF)|\.nan|\.NaN|\.NAN)$""",
    re.X,
)
_NUMBERISH = re.compile(r"^[-+]?(?:[0-9][0-9_:.,eE+-]*|\.[0-9].*|0[xXoObB].*)$")
_PLAIN = re.compile(r"^[A-Za-z0-9_./][A-Za-z0-9_./@%+=-]*(?::[A-Za-z0-9_./@%+=-]+)*$")


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    # No floats: YAML 1.1 readers take "1e-05" for a string; no manifest field needs one.
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if (
            value
            and _PLAIN.fullmatch(value)
            and not _RESERVED.fullmatch(value)
            and not _NUMBERISH.fullmatch(value)
        ):
            return value
        return _quoted(value)
    if isinstance(value, Mapping) and not value:
        return "{}"
    if isinstance(value, Sequence) and not value:
        return "[]"
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\x00": "\\0"}


def _quoted(text: str) -> str:
    """A double-quoted scalar. Unlike json.dumps, characters beyond the BMP stay whole:
    YAML does not join the surrogate pairs JSON would write for them."""
    out = []
    for c in text:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c.isprintable():
            out.append(c)
        elif ord(c) < 0x100:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def _block_scalar(text: str, indent: int) -> str | None:
    """``|`` block for a multi-line string, or None when the text needs quoting instead."""
    if "\n" not in text.rstrip("\n") or any(not (c.isprintable() or c == "\n") for c in text):
        return None
    lines = text.split("\n")
    if text.endswith("\n\n"):
        chomp = "+"
    elif text.endswith("\n"):
        chomp = ""
    else:
        chomp = "-"
    if text.endswith("\n"):
        lines = lines[:-1]
    # Leading spaces on the first non-empty line would be read as the block's indentation.
    first = next(line for line in lines if line)
    indicator = "2" if first.startswith(" ") else ""
    pad = " " * indent
    body = "\n".join(pad + line if line else "" for line in lines)
    return f"|{indicator}{chomp}\n{body}"


def _emit(value: object, indent: int, out: list[str], prefix: str) -> None:
    """Append ``value`` as lines; ``prefix`` is what precedes it on its first line."""
    pad = " " * indent
    if isinstance(value, Mapping):
        if not value:
            out.append(f"{prefix}{{}}")
            return
        first = True
        for key, item in value.items():
            lead = prefix if first else pad
            first = False
            _emit_item(f"{lead}{_scalar(str(key))}:", item, indent, out)
        return
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            out.append(f"{prefix}[]")
            return
        first = True
        for item in value:
            lead = prefix if first else pad
            first = False
            if isinstance(item, Mapping) and item:
                _emit(item, indent + 2, out, f"{lead}- ")
            elif isinstance(item, Sequence) and not isinstance(item, str) and item:
                _emit(item, indent + 2, out, f"{lead}- ")
            else:
                _emit_item(f"{lead}-", item, indent, out)
        return
    out.append(f"{prefix}{_scalar(value)}")


def _emit_item(head: str, item: object, indent: int, out: list[str]) -> None:
    if isinstance(item, Mapping) and item:
        out.append(head)
        _emit(item, indent + 2, out, " " * (indent + 2))
    elif isinstance(item, Sequence) and not isinstance(item, str) and item:
        # Lists under a key sit at the key's indentation, as kubectl writes them.
        out.append(head)
        _emit(item, indent, out, " " * indent)
    elif isinstance(item, str) and (block := _block_scalar(item, indent + 2)) is not None:
        out.append(f"{head} {block}")
    else:
        out.append(f"{head} {_scalar(item)}")


def dump(value: object) -> str:
    """One YAML document for ``value`` (a map or a list), ending in a newline."""
    out: list[str] = []
    _emit(value, 0, out, "")
    return "\n".join(out) + "\n"


def dump_all(documents: Sequence[object], comment: str = "") -> str:
    """A ``---``-separated stream; ``comment`` lines go first, each prefixed with ``# ``."""
    head = "".join(f"# {line}".rstrip() + "\n" for line in comment.splitlines())
    return head + "---\n".join(dump(d) for d in documents)
