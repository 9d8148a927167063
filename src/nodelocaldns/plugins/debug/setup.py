"""Parse the ``debug`` directive (CoreDNS plugin/debug/debug.go): no arguments.

In CoreDNS ``debug`` does two things, process-wide once any block has it: it turns off the
panic recovery around each query and turns on ``[DEBUG]`` log lines. Only the second applies here:
a Python exception in a plugin cannot take the process down, the server answers SERVFAIL and logs
it either way, so there is no crash-recovery switch to flip.
"""

from __future__ import annotations

from nodelocaldns.corefile.model import Directive

ONCE = False


def parse(d: Directive) -> bool:
    """True: debug logging on. Raises for any argument or block (CoreDNS ``c.ArgErr``)."""
    if d.args or d.block:
        raise d.error("debug takes no arguments")
    return True


def enabled(flags: list[bool]) -> bool:
    """Debug logging is on for the whole process when any server block says ``debug``."""
    return any(flags)
