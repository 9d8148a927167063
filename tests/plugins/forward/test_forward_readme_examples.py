"""Every Corefile in CoreDNS's plugin/forward/README.md (HEAD) parses, and runs as documented.

As CoreDNS's test/readme_test.go, every ``~~~ corefile`` block is taken as written. To run one
here, each upstream it names (private addresses, /etc/resolv.conf, public DNS-over-TLS resolvers)
becomes a local unbound on loopback; a ``tls://`` one is an unbound TLS listener whose certificate
carries the README's ``tls_servername`` and is trusted through ``SSL_CERT_FILE`` (the examples have
no ``tls`` line: Go's system roots). The ``https://`` example is a Corefile error here: DNS over
HTTPS is a documented difference (docs/compatibility.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.rcode
import pytest

from nodelocaldns.errors import CorefileError
from support.ports import free_port
from support.readme import localize, plans
from support.server import serve
from support.tlscerts import Certs, make_certs
from support.upstreams import UpstreamServer, unbound_server

MakeUnbound = Callable[..., UpstreamServer]

BASIC = """\
example.org {
    forward . 127.0.0.1:9005
}
"""
SPLIT_IN_ONE_BLOCK = """\
. {
    cache
    forward lab.example.local 10.20.0.1
    forward example.local 10.0.0.1
    forward . /etc/resolv.conf
}
"""
SPLIT_IN_BLOCKS = """\
lab.example.local {
    cache
    forward . 10.20.0.1
}
example.local {
    cache
    forward . 10.0.0.1
}
. {
    cache
    forward . /etc/resolv.conf
}
"""
SEVERAL = """\
. {
    forward . 10.0.0.10:53 10.0.0.11:1053 [2003::1]:53
}
"""
EXCEPT = """\
. {
    forward . 10.0.0.10:1234 {
        except example.org
    }
}
"""
EXCEPT_RESOLV = """\
. {
    forward . /etc/resolv.conf {
        except example.org
    }
}
"""
QUAD9 = """\
. {
    forward . tls://9.9.9.9 {
       tls_servername dns.quad9.net
       health_check 5s
    }
    cache 30
}
"""
QUAD9_DOH = """\
. {
    forward . https://9.9.9.9 {
       tls_servername dns.quad9.net
       health_check 5s
    }
    cache 30
}
"""
QUAD9_HEALTH_DOMAIN = """\
. {
    forward . tls://9.9.9.9 {
       tls_servername dns.quad9.net
       health_check 5s domain example.org
    }
    cache 30
}
"""
CLOUDFLARE = """\
. {
    forward . tls://1.1.1.1 tls://1.0.0.1 {
       tls_servername cloudflare-dns.com
       health_check 5s
    }
    cache 30
}
"""
TWO_PROVIDERS = """\
. {
    forward . 127.0.0.1:5301 127.0.0.1:5302
}

.:5301 {
    forward . tls://8.8.8.8 tls://8.8.4.4 {
        tls_servername dns.google
    }
}

