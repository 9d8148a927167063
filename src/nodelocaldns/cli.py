"""Command line: ``nodelocaldns serve|check|node-cache|render|doctor|top`` and the ``node-cache`` script."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from nodelocaldns import __version__
from nodelocaldns.errors import ConfigError

if TYPE_CHECKING:
    from nodelocaldns.server.check import CheckReport

DEFAULT_COREFILE = """\
# nodelocaldns embedded default: a caching forwarder on loopback.
.:5353 {
    bind 127.0.0.1
    errors
    log
    cache 30
    forward . /etc/resolv.conf
    health 127.0.0.1:8080
    prometheus 127.0.0.1:9253
}
"""

log = logging.getLogger("nodelocaldns")


def setup_logging(quiet: bool = False) -> None:
    """CoreDNS-style lines on stderr: no timestamp, the level is part of the message."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)


def run_async(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run on uvloop when it is installed (it roughly halves per-packet overhead), else asyncio."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


async def serve_corefile(text: str, filename: str, announce: bool, drain: float = 5.0) -> int:
    from nodelocaldns.server.instance import Instance

    inst = Instance(text, filename)
    try:
        await inst.start()
    except ConfigError as e:
        log.error("[ERROR] %s", e)
        return 1
    except OSError as e:
        log.error("[ERROR] cannot listen: %s", e)
        await inst.stop(0)
        return 1
    for lst in inst.listeners.values():
        zones = sorted(lst.router.zones)
        log.info("%s", "\n".join(f"{z}:{lst.port} on {lst.host or '*'}" for z in zones))
    log.info("nodelocaldns-%s", __version__)
    if announce:
        lst = next(iter(inst.listeners.values()))
        log.info(
            "Try it: dig @%s -p %d example.org   (metrics: curl http://127.0.0.1:9253/metrics)",
            lst.host or "127.0.0.1",
            lst.port,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("[WARNING] second %s: exiting now", sig.name)
            os._exit(1)
        log.info("[INFO] %s: shutting down", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(inst.reload()))
    fatal = asyncio.ensure_future(inst.fatal_event.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([fatal, stopped], return_when=asyncio.FIRST_COMPLETED)
    fatal.cancel()
    stopped.cancel()
    # A fatal error (a forwarding loop) exits at once like log.Fatalf: draining would wait on the loop.
    await inst.stop(0 if inst.fatal else drain)
    return 1 if inst.fatal else 0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.corefile:
        try:
            with open(args.corefile, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            print(f"nodelocaldns: cannot read {args.corefile}: {e.strerror}", file=sys.stderr)
            return 1
        filename = args.corefile
    else:
        text, filename = DEFAULT_COREFILE, "<embedded default Corefile>"
    setup_logging(args.quiet)
    return run_async(lambda: serve_corefile(text, filename, announce=not args.corefile))


def cmd_check(args: argparse.Namespace) -> int:
    from nodelocaldns.server.check import check_text

    try:
        with open(args.corefile, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else f"not UTF-8 text ({e})"
        print(f"nodelocaldns: cannot read {args.corefile}: {reason}", file=sys.stderr)
        return 1
    report = check_text(text, args.corefile)
    return print_check(report)


def print_check(report: CheckReport) -> int:
    """Errors on stderr, one per line with file:line; the verdict last. Exit code 0 or 1."""
    for line in report.errors:
        print(f"[ERROR] {line}", file=sys.stderr)
    print(report.summary(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "node-cache":
        return node_cache_main(argv[1:])
    if argv and argv[0] in ("render", "doctor", "top"):
        return _tool(argv[0], argv[1:])
    p = argparse.ArgumentParser(prog="nodelocaldns", description="Kubernetes NodeLocal DNSCache in Python.")
    p.add_argument("--version", action="version", version=f"nodelocaldns {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve DNS from a Corefile (default: an embedded loopback config)")
    s.add_argument("--corefile", "-conf", help="Corefile to serve")
    s.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    s.set_defaults(func=cmd_serve)
    c = sub.add_parser("check", help="check a Corefile offline (parse and plan as serve would, bind nothing)")
    c.add_argument("--corefile", "-conf", required=True, help="Corefile to check")
    c.set_defaults(func=cmd_check)
    sub.add_parser("node-cache", help="run as a drop-in k8s-dns-node-cache agent (Go-style flags)")
    for name, helptext in (("render", "print Kubernetes manifests"), ("doctor", "check this node"),
                           ("top", "live view of an agent's metrics")):  # fmt: skip
        sub.add_parser(name, help=helptext, add_help=False)
    args = p.parse_args(argv)
    result: int = args.func(args)
    return result


def _tool(name: str, argv: list[str]) -> int:
    import importlib

    mod = importlib.import_module(f"nodelocaldns.tools.{name}")
    result: int = mod.main(argv)
    return result


def node_cache_main(argv: list[str] | None = None) -> int:
    """The ``node-cache`` console script: k8s-dns-node-cache's flags, same behaviour."""
    import importlib

    agent = importlib.import_module("nodelocaldns.node.agent")
    result: int = agent.main(list(sys.argv[1:] if argv is None else argv))
    return result
