"""The parsed shape of a Corefile: server blocks of directives, every piece carrying file:line."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from nodelocaldns.errors import CorefileError


@dataclass(frozen=True, slots=True)
class Directive:
    """One directive line, e.g. ``forward . 10.0.0.10 { force_tcp }``.

    ``block`` holds the lines inside ``{ }``, each again a Directive (first token is its name).
    """

    name: str
    args: tuple[str, ...] = ()
    block: tuple[Directive, ...] = ()
    filename: str = "Corefile"
    line: int = 0

    def error(self, message: str) -> CorefileError:
        """An error that names this directive's file, line and name."""
        return CorefileError(message, self.filename, self.line, self.name)


@dataclass(frozen=True, slots=True)
class ServerKey:
    """One server-block key, ``[dns://]zone[:port]``, normalized."""

    zone: str  # lowercased, fully qualified: "cluster.local.", "." ...
    port: int = 53
    transport: str = "dns"
    original: str = ""


@dataclass(frozen=True, slots=True)
class ServerBlock:
    """A server block: its keys and its directives in file order."""

    keys: tuple[ServerKey, ...]
    directives: tuple[Directive, ...] = ()
    filename: str = "Corefile"
    line: int = 0
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def directives_named(self, name: str) -> list[Directive]:
        return [d for d in self.directives if d.name == name]


def corefile_hash(blocks: tuple[ServerBlock, ...]) -> str:
    """SHA-512 of the parsed blocks (ignores comments, whitespace, and file positions)."""

    def strip(o: object) -> object:
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in ("filename", "line", "extra")}
        if isinstance(o, list | tuple):
            return [strip(v) for v in o]
        return o

    data = [strip(asdict(b)) for b in blocks]
    return hashlib.sha512(json.dumps(data, sort_keys=True).encode()).hexdigest()
