"""Every Corefile in CoreDNS's plugin/hosts/README.md (v1.14.7) parses, and runs as documented.

As CoreDNS's test/readme_test.go, the examples are taken as written; to run them here the hosts
file they name is one the test writes (never the machine's /etc/hosts) and 8.8.8.8 is a local unbound.
"""

from __future__ import annotations

from pathlib import Path

import dns.rcode
import pytest

from support.readme import localize, plans
from support.server import serve
from support.upstreams import UpstreamServer

LOAD_ETC_HOSTS = """\
. {
    hosts
}
"""
LOAD_FILE = """\
. {
    hosts example.hosts
}
"""
ONLY_ZONES = """\
. {
    hosts example.hosts example.org example.net {
        fallthrough
    }
}
"""
INLINE = """\
example.hosts example.org {
    hosts {
        10.0.0.1 example.org
        fallthrough
    }
    whoami
}
"""
WILDCARD = """\
. {
    hosts example.hosts example.com {
        192.168.1.10 *.example.com
        192.168.1.11 www.example.com
        fallthrough example.com
    }
    forward . 8.8.8.8
}
"""
EXAMPLES = (LOAD_ETC_HOSTS, LOAD_FILE, ONLY_ZONES, INLINE, WILDCARD)


@pytest.mark.parametrize("corefile", EXAMPLES)
def test_every_example_parses(corefile: str) -> None:
    assert plans(corefile) == 1


def a(r: object) -> list[str]:
    return [rd.to_text() for rs in r.answer for rd in rs]  # type: ignore[attr-defined]


@pytest.fixture
def hosts_file(tmp_path: Path) -> str:
    f = tmp_path / "example.hosts"
    f.write_text("10.1.1.1 web.example.org\n10.1.1.2 db.example.net\n10.1.1.3 other.example.com\n")
    return str(f)


def test_load_file_serves_it(hosts_file: str) -> None:
    with serve(localize(LOAD_FILE, files={"example.hosts": hosts_file})) as s:
        assert a(s.query("web.example.org.", "A")) == ["10.1.1.1"]
        assert a(s.query("3.1.1.10.in-addr.arpa.", "PTR")) == ["other.example.com."]


def test_only_the_listed_zones_are_served_and_the_rest_falls_through(hosts_file: str) -> None:
    with serve(localize(ONLY_ZONES, files={"example.hosts": hosts_file})) as s:
        assert a(s.query("web.example.org.", "A")) == ["10.1.1.1"]
        assert a(s.query("db.example.net.", "A")) == ["10.1.1.2"]
        # example.com is not one of the plugin's zones: never loaded, the query goes on (and the
        # chain ends there: SERVFAIL "no next plugin").
        r = s.query("other.example.com.", "A")
        assert r.rcode() == dns.rcode.SERVFAIL and not r.answer


def test_inline_entries_fall_through_to_whoami() -> None:
    with serve(localize(INLINE)) as s:
        assert a(s.query("example.org.", "A")) == ["10.0.0.1"]
        who = s.query("host.example.hosts.", "A")
        assert who.rcode() == dns.rcode.NOERROR and who.additional[0][0].to_text() == "127.0.0.1"


def test_wildcard_with_exceptions_and_fallthrough_for_the_rest(hosts_file: str, make_unbound: object) -> None:
    up: UpstreamServer = make_unbound(  # type: ignore[operator]
        {"example.com.": ["deep.sub.example.com. 30 IN A 198.18.5.5"], "example.net.": []}
    )
    with serve(localize(WILDCARD, up.address, files={"example.hosts": hosts_file})) as s:
        assert a(s.query("anything.example.com.", "A")) == ["192.168.1.10"]
        assert a(s.query("www.example.com.", "A")) == ["192.168.1.11"]  # the exact name wins
        # Each source is looked up on its own (CoreDNS: file map, then inline map): the file's exact
        # name and the inline wildcard both answer.
        assert a(s.query("other.example.com.", "A")) == ["10.1.1.3", "192.168.1.10"]
        # A wildcard covers exactly one label: deeper names fall through to forward.
        assert a(s.query("deep.sub.example.com.", "A")) == ["198.18.5.5"]
        assert up.query_count("deep.sub.example.com.") == 1
