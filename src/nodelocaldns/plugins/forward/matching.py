"""What the UDP and TCP exchanges share: fresh IDs, reply matching, and Go's error texts."""

from __future__ import annotations

import errno
import logging
import os
import struct

from nodelocaldns.dns import wire
from nodelocaldns.dns.hexdump import hexdump
from nodelocaldns.errors import ResourceExhausted, UpstreamError, WireError

_LEN = struct.Struct("!H")
log = logging.getLogger("nodelocaldns")
# What the kernel says when this process, not the upstream, is out of something.
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def go_addr(sockaddr: object) -> str:
    """A socket address as Go's net.Addr String() prints it: ``1.2.3.4:53``, ``[::1]:53``."""
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
        return "?"
    host, port = str(sockaddr[0]), sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def go_syscall_error(call: str, e: OSError) -> str:
    """Go's os.SyscallError text, ``read: connection refused``: Go's errno strings are lower case."""
    text = e.strerror or str(e)
    return f"{call}: {text[:1].lower()}{text[1:]}"


def op_error(op: str, net: str, local: str | None, remote: str, err: str) -> str:
    """Go's net.OpError.Error(): ``read udp LOCAL->REMOTE: err``, or ``dial tcp REMOTE: err`` with no local.

    Operators grep upstream failures for ``->``, so the local half is kept whenever the socket has one.
    """
    where = f"{local}->{remote}" if local else remote
    return f"{op} {net} {where}: {err}"


def upstream_error(e: OSError, op: str, net: str, local: str | None, remote: str, call: str) -> UpstreamError:
    """The UpstreamError for an OSError of ``call``; ResourceExhausted when the shortage is ours."""
    text = op_error(op, net, local, remote, go_syscall_error(call, e))
    if e.errno in EXHAUSTED:
        return ResourceExhausted(text, remote)
    return UpstreamError(text, remote)


def native_error(err: int, remote: str) -> UpstreamError:
    """A native worker's failed exchange (core.request.Exchanged) as the UDP pool would raise it;
    the worker's socket address is not known here, so the text has no local half."""
    if err == errno.ETIMEDOUT:
        return UpstreamError(op_error("read", "udp", None, remote, "i/o timeout"), remote)
    return upstream_error(OSError(err, os.strerror(err)), "read", "udp", None, remote, "read")


_IDS_PER_READ = 256
_ids: list[int] = []


def new_id() -> int:
    """A random query ID from the OS's CSPRNG, read 256 at a time (one getrandom per 256 queries)."""
    if not _ids:
        raw = os.urandom(2 * _IDS_PER_READ)
        _ids.extend(int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2))
    return _ids.pop()


def with_id(query: bytes, qid: int) -> bytes:
    return _LEN.pack(qid) + query[2:]


def reply_matches(reply: bytes, qid: int, question: bytes) -> bool:
    """QR set, same ID, and the same question (name compared case-insensitively)."""
    if len(reply) < wire.HEADER_LEN + len(question) or not reply[2] & 0x80:
        return False
    if _LEN.unpack_from(reply)[0] != qid or reply[4:6] != b"\x00\x01":
        return False
    got = reply[wire.HEADER_LEN : wire.HEADER_LEN + len(question)]
    return got == question or got.lower() == question.lower()


def wrong_reply(data: bytes, qid: int, question: bytes) -> None:
    """With ``debug``: CoreDNS's hexdump of a reply with our ID but another question (dropped)."""
    if len(data) < 2 or _LEN.unpack_from(data)[0] != qid or not log.isEnabledFor(logging.DEBUG):
        return
    try:
        qname, off = wire.read_name(question, 0)
        qtype = _LEN.unpack_from(question, off)[0]
        name = wire.name_to_text(qname)
    except (WireError, struct.error):
        return
    log.debug("[DEBUG] Wrong reply for id: %d, %s %d\n%s", qid, name, qtype, hexdump(data))
