"""The process around a Server: one log format for `serve` and `node-cache`."""

from __future__ import annotations

import logging

from nodelocaldns.server.process import PLAIN, CoreDNSFormatter


def _line(level: int, msg: str, plain: bool = False) -> str:
    record = logging.LogRecord("x", level, __file__, 1, msg, None, None)
    if plain:
        record.__dict__.update(PLAIN)
    return CoreDNSFormatter("%(message)s").format(record)


def test_log_lines_look_like_coredns() -> None:
    assert (
        _line(logging.INFO, "Added back nodelocaldns rule - x") == "[INFO] Added back nodelocaldns rule - x"
    )
    assert _line(logging.CRITICAL, "boom") == "[FATAL] boom"
    assert _line(logging.WARNING, "w") == "[WARNING] w"
    # The server's own lines already carry their level.
    assert (
        _line(logging.ERROR, "[ERROR] plugin/errors: 2 x. A: timeout")
        == "[ERROR] plugin/errors: 2 x. A: timeout"
    )


def test_the_banner_has_no_level_like_coredns() -> None:
    assert _line(logging.INFO, ".:53 on 169.254.20.10", plain=True) == ".:53 on 169.254.20.10"
    assert _line(logging.INFO, "nodelocaldns-1.0", plain=True) == "nodelocaldns-1.0"
