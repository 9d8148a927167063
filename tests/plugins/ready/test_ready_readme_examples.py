"""The Corefiles in CoreDNS's plugin/ready/README.md (HEAD; its examples are plain ``~~~ txt``
blocks, so CoreDNS's readme_test skips them) parse, and run as documented."""

from __future__ import annotations

import urllib.request

import pytest

from nodelocaldns.errors import CorefileError
from support.ports import free_port
from support.readme import localize, plans
from support.server import serve

TWO_BLOCKS = """\
. {
    ready
    erratic
}

example.org {
    ready
    whoami
}
"""
OTHER_PORT = """\
. {
    ready localhost:8091
}
"""


def test_erratic_is_a_file_line_error() -> None:
    with pytest.raises(CorefileError, match=r"^README.md:3 .*'erratic' is a CoreDNS plugin not available"):
        plans(TWO_BLOCKS)


def test_ready_on_another_port_reports_ready() -> None:
    assert plans(OTHER_PORT) == 1
    p = free_port("tcp")
    with serve(localize(OTHER_PORT.replace("localhost:8091", f"127.0.0.1:{p}"))):
        with urllib.request.urlopen(f"http://127.0.0.1:{p}/ready", timeout=3) as r:
            assert r.status == 200 and r.read() == b"OK"
