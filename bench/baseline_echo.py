"""The floor for a Python DNS server: uvloop, one UDP socket, one fixed answer.

Each reply is the query's ID and question with QR/RD/RA set and one A record (a compression
pointer back to the question name) appended: the least work a valid answer can take. Nothing
is parsed, looked up or counted. It assumes a plain query (one question, no EDNS), which is
what the bench sends.

Run: ``python -m bench.baseline_echo --port 5300`` (binds 127.0.0.1 only).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct

# NOERROR, QR|RD|RA, QDCOUNT=1, ANCOUNT=1, NSCOUNT=0, ARCOUNT=0
_HEADER_TAIL = struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
# name -> pointer to offset 12, type A, class IN, TTL 30, RDLENGTH 4, 198.18.0.99
_ANSWER = struct.pack("!HHHIH4B", 0xC00C, 1, 1, 30, 4, 198, 18, 0, 99)


class EchoProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > 12:
            self.transport.sendto(data[:2] + _HEADER_TAIL + data[12:] + _ANSWER, addr)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(EchoProtocol, local_addr=("127.0.0.1", port))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # still a useful floor, just a higher one
        asyncio.run(serve(args.port))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.port))


if __name__ == "__main__":
    main()
