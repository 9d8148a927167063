"""Server machinery end to end: zone routing, listeners, bind, and what the server answers itself."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rrset
import pytest

from nodelocaldns.dns import wire
from nodelocaldns.server.chain import build_chain
from nodelocaldns.server.listener import Block, Router
from support.ports import free_port
from support.server import serve
from support.upstreams import UpstreamServer

MakeUnbound = Callable[..., UpstreamServer]


def block(zone: str, body: str, bind: str = "127.0.0.1") -> str:
    return f"{zone}:{{PORT}} {{\n    bind {bind}\n    {body}\n}}\n"


def raw(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = 2.0) -> bytes | None:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.send(data)
        try:
            return s.recv(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None


def upstream_names(up: UpstreamServer) -> list[str]:
    return [q.name.lower() for q in up.queries() if q.name != "probe.invalid."]


def test_longest_suffix_wins_across_blocks_on_one_port(make_unbound: MakeUnbound) -> None:
    root, cluster, svc = (make_unbound({}, unknown="nxdomain") for _ in range(3))
    text = (
        block(".", f"forward . {root.address}")
        + block("cluster.local", f"forward . {cluster.address}")
        + block("default.svc.cluster.local", f"forward . {svc.address}")
    )
    with serve(text) as s:
        for name in ("web.default.svc.cluster.local.", "WEB.Default.SVC.cluster.LOCAL.", "default.svc.cluster.local.",
                     "kube-dns.kube-system.svc.cluster.local.", "cluster.local.", "xcluster.local.", "example.test.",
                     "local."):  # fmt: skip
            assert s.query(name).rcode() == dns.rcode.NXDOMAIN
        assert upstream_names(svc) == ["web.default.svc.cluster.local.", "web.default.svc.cluster.local.",
                                       "default.svc.cluster.local."]  # fmt: skip
        assert upstream_names(cluster) == ["kube-dns.kube-system.svc.cluster.local.", "cluster.local."]
        assert upstream_names(root) == ["xcluster.local.", "example.test.", "local."]


def test_without_a_root_block_other_names_are_refused(make_unbound: MakeUnbound) -> None:
    up = make_unbound({}, unknown="nxdomain")
    with serve(block("cluster.local", f"forward . {up.address}")) as s:
        r = s.query("example.test.")
        assert r.rcode() == dns.rcode.REFUSED and r.id and not r.answer
        assert s.query("a.cluster.local.").rcode() == dns.rcode.NXDOMAIN
        assert upstream_names(up) == ["a.cluster.local."]


def test_a_zone_without_plugins_is_refused() -> None:
    with serve(block(".", "")) as s:
        assert s.query("example.test.").rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize("qd", [0, 2])
def test_question_count_other_than_one_is_formerr(qd: int) -> None:
    with serve(block(".", "")) as s:
        q = b"\x07example\x04test\x00\x00\x01\x00\x01"
        data = struct.pack("!HHHHHH", 0xABCD, 0x0100, qd, 0, 0, 0) + q * qd
        out = raw(s.port, data)
        assert out is not None
        r = dns.message.from_wire(out)
        assert r.id == 0xABCD and r.rcode() == dns.rcode.FORMERR and r.flags & dns.flags.QR


def test_chaos_class_is_forwarded_in_a_block_with_forward(make_unbound: MakeUnbound) -> None:
    """CoreDNS opens other classes than IN when a block has forward (dnsserver.EnableChaos)."""
    up = make_unbound({}, unknown="nxdomain")
    with serve(block(".", f"cache 30\n    forward . {up.address}")) as s:
        r = s.query("version.bind.", "TXT", rdclass="CH")
        assert r.rcode() == dns.rcode.NOERROR and r.answer  # the upstream's own answer
        assert "unbound" in r.answer[0][0].to_text().lower()
        assert "version.bind." in upstream_names(up)


@pytest.mark.parametrize("rdclass", ["CH", "HS", "ANY", "NONE"])
def test_non_in_class_is_refused_without_forward(rdclass: str) -> None:
    with serve(block(".", "cache 30")) as s:
        r = s.query("version.bind.", "TXT", rdclass=rdclass)
        assert r.rcode() == dns.rcode.REFUSED
        assert str(r.question[0].name) == "version.bind."
        assert not r.flags & dns.flags.RA  # the server's own replies never claim recursion


def test_edns_version_1_is_badvers_with_a_bare_opt(make_unbound: MakeUnbound) -> None:
    up = make_unbound({}, unknown="nxdomain")
    with serve(block(".", f"forward . {up.address}")) as s:
        for tcp in (False, True):
            r = s.query("example.test.", use_edns=1, payload=1400, tcp=tcp)
            assert r.rcode() == dns.rcode.BADVERS
            assert r.edns == 0 and r.payload == 0  # CoreDNS edns.Version: an OPT of size 0
            assert not r.flags & dns.flags.RA
        assert upstream_names(up) == []


@pytest.mark.parametrize("opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.UPDATE, 3, 15])
def test_other_opcodes_get_a_bare_notimp(opcode: int) -> None:
    with serve(block(".", "")) as s:
        q = dns.message.make_query("example.test.", "A", use_edns=0)
        q.set_opcode(opcode)
        out = raw(s.port, q.to_wire())
        assert out is not None
        # Read by hand: dnspython will not parse an UPDATE whose zone section is not SOA.
        qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", out)  # 12 bytes: no question, no OPT
        assert qid == q.id and flags & 0x8000 and (flags >> 11) & 0xF == opcode
        assert flags & 0xF == dns.rcode.NOTIMP and not flags & 0x0080  # no RA


def test_extra_additional_records_get_a_bare_formerr() -> None:
    with serve(block(".", "")) as s:
        q = dns.message.make_query("example.test.", "A", use_edns=0)
        for i in range(3):
            q.additional.append(dns.rrset.from_text(f"x{i}.example.test.", 60, "IN", "A", "192.0.2.1"))
        out = raw(s.port, q.to_wire())
        assert out is not None and len(out) == 12  # miekg/dns: no question, no OPT, none of ours
        r = dns.message.from_wire(out)
        assert r.rcode() == dns.rcode.FORMERR and r.id == q.id and not r.flags & dns.flags.RA


def test_notify_is_forwarded(make_unbound: MakeUnbound) -> None:
    up = make_unbound({}, unknown="nxdomain")
    with serve(block(".", f"cache 30\n    forward . {up.address}")) as s:
        q = dns.message.make_query("example.test.", "SOA")
        q.set_opcode(dns.opcode.NOTIFY)
        q.flags &= ~dns.flags.RD
        r = dns.query.udp(q, "127.0.0.1", port=s.port, timeout=3)
        assert r.opcode() == dns.opcode.NOTIFY
        assert r.rcode() != dns.rcode.NOTIMP  # the upstream answered it, not us
        assert "example.test." in upstream_names(up)


def test_bind_addresses_listen_only_there(make_unbound: MakeUnbound) -> None:
    up = make_unbound({"cluster.local.": ["a.cluster.local. 30 IN A 198.18.0.1"]})
    with serve(block(".", f"forward . {up.address}", bind="127.0.0.1 127.0.0.2")) as s:
        q = dns.message.make_query("a.cluster.local.", "A").to_wire()
        for host in ("127.0.0.1", "127.0.0.2"):
            out = raw(s.port, q, host)
            assert out is not None and dns.message.from_wire(out).answer
            assert dns.query.tcp(
                dns.message.make_query("a.cluster.local.", "A"), host, port=s.port, timeout=2
            ).answer
        assert raw(s.port, q, "127.0.0.3", timeout=0.3) is None


def test_bind_an_interface_name_listens_on_all_its_addresses(make_unbound: MakeUnbound) -> None:
    if not socket.has_ipv6 or not any(":" in a for a in _lo_addresses()):
        pytest.skip("no ::1 on lo")
    up = make_unbound({"cluster.local.": ["a.cluster.local. 30 IN A 198.18.0.1"]})
    port = free_port("both", ("127.0.0.1", "::1"))
    with serve(block(".", f"forward . {up.address}", bind="lo"), port=port) as s:
        try:
            q = dns.message.make_query("a.cluster.local.", "A").to_wire()
            for host in ("127.0.0.1", "::1"):
                out = raw(s.port, q, host)
                assert out is not None and dns.message.from_wire(out).answer
        finally:
            s.stop()
            if s.proc.stderr is not None:
                s.proc.stderr.close()


def _lo_addresses() -> list[str]:
    from nodelocaldns.plugins.bind.plugin import interface_addresses

    return interface_addresses("lo") or []


def test_keys_on_two_ports_share_one_block_and_one_cache(make_unbound: MakeUnbound) -> None:
    up = make_unbound({"cluster.local.": ["a.cluster.local. 30 IN A 198.18.0.1"]})
    port2 = free_port()
    text = f"cluster.local:{{PORT}} cluster.local:{port2} {{\n    bind 127.0.0.1\n    cache 30\n    forward . {up.address}\n}}\n"
    with serve(text) as s:
        for port in (s.port, port2, s.port, port2):
            out = raw(port, dns.message.make_query("a.cluster.local.", "A").to_wire())
            assert out is not None and dns.message.from_wire(out).answer
        assert up.query_count("a.cluster.local.") == 1


# -- Router, pure ---------------------------------------------------------------------------------


def _router(*zones: str) -> Router:
    return Router({z: Block((z,), build_chain([])) for z in zones})


@pytest.mark.parametrize(
    ("zones", "qname", "qtype", "want"),
    [
        ((".", "cluster.local."), "a.b.cluster.local.", 1, "cluster.local."),
        ((".", "cluster.local."), "cluster.local.", 1, "cluster.local."),
        ((".", "cluster.local."), "local.", 1, "."),
        (("cluster.local.",), "example.", 1, None),
        # DS belongs to the parent side of a cut: keep looking above the exact match.
        ((".", "cluster.local."), "cluster.local.", 43, "."),
        ((".", "cluster.local."), "a.cluster.local.", 43, "cluster.local."),
        (("cluster.local.",), "cluster.local.", 43, "cluster.local."),
        ((".",), ".", 43, "."),
        (("in-addr.arpa.", "10.in-addr.arpa."), "1.0.0.10.in-addr.arpa.", 12, "10.in-addr.arpa."),
    ],
)
def test_router_longest_suffix(zones: tuple[str, ...], qname: str, qtype: int, want: str | None) -> None:
    got = _router(*zones).route(wire.text_to_wire(qname), qtype)
    assert (got[0] if got else None) == want
