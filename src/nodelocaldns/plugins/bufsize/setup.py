"""Parse the ``bufsize`` directive (CoreDNS plugin/bufsize/setup.go): ``bufsize [SIZE]``, 512..4096."""

from __future__ import annotations

import re

from nodelocaldns.corefile.model import Directive

ONCE = False  # CoreDNS uses the first and ignores repeats
DEFAULT_SIZE = 1232  # dnsflagday.net 2020
MIN_SIZE, MAX_SIZE = 512, 4096  # RFC 6891

_INT = re.compile(r"[+-]?[0-9]+")


def parse(d: Directive) -> int:
    if d.block:
        raise d.error("bufsize takes no block")
    if not d.args:
        return DEFAULT_SIZE
    if len(d.args) > 1:
        raise d.error("bufsize takes one SIZE")
    text = d.args[0]
    if not _INT.fullmatch(text):
        raise d.error(f"SIZE must be an integer, got {text!r}")
    size = int(text)
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise d.error(f"SIZE must be within {MIN_SIZE}-{MAX_SIZE}, got {size}")
    return size
