"""Write the seed corpus for fuzz_answer.c (fuzz/corpus/answer/): real queries with cached bodies.

Run from the repo root with the venv: `.venv/bin/python fuzz/make_corpus.py`. The layout of one
input is described at the top of fuzz_answer.c. `fuzz/make_corpus.py nx` writes fuzz/corpus/nx/
instead (fuzz_nx.c: a forward table, a query, a reply).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rrset

OUT = Path(__file__).parent / "corpus" / "answer"


def body_for(name: str, n: int) -> tuple[bytes, list[int]]:
    r = dns.message.make_response(dns.message.make_query(name, "A"))
    for i in range(n):
        r.answer.append(dns.rrset.from_text(name, 30, "IN", "A", f"192.0.2.{i + 1}"))
    w = r.to_wire()
    qend = w.index(0, 12) + 5
    body = w[qend:]
    offs = []
    off = 0
    while off < len(body):
        off += 2  # compressed owner
        offs.append(off + 4)
        off += 10 + struct.unpack_from("!H", body, off + 8)[0]
    return body, offs


def seed(
    ctl: int, query: bytes, body: bytes, offs: list[int], orig: int = 30, now: int = 12800 + 64 * 3
) -> bytes:
    body = body[: len(body) & ~1][:510]
    head = bytes((ctl,)) + struct.pack("!HH", orig, now) + bytes((len(body) // 2, len(offs)))
    return head + body + bytes(o % 256 for o in offs) + query


def lb_seeds() -> list[bytes]:
    """loadbalance entries (ctl bit 4): an even body length (the layout halves it), and orig's
    low bits saying how many of the records are authority (bits 0-1) and additional (bits 2-3)."""
    out = []
    shapes: list[tuple[str, str, list[tuple[str, str, str]], list[tuple[str, str, str]], int]] = [
        ("m.example.org.", "A", [("m.example.org.", "A", f"192.0.2.{i}") for i in range(1, 5)], [], 64),
        ("m.example.org.", "A", [("m.example.org.", "A", f"192.0.2.{i}") for i in range(1, 3)], [], 64),
        ("c.example.org.", "AAAA", [("c.example.org.", "CNAME", "m.example.org."),
                                    *[("m.example.org.", "AAAA", f"2001:db8::{i}") for i in range(1, 4)]], [], 64),
        ("m.example.org.", "A", [("m.example.org.", "A", "192.0.2.1"), ("m.example.org.", "A", "192.0.2.2")],
         [("nss.example.org.", "A", "192.0.2.9")], 64 + 4),
        ("example.org.", "MX", [("example.org.", "MX", "10 a.example.org."), ("example.org.", "MX", "20 b.example.org.")],
         [("a.example.org.", "A", "192.0.2.7"), ("a.example.org.", "A", "192.0.2.8")], 64 + 8),
    ]  # fmt: skip
    for name, qtype, answer, additional, orig in shapes:
        q = dns.message.make_query(name, qtype)
        r = dns.message.make_response(q)
        for sec, recs in ((r.answer, answer), (r.additional, additional)):
            for owner, t, text in recs:
                sec.append(dns.rrset.from_text(owner, 30, "IN", t, text))
        w = r.to_wire()
        body = w[w.index(0, 12) + 5 :]
        assert len(body) % 2 == 0, name  # the layout halves the body length
        for ctl in (0x10, 0x12, 0x30 | 0x08):
            for query in (q.to_wire(), dns.message.make_query(name, qtype, use_edns=0).to_wire()):
                out.append(seed(ctl, query, body, [], orig))
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, kw in [
        ("example.org.", {}),
        ("Example.ORG.", {}),
        ("a.b.c.example.org.", {"use_edns": 0, "payload": 1232}),
        ("example.org.", {"use_edns": 0, "want_dnssec": True}),
        ("x.", {"use_edns": 0, "payload": 100}),
    ]:
        q = dns.message.make_query(name, "A", **kw)
        cases.append(q.to_wire())
    q = dns.message.make_query("cd.example.org.", "AAAA")
    q.flags |= dns.flags.CD | dns.flags.AD
    cases.append(q.to_wire())
    for i, query in enumerate(cases):
        body, offs = body_for("example.org.", 1 + i % 3)
        for ctl in (0x00, 0x13 + 4 * i):
            data = seed(ctl & 0xFF, query, body, offs)
            (OUT / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)
    for data in lb_seeds():
        (OUT / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)
    for data in stale_seeds(cases):
        (OUT / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def stale_seeds(cases: list[bytes]) -> list[bytes]:
    """serve_stale (orig bit 1 clear): now = 1003 s, stored at 1000. The time's low byte sets the
    window ((byte + 1) / 4 s), its high byte the response TTL (x 7): orig 1 and 4 are expired,
    inside a 48 s window (0xC0) or past a 0.25 s one (0x00); orig 5 is fresh now, stale 30 s on."""
    out = []
    for i, query in enumerate(cases):
        body, offs = body_for("example.org.", 1 + i % 3)
        for orig, now in ((1, 12800 + 0xC0), (4, 12800 + 0xC0), (4, 12800 + 0x100 + 0x00), (5, 12800 + 0xC0)):
            out.append(seed(0x00 if i % 2 else 0x08, query, body, offs, orig, now))
    return out


NX_OUT = Path(__file__).parent / "corpus" / "nx"


def nx_seed(zones: list[tuple[str, int]], query: bytes, reply: bytes) -> bytes:
    out = bytes((len(zones),))
    for name, nups in zones:
        w = dns.name.from_text(name).to_wire()
        out += bytes((len(w),)) + w + bytes((nups,))
    return out + struct.pack("!H", len(query)) + query + reply


def nx_main() -> None:
    """Router tables with a DS cut, queries of every plain shape and the replies to them."""
    NX_OUT.mkdir(parents=True, exist_ok=True)
    tables = [
        [(".", 1), ("example.org.", 2), ("deep.example.org.", 0)],
        [("cluster.local.", 1), ("in-addr.arpa.", 1)],
        [("Example.ORG.", 3)],
        [],
    ]
    queries = []
    for i, (name, rdtype, kw) in enumerate([
        ("www.example.org.", "A", {}),
        ("example.org.", "DS", {}),
        ("deep.example.org.", "DS", {"use_edns": 0}),
        ("WWW.Deep.Example.Org.", "AAAA", {"use_edns": 0, "want_dnssec": True}),
        (".", "DS", {}),
        ("kube-dns.kube-system.svc.cluster.local.", "A", {"use_edns": 0, "payload": 1232}),
        ("notexample.org.", "A", {}),
    ]):  # fmt: skip
        q = dns.message.make_query(name, rdtype, **kw)
        q.id = 0x1000 + i
        queries.append(q)
    for i, q in enumerate(queries):
        r = dns.message.make_response(q)
        r.id = 0xBEEF
        if q.question[0].rdtype == 1:
            r.answer.append(dns.rrset.from_text(q.question[0].name, 30, "IN", "A", "192.0.2.1"))
        for data in (nx_seed(tables[i % len(tables)], q.to_wire(), r.to_wire()),
                     nx_seed(tables[(i + 1) % len(tables)], q.to_wire(), r.to_wire().lower())):  # fmt: skip
            (NX_OUT / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["nx"]:
        nx_main()
    else:
        main()
