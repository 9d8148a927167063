"""Every Corefile directive, one folder each. A folder's ``__init__`` registers its ``Plugin``.

Adding a directive: create ``plugins/<name>/`` and add its name here (one line). Its place in the
query chain comes from ``core/order.py`` (CoreDNS plugin.cfg), not from this list.
"""

from __future__ import annotations

import importlib

PLUGINS: tuple[str, ...] = (
    "bind",
    "bufsize",
    "cache",
    "debug",
    "dns64",
    "errors",
    "forward",
    "health",
    "hosts",
    "loadbalance",
    "log",
    "loop",
    "pprof",
    "prometheus",
    "ready",
    "reload",
    "rewrite",
    "template",
    "timeouts",
    "trace",
    "whoami",
)


def load() -> None:
    """Import (and so register) every plugin. Idempotent."""
    for name in PLUGINS:
        importlib.import_module(f"{__name__}.{name}")
