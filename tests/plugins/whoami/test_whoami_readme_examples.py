"""Every Corefile in CoreDNS's plugin/whoami/README.md parses, and runs as documented."""

from __future__ import annotations

import dns.rcode
import pytest

from support.readme import localize, plans
from support.server import serve

EXAMPLE = """\
example.org {
    whoami
}
"""


@pytest.mark.parametrize("corefile", [EXAMPLE, ". {\n    whoami\n}\n"])
def test_every_example_parses(corefile: str) -> None:
    assert plans(corefile) == 1


def test_example_answers_with_the_client_address_and_port() -> None:
    with serve(localize(EXAMPLE)) as s:
        r = s.query("example.org.", "A")
        assert r.rcode() == dns.rcode.NOERROR and not r.answer
        addr, srv = r.additional
        assert addr.to_text() == "example.org. 0 IN A 127.0.0.1"
        assert srv.name.to_text() == "_udp.example.org." and srv[0].target.to_text() == "."
        assert 0 < srv[0].port < 65536
        # Outside the block's zone nothing serves the query.
        assert s.query("example.net.", "A").rcode() == dns.rcode.REFUSED
