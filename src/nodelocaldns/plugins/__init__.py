"""Every Corefile directive, one folder each. A folder's ``__init__`` registers its ``Plugin``.

Adding a directive: create ``plugins/<name>/`` and add its name here (one line). Its place in the
query chain comes from ``core/order.py`` (CoreDNS plugin.cfg), not from this list. A plugin that
lives outside this package registers the same way, through ``load(module)`` (docs/ARCHITECTURE.md,
"How to add a plugin"; tests/system/test_plugin_walkthrough.py).
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
    "multisocket",
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


def load(*extra: str) -> None:
    """Import (and so register) every plugin, then each ``extra`` module by its full name. Idempotent."""
    for name in PLUGINS:
        importlib.import_module(f"{__name__}.{name}")
    for module in extra:
        importlib.import_module(module)
