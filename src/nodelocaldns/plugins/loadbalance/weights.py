"""The ``weighted`` policy's weight file (CoreDNS plugin/loadbalance/weighted.go).

::

    # comment lines (and blank lines) are ignored
    www.example.com          a domain name on its own line starts a list
    100.64.1.1 3             IP WEIGHT, weight 1..255
    100.64.1.2 1

Names get a trailing dot and keep their case (they are compared with the reply's owner names as
written). The file is re-read every ``reload`` interval and re-parsed when its MD5 changed; a file
that fails to parse keeps the previous weights (CoreDNS logs the error).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from nodelocaldns.errors import CorefileError

Weights = dict[str, list[tuple[bytes, int]]]  # name -> [(16-byte address, weight)], file order

_UINT = re.compile(r"[0-9]+")


def _ip16(text: str) -> bytes | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return ip.packed if ip.version == 6 else b"\x00" * 10 + b"\xff\xff" + ip.packed


def parse_weights(text: str, filename: str) -> Weights:
    """Raises CorefileError naming the weight file and line, with CoreDNS's wording."""
    domains: Weights = {}
    dname = ""

    def err(msg: str, line: int) -> CorefileError:
        return CorefileError(msg, filename, line, "loadbalance")

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) == 1:
            if _ip16(fields[0]) is not None:
                raise err(
                    f'wrong domain name:"{fields[0]}" in weight file {filename}. (Maybe a missing weight value?)',
                    lineno,
                )
            dname = fields[0] if fields[0].endswith(".") else fields[0] + "."
            domains.setdefault(dname, [])
        elif len(fields) == 2:
            ip = _ip16(fields[0])
            if ip is None:
                raise err(f'wrong IP address:"{fields[0]}" in weight file {filename}', lineno)
            if not _UINT.fullmatch(fields[1]) or not 0 < int(fields[1]) <= 255:
                raise err(f'wrong weight value:"{fields[1]}" in weight file {filename}', lineno)
            if not dname:
                raise err(f"missing domain name in weight file {filename}", lineno)
            domains[dname].append((ip, int(fields[1])))
        else:
            raise err(f'could not parse weight line:"{line}" in weight file {filename}', lineno)
    return domains


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


@dataclass(slots=True)
class WeightsSource:
    """The current weights of one weight file, refreshed by ``poll(now)`` (injected clock and reader)."""

    path: str
    reload: float
    weights: Weights = field(default_factory=dict)
    digest: bytes = b""
    last_check: float | None = None
    read: Callable[[str], bytes | None] = _read

    def poll(self, now: float) -> bool:
        """True when new weights were loaded. Raises CorefileError for a file that does not parse,
        after remembering its digest (CoreDNS does not retry an unchanged bad file)."""
        if self.last_check is not None and (self.reload <= 0 or now - self.last_check < self.reload):
            return False
        self.last_check = now
        data = self.read(self.path)
        if data is None:
            return False
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        if digest == self.digest:
            return False
        self.digest = digest
        self.weights = parse_weights(data.decode("utf-8", "replace"), self.path)
        return True
