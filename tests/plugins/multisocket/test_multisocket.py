"""multisocket: CoreDNS plugin/multisocket's syntax and limits (serving: tests/server/test_serve_native.py)."""

from __future__ import annotations

import pytest

from nodelocaldns.corefile.parser import parse_corefile
from nodelocaldns.errors import CorefileError
from nodelocaldns.plugins.multisocket import setup as ms_setup
from nodelocaldns.server.config import plan


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("multisocket", None),
        ("multisocket 1", 1),
        ("multisocket 1024", 1024),
        ("multisocket 0", "num sockets can not be zero or negative: 0"),
        ("multisocket -2", "num sockets can not be zero or negative: -2"),
        ("multisocket 1025", "num sockets exceeds maximum (1024): 1025"),
        ("multisocket x", "invalid num sockets"),
        ("multisocket 1 2", "Wrong argument count"),
    ],
)
def test_multisocket_syntax_and_limits_are_corednss(line: str, want: int | str | None) -> None:
    text = f".:53 {{\n    {line}\n}}\n"
    if isinstance(want, str):
        with pytest.raises(CorefileError, match=want.replace("(", r"\(").replace(")", r"\)")) as e:
            plan(parse_corefile(text, "Corefile"))
        assert "Corefile:2" in str(e.value)
    else:
        p = plan(parse_corefile(text, "Corefile"))
        assert p.blocks[0].configs["multisocket"] == [want]
        assert ms_setup.MAX_SOCKETS == 1024
