"""A small real UDP DNS server on loopback that keeps every query it received, byte for byte.

unbound and dnsmasq log names and types but not EDNS options or sizes; tests of plugins that
change those (rewrite edns0, bufsize) need the query as the upstream saw it. Every A question is
answered with one A record (``address``, TTL 30); any other type gets an empty NOERROR.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import dns.message
import dns.rdatatype
import dns.rrset


@dataclass
class Recorder:
    sock: socket.socket
    address: str = "198.18.9.9"
    received: list[dns.message.Message] = field(default_factory=list)
    stopped: bool = False

    @property
    def hostport(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def serve(self) -> None:
        while not self.stopped:
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                q = dns.message.from_wire(data)
            except Exception:  # not a query we can read: ignore, as a real server would drop it
                continue
            self.received.append(q)
            r = dns.message.make_response(q)
            if q.question and q.question[0].rdtype == dns.rdatatype.A:
                r.answer.append(dns.rrset.from_text(q.question[0].name, 30, "IN", "A", self.address))
            with contextlib.suppress(OSError):
                self.sock.sendto(r.to_wire(), addr)


@contextlib.contextmanager
def recording_upstream() -> Iterator[Recorder]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)  # the loop looks at ``stopped`` this often
    rec = Recorder(s)
    t = threading.Thread(target=rec.serve, daemon=True)
    t.start()
    try:
        yield rec
    finally:
        rec.stopped = True
        t.join(2)
        s.close()
