"""Command line: ``nodelocaldns serve|check|node-cache|render|doctor|top`` and the ``node-cache`` script."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from nodelocaldns import __version__
from nodelocaldns.errors import ConfigError
from nodelocaldns.server.process import PLAIN, Signals, banner, run_async, setup_logging
from nodelocaldns.server.server import Server

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


async def serve_corefile(text: str, filename: str, announce: bool) -> int:
    server = Server(text, filename)
    signals = Signals(lambda: _spawn(server.reload()))
    signals.install()
    try:
        try:
            await server.start()
        except ConfigError as e:
            log.error("[ERROR] %s", e)
            return 1
        except OSError as e:
            log.error("[ERROR] cannot listen: %s", e)
            return 1
        banner(server, __version__)
        if announce:
            lst = next(iter(server.listeners.values()))
            log.info(
                "Try it: dig @%s -p %d example.org   (metrics: curl http://127.0.0.1:9253/metrics)",
                lst.host or "127.0.0.1",
                lst.port,
                extra=PLAIN,
            )
        fatal = await signals.wait(server)
        # A fatal error (a forwarding loop) exits at once like log.Fatalf: draining would wait on the loop.
        await server.shutdown(lameduck=not fatal, drain=0.0 if fatal else None)
        return 1 if fatal else 0
    finally:
        signals.remove()


_tasks: set[asyncio.Future[Any]] = set()


def _spawn(coro: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


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
    from nodelocaldns.server.check import check_text, print_check

    try:
        with open(args.corefile, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else f"not UTF-8 text ({e})"
        print(f"nodelocaldns: cannot read {args.corefile}: {reason}", file=sys.stderr)
        return 1
    return print_check(check_text(text, args.corefile))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "node-cache":
        return node_cache_main(argv[1:])
    if argv and argv[0] in ("render", "doctor", "top"):
        return _tool(argv[0], argv[1:])
    if argv and argv[0] == "sysctl":
        from nodelocaldns.node.sysctls import main as sysctl_main

        return sysctl_main(argv[1:])
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
                           ("top", "live view of an agent's metrics"),
                           ("sysctl", "set the node sysctls the agent needs (the DaemonSet's init container)")):  # fmt: skip
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
    from nodelocaldns.node.agent import main as agent_main

    return agent_main(list(sys.argv[1:] if argv is None else argv))
