"""Every Corefile in CoreDNS's plugin/bind/README.md (HEAD) parses, and runs as documented."""

from __future__ import annotations

import socket
import time

import dns.message
import dns.query
import dns.rcode
import pytest

from support.ports import free_port
from support.readme import plans
from support.server import serve

V4 = """\
. {
    bind 127.0.0.1
}
"""
BOTH = """\
. {
    bind 127.0.0.1 ::1
}
"""
BOTH_TWO_LINES = """\
. {
    bind 127.0.0.1
    bind ::1
}
"""
LO = """\
. {
    bind lo
}
"""
LO_EXCEPT = """\
. {
    bind lo {
        except 127.0.0.1
    }
}
"""
EXAMPLES = {"V4": V4, "BOTH": BOTH, "BOTH_TWO_LINES": BOTH_TWO_LINES, "LO": LO, "LO_EXCEPT": LO_EXCEPT}


@pytest.mark.parametrize("corefile", list(EXAMPLES.values()), ids=list(EXAMPLES))
def test_every_example_parses(corefile: str) -> None:
    assert plans(corefile) == 1


def answers(host: str, port: int) -> bool:
    q = dns.message.make_query("example.org.", "A")
    try:
        # A block with only bind has no plugin chain: REFUSED, as CoreDNS, shows the listener.
        return dns.query.udp(q, host, port=port, timeout=0.5).rcode() == dns.rcode.REFUSED
    except (OSError, dns.exception.Timeout):
        return False


def wait(host: str, port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not answers(host, port):
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("corefile", "v4", "v6"),
    [
        (V4, True, False),
        (BOTH, True, True),
        (BOTH_TWO_LINES, True, True),
        (LO, True, True),
        (LO_EXCEPT, False, True),
    ],
    ids=["V4", "BOTH", "BOTH_TWO_LINES", "LO", "LO_EXCEPT"],
)
def test_listens_exactly_where_it_says(corefile: str, v4: bool, v6: bool) -> None:
    port = free_port()
    with serve(corefile.replace(". {", ".:{PORT} {", 1), port=port, wait=False):
        wait("::1" if v6 else "127.0.0.1", port)
        assert answers("127.0.0.1", port) is v4
        assert answers("::1", port) is v6
        # Nothing on the other loopback addresses or the wildcard.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", port))  # free: the server holds only what it was told
