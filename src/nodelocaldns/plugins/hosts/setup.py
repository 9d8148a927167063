"""Parse the ``hosts`` directive (CoreDNS plugin/hosts/setup.go, v1.14.7).

``hosts [FILE [ZONES...]] { INLINE...  ttl SECONDS  no_reverse  reload DURATION  fallthrough [ZONES...]
fallthrough_unsupported }``. Once per server block. Any block line that is not a keyword is a hosts-file
line, but only until ``fallthrough`` has been seen; after it an unknown word is an error.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

from nodelocaldns.core.duration import parse_duration
from nodelocaldns.corefile.keys import normalize_zones
from nodelocaldns.corefile.model import Directive

ONCE = True  # CoreDNS plugin.ErrOnce
DEFAULT_PATH = "/etc/hosts"
DEFAULT_TTL = 3600
DEFAULT_RELOAD = 5.0

_INT = re.compile(r"[+-]?[0-9]+")  # Go strconv.Atoi: no spaces, no underscores


@dataclass(frozen=True, slots=True)
class HostsConfig:
    path: str = DEFAULT_PATH
    zones: tuple[str, ...] = ()  # empty: the server block's zones
    inline: tuple[str, ...] = ()  # hosts-file lines written inside the block, tokens joined by spaces
    ttl: int = DEFAULT_TTL
    auto_reverse: bool = True
    reload: float = DEFAULT_RELOAD  # seconds between file checks; 0: read once at start-up
    fallthrough: tuple[str, ...] = ()  # zones that fall through; empty: no fallthrough
    fallthrough_unsupported: bool = False
    warnings: tuple[str, ...] = ()  # CoreDNS logs these at setup and carries on


def _path_warnings(d: Directive, path: str) -> tuple[str, ...]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (f"File does not exist: {path}",)
    except OSError as e:
        raise d.error(f"unable to access hosts file '{path}': {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        return (f'Hosts file "{path}" is a directory',)
    return ()


def parse(d: Directive) -> HostsConfig:
    args = list(d.args)
    path = DEFAULT_PATH
    warnings: tuple[str, ...] = ()
    if args:
        path = args.pop(0)
        # CoreDNS joins a relative path to the *root* plugin's directory; node-cache has no root plugin.
        warnings = _path_warnings(d, path)
    zones = tuple(normalize_zones(args, d)) if args else ()
    inline: list[str] = []
    ttl = DEFAULT_TTL
    auto_reverse = True
    reload = DEFAULT_RELOAD
    fall: tuple[str, ...] = ()
    unsupported = False
    for sub in d.block:
        a = sub.args
        if sub.name == "fallthrough":
            fall = tuple(normalize_zones(a, sub)) if a else (".",)
        elif sub.name == "fallthrough_unsupported":
            if a:
                raise sub.error("fallthrough_unsupported takes no arguments")
            unsupported = True
        elif sub.name == "no_reverse":
            auto_reverse = False
        elif sub.name == "ttl":
            if not a:
                raise sub.error("ttl needs a time in second")
            if not _INT.fullmatch(a[0]):
                raise sub.error("ttl needs a number of second")
            ttl = int(a[0])
            if not 0 < ttl <= 65535:
                raise sub.error("ttl provided is invalid")
        elif sub.name == "reload":
            if len(a) != 1:
                raise sub.error("reload needs a duration (zero seconds to disable)")
            text = a[0]
            negative = text.startswith("-")
            try:
                reload = parse_duration(text[1:] if negative or text.startswith("+") else text)
            except ValueError:
                raise sub.error(f"invalid duration for reload '{text}'") from None
            if negative and reload > 0:
                raise sub.error(f"invalid negative duration for reload '{text}'")
        elif not fall:
            inline.append(" ".join((sub.name, *a)))
        else:
            raise sub.error(f"unknown property '{sub.name}'")
    if unsupported and not fall:
        raise d.error("fallthrough_unsupported requires fallthrough")
    return HostsConfig(
        path=path,
        zones=zones,
        inline=tuple(inline),
        ttl=ttl,
        auto_reverse=auto_reverse,
        reload=reload,
        fallthrough=fall,
        fallthrough_unsupported=unsupported,
        warnings=warnings,
    )
