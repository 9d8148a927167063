"""Parse the ``whoami`` directive (CoreDNS plugin/whoami/setup.go): no arguments, no block."""

from __future__ import annotations

from nodelocaldns.corefile.model import Directive

ONCE = False  # CoreDNS reads the first and ignores repeats


def parse(d: Directive) -> None:
    if d.args or d.block:
        raise d.error("whoami takes no arguments")