.:5302 {
    forward . tls://1.1.1.1 tls://1.0.0.1 {
        tls_servername cloudflare-dns.com
    }
}
"""
NEXT = """\
. {
  forward . 1.2.3.4 {
    next NXDOMAIN
  }
  forward . 5.6.7.8 {
    next NXDOMAIN
  }
  forward . 9.0.1.2 {
  }
}
"""
FAILOVER = """\
. {
  forward . 1.2.3.4 5.6.7.8 9.0.1.2 {
     policy sequential
     failover SERVFAIL REFUSED
  }
}
"""
RUNNABLE = {
    "BASIC": (BASIC, 1),
    "SPLIT_IN_ONE_BLOCK": (SPLIT_IN_ONE_BLOCK, 1),
    "SPLIT_IN_BLOCKS": (SPLIT_IN_BLOCKS, 3),
    "SEVERAL": (SEVERAL, 1),
    "EXCEPT": (EXCEPT, 1),
    "EXCEPT_RESOLV": (EXCEPT_RESOLV, 1),
    "QUAD9": (QUAD9, 1),
    "QUAD9_HEALTH_DOMAIN": (QUAD9_HEALTH_DOMAIN, 1),
    "CLOUDFLARE": (CLOUDFLARE, 1),
    "TWO_PROVIDERS": (TWO_PROVIDERS, 3),
    "NEXT": (NEXT, 1),
    "FAILOVER": (FAILOVER, 1),
}
SANS = "DNS:dns.quad9.net,DNS:cloudflare-dns.com,DNS:dns.google,IP:127.0.0.1"


@pytest.mark.parametrize(("corefile", "blocks"), list(RUNNABLE.values()), ids=list(RUNNABLE))
def test_every_example_parses(corefile: str, blocks: int) -> None:
    assert plans(corefile) == blocks


def test_the_dns_over_https_example_is_a_file_line_error() -> None:
    with pytest.raises(CorefileError, match=r"^README.md:2 .*'https' is not supported"):
        plans(QUAD9_DOH)


def answer(r: object) -> list[str]:
    return [rd.to_text() for rs in r.answer for rd in rs]  # type: ignore[attr-defined]


def one(name: str, ip: str) -> dict[str, list[str]]:
    zone = name.split(".", 1)[1]
    return {zone: [f"{name} 30 IN A {ip}"]}


def test_basic_forwards_the_zone(make_unbound: MakeUnbound) -> None:
    up = make_unbound(one("www.example.org.", "198.18.0.1"))
    with serve(localize(BASIC).replace("127.0.0.1:9005", up.address)) as s:
        assert answer(s.query("www.example.org.")) == ["198.18.0.1"]
        assert up.query_count("www.example.org.") == 1
        assert s.query("www.example.net.").rcode() == dns.rcode.REFUSED  # not the block's zone


@pytest.mark.parametrize("corefile", [SPLIT_IN_ONE_BLOCK, SPLIT_IN_BLOCKS], ids=["one block", "blocks"])
def test_split_routes_each_domain_to_its_upstream(make_unbound: MakeUnbound, corefile: str) -> None:
    lab = make_unbound(one("db.lab.example.local.", "198.18.1.1"))
    local = make_unbound(
        {
            "example.local.": [
                "db.example.local. 30 IN A 198.18.2.1",
                "db.lab.example.local. 30 IN A 198.18.2.2",
            ]
        }
    )
    default = make_unbound({"example.com.": ["www.example.com. 30 IN A 198.18.3.1"],
                            "example.local.": ["db.example.local. 30 IN A 198.18.3.2"]})  # fmt: skip
    text = (
        localize(corefile)
        .replace("10.20.0.1", lab.address)
        .replace("10.0.0.1", local.address)
        .replace("/etc/resolv.conf", default.address)  # the machine's resolver is never asked
    )
    with serve(text) as s:
        assert answer(s.query("db.lab.example.local.")) == ["198.18.1.1"]  # the most specific wins
        assert answer(s.query("db.example.local.")) == ["198.18.2.1"]
        assert answer(s.query("www.example.com.")) == ["198.18.3.1"]
        counts = (
            lab.query_count("db.lab.example.local."),
            local.query_count("db.example.local."),
            default.query_count("www.example.com."),
        )
        assert counts == (1, 1, 1)
        assert local.query_count("db.lab.example.local.") == default.query_count("db.example.local.") == 0
        # cache: asked again, nobody is asked.
        s.query("db.lab.example.local.")
        assert lab.query_count("db.lab.example.local.") == 1


def test_several_upstreams_share_the_load(make_unbound: MakeUnbound) -> None:
    ups = [make_unbound(one("www.example.org.", "198.18.0.1"), ipv6=(i == 2)) for i in range(3)]
    text = (
        localize(SEVERAL)
        .replace("10.0.0.10:53", ups[0].address)
        .replace("10.0.0.11:1053", ups[1].address)
        .replace("[2003::1]:53", f"[::1]:{ups[2].port}")
    )
    with serve(text) as s:
        for _ in range(30):
            assert answer(s.query("www.example.org.")) == ["198.18.0.1"]
    # policy random (the default): each gets some; all on one would be 3 * (1/3)^30.
    counts = [u.query_count("www.example.org.") for u in ups]
    assert sum(counts) == 30 and min(counts) > 0, counts


@pytest.mark.parametrize(("corefile", "target"), [(EXCEPT, "10.0.0.10:1234"), (EXCEPT_RESOLV, "/etc/resolv.conf")],
                         ids=["address", "resolv.conf"])  # fmt: skip
def test_except_keeps_a_domain_from_the_upstream(
    make_unbound: MakeUnbound, corefile: str, target: str
) -> None:
    up = make_unbound({"example.org.": ["www.example.org. 30 IN A 198.18.0.1"],
                       "example.com.": ["www.example.com. 30 IN A 198.18.0.2"]})  # fmt: skip
    with serve(localize(corefile).replace(target, up.address)) as s:
        assert answer(s.query("www.example.com.")) == ["198.18.0.2"]
        # Excepted: forward passes it on, and nothing after it answers ("no next plugin").
        assert s.query("www.example.org.").rcode() == dns.rcode.SERVFAIL
        assert up.query_count("www.example.org.") == 0


@dataclass
class DoT:
    server: UpstreamServer
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def certs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Certs:
    c = make_certs(tmp_path, sans=SANS)
    monkeypatch.setenv("SSL_CERT_FILE", str(c.ca))  # the server's "system roots"
    return c


@pytest.fixture
def make_dot(certs: Certs) -> Iterator[Callable[[dict[str, list[str]]], DoT]]:
    with contextlib.ExitStack() as stack:

        def make(zones: dict[str, list[str]]) -> DoT:
            port = free_port("tcp")
            extra = (
                f"interface: 127.0.0.1@{port}\ntls-port: {port}\n"
                f'tls-service-key: "{certs.key}"\ntls-service-pem: "{certs.cert}"\n'
            )
            return DoT(stack.enter_context(unbound_server(zones, extra_conf=extra)), port)

        yield make


@pytest.mark.parametrize(
    "corefile", [QUAD9, QUAD9_HEALTH_DOMAIN], ids=["health_check", "health_check domain"]
)
def test_dns_over_tls_with_the_servers_name(make_dot: Callable[..., DoT], corefile: str) -> None:
    dot = make_dot(one("www.example.org.", "198.18.0.1"))
    with serve(localize(corefile).replace("9.9.9.9", dot.address)) as s:
        assert answer(s.query("www.example.org.")) == ["198.18.0.1"]
        s.query("www.example.org.")  # cache 30
        assert dot.server.query_count("www.example.org.") == 1


def test_dns_over_tls_fails_for_another_servers_name(make_dot: Callable[..., DoT]) -> None:
    dot = make_dot(one("www.example.org.", "198.18.0.1"))
    text = localize(QUAD9).replace("9.9.9.9", dot.address).replace("dns.quad9.net", "dns.example.net")
    with serve(text) as s:
        assert s.query("www.example.org.", timeout=8).rcode() == dns.rcode.SERVFAIL
        assert dot.server.query_count("www.example.org.") == 0


MANY = {"example.org.": [f"n{i}.example.org. 30 IN A 198.18.0.{i}" for i in range(20)]}


def test_two_tls_upstreams_share_the_load(make_dot: Callable[..., DoT]) -> None:
    dots = [make_dot(MANY) for _ in range(2)]
    text = localize(CLOUDFLARE).replace("1.1.1.1", dots[0].address).replace("1.0.0.1", dots[1].address)
    with serve(text) as s:
        for i in range(20):
            assert answer(s.query(f"n{i}.example.org.")) == [f"198.18.0.{i}"]
    counts = [d.server.query_count() for d in dots]
    assert sum(counts) >= 20 and min(counts) > 0, counts  # random: both, but for 2 * (1/2)^20


def test_two_providers_behind_one_listener(make_dot: Callable[..., DoT]) -> None:
    google = [make_dot({"example.org.": [f"n{i}.example.org. 30 IN A 198.18.8.8" for i in range(20)]})
              for _ in range(2)]  # fmt: skip
    cloudflare = [make_dot({"example.org.": [f"n{i}.example.org. 30 IN A 198.18.1.1" for i in range(20)]})
                  for _ in range(2)]  # fmt: skip
    p1, p2 = free_port(), free_port()
    text = (
        TWO_PROVIDERS.replace(". {", ".:{PORT} {\n    bind 127.0.0.1", 1)
        .replace(".:5301 {", f".:{p1} {{\n    bind 127.0.0.1")
        .replace(".:5302 {", f".:{p2} {{\n    bind 127.0.0.1")
        .replace("127.0.0.1:5301", f"127.0.0.1:{p1}")
        .replace("127.0.0.1:5302", f"127.0.0.1:{p2}")
        .replace("8.8.8.8", google[0].address)
        .replace("8.8.4.4", google[1].address)
        .replace("1.1.1.1", cloudflare[0].address)
        .replace("1.0.0.1", cloudflare[1].address)
    )
    with serve(text) as s:
        got = {answer(s.query(f"n{i}.example.org."))[0] for i in range(20)}
    # The front block picks one of the two local listeners at random; each asks its provider over TLS.
    assert got == {"198.18.8.8", "198.18.1.1"}


def test_next_nxdomain_goes_on_to_the_next_forward(make_unbound: MakeUnbound) -> None:
    first = make_unbound({}, unknown="nxdomain")
    second = make_unbound({}, unknown="nxdomain")
    third = make_unbound(one("www.example.org.", "198.18.0.3"))
    text = (
        localize(NEXT)
        .replace("1.2.3.4", first.address)
        .replace("5.6.7.8", second.address)
        .replace("9.0.1.2", third.address)
    )
    with serve(text) as s:
        assert answer(s.query("www.example.org.")) == ["198.18.0.3"]
        assert [u.query_count("www.example.org.") for u in (first, second, third)] == [1, 1, 1]


def test_sequential_failover_on_refused(make_unbound: MakeUnbound) -> None:
    refusing = [make_unbound({}) for _ in range(2)]  # REFUSED for every name
    good = make_unbound(one("www.example.org.", "198.18.0.3"))
    text = (
        localize(FAILOVER)
        .replace("1.2.3.4", refusing[0].address)
        .replace("5.6.7.8", refusing[1].address)
        .replace("9.0.1.2", good.address)
    )
    with serve(text) as s:
        assert answer(s.query("www.example.org.")) == ["198.18.0.3"]
        # sequential: always in the listed order, each REFUSED sends it on to the next.
        assert [u.query_count("www.example.org.") for u in (*refusing, good)] == [1, 1, 1]
