"""forward to ``tls://`` upstreams: a real unbound DNS-over-TLS listener with a certificate the
test makes, real clients, and Go's wording when verification fails."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.rcode
import pytest

from support.forward_e2e import ZONES, block, metric, serve
from support.ports import free_port
from support.tlscerts import Certs, make_certs
from support.upstreams import UpstreamServer, unbound_server

WEB = "web.default.svc.cluster.local."


@dataclass
class TLSUpstream:
    server: UpstreamServer
    port: int  # the DNS-over-TLS port (the plain one is server.port)
    certs: Certs

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def dot(tmp_path: Path) -> Iterator[TLSUpstream]:
    certs = make_certs(tmp_path)
    port = free_port("tcp")
    extra = (
        f"interface: 127.0.0.1@{port}\ntls-port: {port}\n"
        f'tls-service-key: "{certs.key}"\ntls-service-pem: "{certs.cert}"\n'
    )
    with unbound_server(ZONES, extra_conf=extra) as up:
        yield TLSUpstream(up, port, certs)


def test_tls_upstream_answers_and_pools_its_connections(dot: TLSUpstream) -> None:
    mport = free_port("tcp")
    opts = f"{{\n        tls {dot.certs.ca}\n        tls_servername dns.test\n    }}"
    with serve(block(".", f". tls://{dot.address} {opts}", extra=f"prometheus 127.0.0.1:{mport}")) as s:
        r = s.query(WEB)
        assert r.rcode() == dns.rcode.NOERROR and r.answer[0][0].address == "198.18.1.1"
        assert s.query("api.default.svc.cluster.local.", tcp=True).answer
        labels = {"to": dot.address, "proto": "tcp-tls"}
        assert metric(mport, "coredns_proxy_conn_cache_misses_total", **labels) == 1
        assert metric(mport, "coredns_proxy_conn_cache_hits_total", **labels) == 1  # the second reused it
    assert dot.server.query_count(WEB) == 1


@pytest.mark.parametrize(
    "target",
    [
        "tls://127.0.0.1%dns.test:{port}",  # per-endpoint server name
        "tls://127.0.0.1:{port}",  # no name: the IP is checked against the IP SANs, as Go does
    ],
)
def test_tls_server_name_forms(dot: TLSUpstream, target: str) -> None:
    # CERT KEY CA: a client certificate is presented (unbound does not ask for one).
    opts = f"{{\n        tls {dot.certs.cert} {dot.certs.key} {dot.certs.ca}\n    }}"
    with serve(block(".", f". {target.format(port=dot.port)} {opts}")) as s:
        assert s.query(WEB).answer


@pytest.mark.parametrize(
    ("opts", "why"),
    [
        # No CA given: the system roots do not know the test CA.
        ("tls_servername dns.test", "x509: certificate signed by unknown authority"),
        (
            "tls {ca}\n        tls_servername wrong.test",
            "x509: certificate is valid for dns.test, not wrong.test",
        ),
    ],
)
def test_tls_verification_failures_give_servfail_with_go_errors(
    dot: TLSUpstream, opts: str, why: str
) -> None:
    text = block(
        ".", f". tls://{dot.address} {{\n        {opts.format(ca=dot.certs.ca)}\n    }}", extra="errors"
    )
    with serve(text) as s:
        assert s.query(WEB).rcode() == dns.rcode.SERVFAIL
        log = s.stderr()
    line = f"[ERROR] plugin/errors: 2 {WEB} A: tls: failed to verify certificate: {why}"
    assert re.search(rf"^{re.escape(line)}$", log, re.M), log
    assert dot.server.query_count(WEB) == 0


def test_tls_ip_without_ip_san(tmp_path: Path) -> None:
    certs = make_certs(tmp_path, sans="DNS:dns.test")
    port = free_port("tcp")
    extra = f'interface: 127.0.0.1@{port}\ntls-port: {port}\ntls-service-key: "{certs.key}"\ntls-service-pem: "{certs.cert}"\n'
    with unbound_server(ZONES, extra_conf=extra):
        text = block(".", f". tls://127.0.0.1:{port} {{\n        tls {certs.ca}\n    }}", extra="errors")
        with serve(text) as s:
            assert s.query(WEB).rcode() == dns.rcode.SERVFAIL
            log = s.stderr()
    why = "x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"
    assert f"A: tls: failed to verify certificate: {why}" in log, log
