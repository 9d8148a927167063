"""Go ``regexp`` (RE2) patterns from a Corefile, compiled with Python's ``re``.

CoreDNS compiles ``match``/``regex`` arguments with Go's regexp package. Python's ``re`` agrees on the
common subset and on leftmost-first matching, but not everywhere, so a pattern is checked and translated
here before compiling:

* rejected because RE2 rejects them (CoreDNS would fail to start too): backreferences, lookaround,
  atomic groups, conditionals, ``(?P=name)``, ``(?#...)``, the ``x a L u`` flags, ``\\Z``;
* rejected because Python cannot express them the RE2 way: ``\\pN``/``\\p{...}`` classes, ``\\Q...\\E``,
  ``\\C``, ``\\z``, ``\\x{...}``, the ``U`` (ungreedy) flag, octal escapes, ``{,n}`` (a literal in RE2,
  a repeat in Python);
* translated: ``(?<name>`` to ``(?P<name>``, POSIX classes ``[[:alpha:]]`` to ASCII ranges;
* compiled with ``re.ASCII``: RE2's ``\\d \\w \\s \\b`` are ASCII-only.

``$`` differs only before a trailing newline, which a DNS name in presentation form never has.
"""

from __future__ import annotations

import re

MAX_PATTERN_LEN = 10000  # CoreDNS maxRegexpLen: refuse huge patterns before compiling

_POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_BAD_ESCAPES = {
    "p": "Unicode class \\p",
    "P": "Unicode class \\P",
    "Q": "\\Q...\\E quoting",
    "E": "\\Q...\\E quoting",
    "C": "\\C (any byte)",
    "z": "\\z",
    "Z": "\\Z (RE2 has no \\Z)",
    "G": "\\G",
}
_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PatternError(ValueError):
    """The pattern is not valid RE2, or uses RE2 syntax this implementation cannot match the same way."""


def translate(pattern: str) -> str:
    """An RE2 pattern as an equivalent Python ``re`` pattern. Raises PatternError."""
    if len(pattern) > MAX_PATTERN_LEN:
        raise PatternError(f"regex pattern too long: {len(pattern)} > {MAX_PATTERN_LEN}")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            out.append(_escape(pattern, i))
            i += 2
        elif ch == "[":
            text, i = _char_class(pattern, i)
            out.append(text)
        elif ch == "(" and pattern.startswith("(?", i):
            text, i = _group_open(pattern, i)
            out.append(text)
        elif ch == "{" and pattern.startswith("{,", i):
            raise PatternError("'{,n}' is a literal in RE2 but a repeat in Python; write {0,n}")
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _escape(pattern: str, i: int) -> str:
    if i + 1 >= len(pattern):
        raise PatternError("trailing backslash at end of expression")
    nxt = pattern[i + 1]
    if nxt in _BAD_ESCAPES:
        raise PatternError(f"{_BAD_ESCAPES[nxt]} is not supported")
    if nxt.isdigit():
        raise PatternError(f"backreferences and octal escapes (\\{nxt}) are not supported in RE2")
    if nxt == "x" and pattern.startswith("{", i + 2):
        raise PatternError("\\x{...} escapes are not supported; use \\xHH")
    if nxt.isalpha() and nxt not in "abfnrtvdDsSwWbBAx":
        raise PatternError(f"invalid escape sequence \\{nxt}")
    return pattern[i : i + 2]


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    """``[...]`` starting at ``i``: returns the Python text and the index after ``]``."""
    out = ["["]
    i += 1
    n = len(pattern)
    if i < n and pattern[i] == "^":
        out.append("^")
        i += 1
    first = True
    while i < n:
        ch = pattern[i]
        if ch == "]" and not first:
            out.append("]")
            return "".join(out), i + 1
        first = False
        if ch == "[" and pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            if end < 0:
                raise PatternError("missing closing ]")
            name = pattern[i + 2 : end]
            if name.startswith("^"):
                raise PatternError(f"negated POSIX class [:{name}:] is not supported")
            if name not in _POSIX:
                raise PatternError(f"invalid character class range [:{name}:]")
            out.append(_POSIX[name])
            i = end + 2
        elif ch == "\\":
            out.append(_escape(pattern, i))
            i += 2
        elif ch == "[":
            out.append("\\[")  # Python warns on a bare '[' in a set (future nested sets); RE2: literal
            i += 1
        else:
            out.append(ch)
            i += 1
    raise PatternError("missing closing ]")


def _group_open(pattern: str, i: int) -> tuple[str, int]:
    """``(?...`` starting at ``i``."""
    rest = pattern[i + 2 :]
    if rest.startswith("P<") or rest.startswith("<"):
        start = 4 if rest.startswith("P<") else 3
        if rest.startswith("<=") or rest.startswith("<!"):
            raise PatternError("lookbehind is not supported in RE2")
        end = pattern.find(">", i + start)
        name = pattern[i + start : end] if end > 0 else ""
        if end < 0 or not _GROUP_NAME.fullmatch(name):
            raise PatternError(f"invalid named capture {pattern[i : end + 1 if end > 0 else None]!r}")
        return f"(?P<{name}>", end + 1
    if rest[:1] in ("=", "!"):
        raise PatternError("lookahead is not supported in RE2")
    if rest[:1] in (">", "(", "#") or rest.startswith("P="):
        raise PatternError(f"'(?{rest[:2]}' is not supported in RE2")
    m = re.match(r"([A-Za-z]*)(?:-([A-Za-z]*))?([:)])", rest)
    if not m:
        raise PatternError(f"invalid or unsupported Perl syntax '(?{rest[:1]}'")
    flags = (m.group(1) or "") + (m.group(2) or "")
    for f in flags:
        if f == "U":
            raise PatternError("the U (ungreedy) flag is not supported")
        if f not in "ims":
            raise PatternError(f"invalid or unsupported Perl syntax: flag {f!r}")
    if m.group(3) == ")" and i > 0:
        # RE2 applies a mid-pattern (?i) to the rest of the group; Python only allows it up front.
        raise PatternError("inline flags (?flags) must start the pattern; use (?flags:...) instead")
    return "(?" + m.group(0), i + 2 + m.end()


def compile_re2(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 pattern. Raises PatternError with a readable reason."""
    text = translate(pattern)
    try:
        return re.compile(text, re.ASCII)
    except re.error as exc:
        raise PatternError(f"invalid regex {pattern!r}: {exc}") from None
