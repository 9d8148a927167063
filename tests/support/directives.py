"""Corefile text to the Directive a plugin's parse() takes, and the file:line check for its errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from nodelocaldns.corefile.model import Directive
from nodelocaldns.corefile.parser import parse_corefile
from nodelocaldns.errors import CorefileError


def directive(text: str) -> Directive:
    """The first directive of ``.:53 { <text> }``; ``text`` starts on line 2 of file "Corefile"."""
    return parse_corefile(".:53 {\n" + text + "\n}\n", "Corefile")[0].directives[0]


def fails(parse: Callable[[Directive], Any], text: str, match: str = "", line: int = 0) -> CorefileError:
    """parse(directive(text)) raises a CorefileError naming Corefile and the line (2 + offset)."""
    with pytest.raises(CorefileError, match=match) as e:
        parse(directive(text))
    assert e.value.filename == "Corefile"
    assert e.value.line == (line or 2), str(e.value)
    assert str(e.value).startswith(f"Corefile:{e.value.line}"), str(e.value)
    return e.value


def directives_in(corefile: str, name: str) -> list[Directive]:
    """Every ``name`` directive in a whole Corefile (README examples)."""
    return [d for b in parse_corefile(corefile, "Corefile") for d in b.directives if d.name == name]
