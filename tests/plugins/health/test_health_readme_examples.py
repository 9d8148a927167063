"""Every Corefile in CoreDNS's plugin/health/README.md (HEAD) parses, and runs as documented.

The first example uses ``erratic``, a CoreDNS test plugin node-cache does not build in: it is a
file:line error, and with ``whoami`` in its place the example runs.
"""

from __future__ import annotations

import urllib.request

import pytest

from nodelocaldns.errors import CorefileError
from support.ports import free_port
from support.readme import localize, plans
from support.server import serve

TWO_BLOCKS = """\
com {
    whoami
    health :8080
}

net {
    erratic
    health :8081
}
"""
OTHER_PORT = """\
. {
    health localhost:8091
}
"""
LAMEDUCK = """\
. {
    health localhost:8092 {
        lameduck 1s
    }
}
"""


def get(port: int, path: str = "/health") -> tuple[int, str]:
    # serve() waits for the DNS port; the HTTP listeners are up before it answers (no retry here).
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
        return r.status, r.read().decode()


def test_erratic_is_a_file_line_error() -> None:
    with pytest.raises(CorefileError, match=r"^README.md:7 .*'erratic' is a CoreDNS plugin not available"):
        plans(TWO_BLOCKS)


@pytest.mark.parametrize("corefile", [OTHER_PORT, LAMEDUCK], ids=["port", "lameduck"])
def test_every_other_example_parses(corefile: str) -> None:
    assert plans(corefile) == 1


def test_two_blocks_two_endpoints() -> None:
    a, b = free_port("tcp"), free_port("tcp")
    text = (
        TWO_BLOCKS.replace("erratic", "whoami")
        .replace(":8080", f"127.0.0.1:{a}")
        .replace(":8081", f"127.0.0.1:{b}")
    )
    assert plans(text) == 2
    with serve(localize(text)) as s:
        assert get(a) == (200, "OK") and get(b) == (200, "OK")
        assert s.query("example.com.").rcode() == 0


@pytest.mark.parametrize(
    ("corefile", "port"), [(OTHER_PORT, "8091"), (LAMEDUCK, "8092")], ids=["port", "lameduck"]
)
def test_endpoint_answers_ok(corefile: str, port: str) -> None:
    p = free_port("tcp")
    with serve(localize(corefile.replace(f"localhost:{port}", f"127.0.0.1:{p}"))):
        assert get(p) == (200, "OK")
