"""``log``: one line per query in CoreDNS's common (or combined, or custom) format.

``[INFO] 10.244.0.38:51834 - 38845 "A IN kubernetes.default.svc.cluster.local. udp 77 false 1232" NOERROR qr,aa,rd 106 0.001695631s``
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from decimal import Decimal

from nodelocaldns.core.plugin import Next
from nodelocaldns.core.qtypes import qtype_text
from nodelocaldns.core.request import Reply, Request
from nodelocaldns.core.zones import in_zones
from nodelocaldns.corefile.model import Directive
from nodelocaldns.dns import wire
from nodelocaldns.dns.message import unpacked_len
from nodelocaldns.errors import WireError

log = logging.getLogger("nodelocaldns")

COMMON = '{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode} {>rflags} {rsize} {duration}'
COMBINED = COMMON + ' "{>opcode}"'
CLASSES = ("success", "denial", "error", "all")
_FLAG_NAMES = (("qr", 0x8000), ("aa", 0x0400), ("tc", 0x0200), ("rd", 0x0100), ("ra", 0x0080), ("z", 0x0040),
               ("ad", 0x0020), ("cd", 0x0010))  # fmt: skip
_PLACEHOLDER = re.compile(r"\{[>a-z]+\}")


@dataclass(frozen=True, slots=True)
class LogRule:
    zones: tuple[str, ...]
    fmt: str
    classes: frozenset[str]


def parse(d: Directive) -> LogRule:
    from nodelocaldns.corefile.keys import normalize_zones

    args = list(d.args)
    fmt = COMMON
    if args and "{" in args[-1]:
        last = args.pop()
        fmt = {"{common}": COMMON, "{combined}": COMBINED}.get(last, last)
    zones = tuple(normalize_zones(args)) if args else (".",)
    classes: set[str] = set()
    for sub in d.block:
        if sub.name != "class":
            raise sub.error(f"unknown property {sub.name!r} in log")
        if not sub.args:
            raise sub.error("class takes success|denial|error|all")
        for c in sub.args:
            if c not in CLASSES:
                raise sub.error(f"invalid class {c!r}")
            classes.add(c)
    return LogRule(zones, fmt, frozenset(classes or {"all"}))


def classify(reply: bytes | None, rcode: int) -> str:
    """CoreDNS response.Classify(Typify()) reduced to what the rcode and sections show."""
    if rcode in (wire.NOERROR,):
        if (
            reply is not None
            and len(reply) >= 12
            and reply[6:8] == b"\x00\x00"
            and reply[8:10] != b"\x00\x00"
        ):
            return "denial"  # NODATA (authority present, empty answer)
        return "success"
    if rcode == wire.NXDOMAIN:
        return "denial"
    return "error"


def go_seconds(s: float) -> str:
    """Go's strconv.FormatFloat(s, 'f', -1, 64) + "s": shortest digits, never an exponent."""
    r = repr(s)
    if "e" in r or "E" in r:
        r = format(Decimal(r), "f")
    if r.endswith(".0"):
        r = r[:-2]
    return r + "s"


def duration_seconds(ns: int) -> float:
    """Go's time.Duration.Seconds(): whole seconds and the nanosecond rest converted apart.

    CoreDNS's ``{duration}`` is ``time.Since(start).Seconds()``, an integer nanosecond count turned
    into a float, so it prints ``0.000694174s``; subtracting two float clocks would print the
    clocks' rounding noise (``0.0006941740002730512s``) instead.
    """
    whole, rest = divmod(abs(ns), 1_000_000_000)
    value = float(whole) + float(rest) / 1e9
    return -value if ns < 0 else value


def go_duration(ns: int) -> str:
    """The ``{duration}`` text for an elapsed time in integer nanoseconds."""
    return go_seconds(duration_seconds(ns))


def rflags(flags: int) -> str:
    return ",".join(n for n, bit in _FLAG_NAMES if flags & bit)


def _request_len(req: Request) -> int:
    """CoreDNS's ``{size}``: the unpacked request's length; it differs from the bytes received only
    when the request's records use compression pointers."""
    data = req.data
    if data[6:10] == b"\x00\x00\x00\x00" and (
        data[10:12] == b"\x00\x00"
        or (
            data[10:12] == b"\x00\x01"
            and data[req.q.question_end : req.q.question_end + 3] == b"\x00\x00\x29"
        )
    ):
        return len(data)  # nothing after the question but an OPT: no name to expand
    try:
        return unpacked_len(data)
    except WireError:
        return len(data)


class LogHandler:
    name = "log"

    def __init__(self, rules: list[LogRule]) -> None:
        self.rules = [(tuple(wire.text_to_wire(z) for z in r.zones), r) for r in rules]

    async def serve(self, req: Request, next_: Next) -> Reply:
        start = time.perf_counter_ns()
        reply = await next_(req)
        for zones, rule in self.rules:
            if not in_zones(req.q.qname, zones):
                continue
            cls = classify(reply.wire, reply.rcode)
            if "all" in rule.classes or cls in rule.classes:
                log.info("[INFO] %s", self.format(rule.fmt, req, reply, time.perf_counter_ns() - start))
            break
        return reply

    @staticmethod
    def format(fmt: str, req: Request, reply: Reply, elapsed_ns: int) -> str:
        q = req.q
        if reply.wire:
            flags, rsize = int.from_bytes(reply.wire[2:4], "big"), len(reply.wire)
        else:
            # Nothing written (the server answers): CoreDNS logs msg.SetRcode(query, rcode), i.e.
            # QR with the query's RD/CD, header and question only.
            flags = 0x8000 | (q.flags & (wire.FLAG_RD | wire.FLAG_CD)) | (reply.rcode & 0xF)
            rsize = q.question_end
        host = req.remote[0]
        values = {
            "{remote}": f"[{host}]" if ":" in host else host,
            "{port}": str(req.remote[1]),
            "{>id}": str(q.id),
            "{type}": qtype_text(q.qtype),
            "{class}": "IN" if q.qclass == 1 else ("CH" if q.qclass == 3 else f"CLASS{q.qclass}"),
            "{name}": req.qname,
            "{proto}": req.proto,
            "{size}": str(_request_len(req)),
            "{>do}": "true" if q.do else "false",
            "{>bufsize}": str(65535 if req.proto == "tcp" else (max(q.udp_size, 512) if q.edns else 512)),
            "{rcode}": wire.RCODE_NAMES.get(reply.rcode, str(reply.rcode)),
            "{>rflags}": rflags(flags),
            "{rsize}": str(rsize),
            "{duration}": go_duration(elapsed_ns),
            "{>opcode}": "QUERY" if q.opcode == 0 else str(q.opcode),
            "{>rcode}": wire.RCODE_NAMES.get(reply.rcode, str(reply.rcode)),
        }
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(0), "-"), fmt)
